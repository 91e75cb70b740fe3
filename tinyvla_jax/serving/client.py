"""A client of the policy server (or of any openpi-protocol server): `RemotePolicy(url).infer(obs)`.

The same protocol as `openpi_client.WebsocketClientPolicy` (which also works against our server); ours
needs no extra package beyond `websockets`, waits for a server that is still starting, and turns the
server's error replies into one-line errors.
"""

from __future__ import annotations

import time
from typing import Any

from tinyvla_jax.errors import UserError
from tinyvla_jax.serving import wire


class RemotePolicyError(UserError):
  """The server refused a request or could not be reached; the message is the server's or the socket's."""


class RemotePolicy:

  def __init__(self, url: str, *, api_key: str | None = None, connect_timeout_s: float = 60.0):
    from tinyvla_jax.extras import require
    require("websockets", extra="serve", purpose="the policy client")
    import websockets.exceptions
    import websockets.sync.client
    self._closed_error = websockets.exceptions.ConnectionClosed
    if not url.startswith(("ws://", "wss://")):
      raise UserError(f"--server={url!r} must be a websocket URL such as ws://127.0.0.1:8000")
    self.url = url
    headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
    deadline = time.monotonic() + connect_timeout_s
    while True:
      try:
        connection = websockets.sync.client.connect(url, compression=None, max_size=None,
                                                    additional_headers=headers, open_timeout=min(10.0, connect_timeout_s))
        self._ws = connection.__enter__()  # held open until close(): the context-manager form, entered by hand
        break
      except ConnectionRefusedError:
        if time.monotonic() > deadline:
          raise RemotePolicyError(f"no policy server at {url} after {connect_timeout_s:.0f} s (start one with "
                                  "python -m tinyvla_jax.serve --workdir W)") from None
        time.sleep(0.5)
      except websockets.exceptions.InvalidStatus as error:
        raise RemotePolicyError(f"the server at {url} refused the connection: {error}") from None
    self.metadata = wire.unpackb(self._ws.recv())

  def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
    try:
      self._ws.send(wire.packb(obs))
      reply = self._ws.recv()
    except self._closed_error as error:
      raise RemotePolicyError(f"the server at {self.url} closed the connection: {error}") from None
    if isinstance(reply, str):  # the protocol's error reply: text, then the server closes
      raise RemotePolicyError(f"the server refused the request: {reply.strip().splitlines()[-1]}")
    return wire.unpackb(reply)

  def close(self) -> None:
    self._ws.close()

  def __enter__(self) -> "RemotePolicy":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
