"""A websocket policy server that speaks openpi's protocol, so a robot stack written for openpi (its
`openpi-client` package: `WebsocketClientPolicy(host, port).infer(obs)["actions"]`) drives our policy unchanged.

The protocol (openpi's `serving/websocket_policy_server.py`, msgpack-numpy frames: serving/wire.py):
  - on connect the server sends the policy's metadata (a msgpack map: the observation schema, the chunk);
  - then each binary frame from the client is one observation; the reply is the action map
    `{"actions": float32 [horizon, action_dim], "server_timing": {"infer_ms", "queue_ms", "batch_size"}}`;
  - a request the policy cannot act on (not msgpack, a missing key, a wrong dtype or shape, a non-finite
    state, an unknown camera) gets one text frame `error: <what is wrong>` and the connection closes
    (code 1008); a server bug gets the traceback as text and code 1011, as openpi does; a message over
    --max_message_mb is refused by the websocket layer (code 1009, "message too big"). Other clients are
    not affected by any of it.
  - `GET /healthz` answers 200; with an API key, a websocket client without the header
    `Authorization: Api-Key <key>` (what openpi-client sends) or `Api-Key: <key>` gets 401.

Concurrency: the event loop only moves bytes. Checking and preprocessing a request runs on a thread
pool, the model on one inference thread, so a slow request never blocks the others' I/O, health checks
or error replies (openpi issue 717). Requests that are waiting when the inference thread frees up are
run together as one batched call of up to --max_batch, each answered with its own actions (and each
with its own noise, so a request's actions do not depend on who else was in its batch; see
serving/inference.py). A client that disconnects mid-request is dropped when its reply cannot be sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import http
import logging
import threading
import time
import traceback
from typing import Any

from tinyvla_jax.errors import UserError
from tinyvla_jax.serving import wire

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008  # websocket close codes (RFC 6455)
INTERNAL_ERROR = 1011


def _websockets():
  from tinyvla_jax.extras import require
  require("websockets", extra="serve", purpose="the policy server")
  import websockets.asyncio.server
  import websockets.exceptions
  return websockets


class PolicyServer:
  """Serves `policy` (serving/inference.py: `metadata`, `prepare`, `run`) on host:port."""

  def __init__(self, policy, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
               max_batch: int = 8, max_message_mb: float = 16.0):
    if max_batch < 1:
      raise UserError(f"--max_batch={max_batch} must be >= 1")
    if not max_message_mb > 0:
      raise UserError(f"--max_message_mb={max_message_mb} must be > 0")
    if not 0 <= port <= 65535:
      raise UserError(f"--port={port} must be in [0, 65535] (0: any free port)")
    self.policy, self.host, self.port = policy, host, port
    self.api_key, self.max_batch = api_key or None, max_batch
    self.max_message_bytes = int(max_message_mb * 2**20)
    self.stats = dict(requests=0, errors=0, batches=0, batched_requests=0)
    self._metadata = wire.packb(policy.metadata)
    self._prepare_pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="prepare")
    self._model_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="infer")
    self._queue: asyncio.Queue | None = None
    self._server = None
    self._loop: asyncio.AbstractEventLoop | None = None
    self._ready = threading.Event()
    self._thread: threading.Thread | None = None

  # --- running ------------------------------------------------------------------------------------

  async def serve(self, *, stop: asyncio.Future | None = None, on_ready=None) -> None:
    """Serves until `stop` resolves (forever without one); `on_ready(self)` once the port is bound."""
    websockets = _websockets()
    self._loop = asyncio.get_running_loop()
    self._queue = asyncio.Queue()
    batcher = asyncio.create_task(self._batcher())
    try:
      async with websockets.asyncio.server.serve(self._handle, self.host, self.port, compression=None,
                                                 max_size=self.max_message_bytes,
                                                 process_request=self._process_request) as server:
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        if on_ready is not None:
          on_ready(self)
        await (stop if stop is not None else asyncio.Future())
    finally:
      batcher.cancel()
      self._ready.set()

  def start_in_thread(self, timeout: float = 60.0) -> "PolicyServer":
    """Serves from a background thread (tests, the load test, remote evaluation in one process); `stop()`
    ends it. Returns once the port is bound (`self.port` is then the real one, also for port 0)."""
    def main():
      loop = asyncio.new_event_loop()
      self._stop = loop.create_future()
      try:
        loop.run_until_complete(self.serve(stop=self._stop))
      except BaseException as error:  # a bind failure: report it to start_in_thread's caller
        self._error = error
      finally:
        loop.close()

    self._error = None
    self._thread = threading.Thread(target=main, name="policy-server", daemon=True)
    self._thread.start()
    if not self._ready.wait(timeout) or self._error is not None:
      raise UserError(f"the policy server did not start on {self.host}:{self.port}: {self._error}")
    return self

  def stop(self) -> None:
    if self._thread is not None and self._loop is not None:
      self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))
      self._thread.join(30)
    self._prepare_pool.shutdown(wait=False)
    self._model_pool.shutdown(wait=False)

  @property
  def url(self) -> str:
    return f"ws://{self.host}:{self.port}"

  # --- HTTP before the websocket: health and API key ------------------------------------------------

  def _process_request(self, connection, request):
    if request.path == "/healthz":
      return connection.respond(http.HTTPStatus.OK, "OK\n")
    if self.api_key is not None:
      authorization = request.headers.get("Authorization", "")
      given = authorization[len("Api-Key "):] if authorization.startswith("Api-Key ") else request.headers.get(
          "Api-Key", "")
      if not hmac.compare_digest(given.encode(), self.api_key.encode()):
        log.warning("refused a client without the right API key from %s", connection.remote_address)
        return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                  "error: missing or wrong API key (send the header 'Authorization: Api-Key <key>')\n")
    return None

  # --- one client -----------------------------------------------------------------------------------

  async def _handle(self, websocket) -> None:
    closed = _websockets().exceptions.ConnectionClosed
    loop = asyncio.get_running_loop()
    try:
      await websocket.send(self._metadata)
      while True:
        message = await websocket.recv()
        start = time.monotonic()
        self.stats["requests"] += 1
        try:
          prepared = await loop.run_in_executor(self._prepare_pool, self._prepare, message)
        except UserError as error:
          self.stats["errors"] += 1
          await websocket.send(f"error: {error}")
          await websocket.close(POLICY_VIOLATION, _reason(str(error)))
          return
        reply = loop.create_future()
        await self._queue.put((prepared, reply, time.monotonic()))
        try:
          actions, timing = await reply
        except Exception:  # a bug, or the model failed: this client hears it, the server goes on
          self.stats["errors"] += 1
          log.exception("inference failed")
          await websocket.send(traceback.format_exc())
          await websocket.close(INTERNAL_ERROR, "internal server error; traceback in the previous frame")
          return
        timing["infer_ms"] = round(1000 * (time.monotonic() - start), 3)
        await websocket.send(wire.packb({"actions": actions, "server_timing": timing}))
    except closed:
      return  # the client went away (also mid-request): nothing to answer

  def _prepare(self, message):
    return self.policy.prepare(wire.unpackb(message))

  async def _batcher(self) -> None:
    """Runs what is waiting as one batched call of up to max_batch on the inference thread."""
    loop = asyncio.get_running_loop()
    while True:
      batch = [await self._queue.get()]
      while len(batch) < self.max_batch and not self._queue.empty():
        batch.append(self._queue.get_nowait())
      started = time.monotonic()
      try:
        chunks = await loop.run_in_executor(self._model_pool, self.policy.run, [p for p, _, _ in batch])
      except Exception as error:
        for _, reply, _ in batch:
          if not reply.done():
            reply.set_exception(error)
        continue
      model_ms = round(1000 * (time.monotonic() - started), 3)
      self.stats["batches"] += 1
      self.stats["batched_requests"] += len(batch)
      for (_, reply, queued), chunk in zip(batch, chunks):
        if not reply.done():
          reply.set_result((chunk, dict(model_ms=model_ms, queue_ms=round(1000 * (started - queued), 3),
                                        batch_size=len(batch))))


def _reason(text: str) -> str:
  """A close reason fits in 123 bytes (RFC 6455); the full text went in the frame before it."""
  encoded = text.encode()[:120]
  return encoded.decode(errors="ignore")
