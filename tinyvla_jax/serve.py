"""Serve a trained policy to a robot: `python -m tinyvla_jax.serve --workdir DIR`.

  python -m tinyvla_jax.serve --workdir workdirs/fixed                        # ws://127.0.0.1:8000
  python -m tinyvla_jax.serve --workdir workdirs/fixed --host 0.0.0.0 --api_key "$KEY" --max_batch 8

Speaks openpi's websocket protocol (serving/server.py), so openpi's client drives it:

  from openpi_client.websocket_client_policy import WebsocketClientPolicy
  client = WebsocketClientPolicy("127.0.0.1", 8000)
  client.get_server_metadata()["observation"]                    # the observation schema
  actions = client.infer({"images": {"corner2": frame}, "state": state, "prompt": "open the drawer"})["actions"]

Listens on loopback unless --host says otherwise; on another interface pass --api_key (clients send the
header `Authorization: Api-Key <key>`). `GET /healthz` answers 200 once the model is compiled. SIGINT or
SIGTERM stops it. Needs the `serve` extra (websockets, msgpack).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from absl import flags

from tinyvla_jax import cli
from tinyvla_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir whose checkpoint is served.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest readable).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to listen on (0.0.0.0: every interface).")
_PORT = flags.DEFINE_integer("port", 8000, "Port (0: any free port, printed at start).")
_API_KEY = flags.DEFINE_string("api_key", None, "Refuse websocket clients without this key.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 8, "Requests waiting together run as one batched call of up to this many.")
_MAX_MESSAGE_MB = flags.DEFINE_float("max_message_mb", 16.0, "Largest request accepted, in MiB.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the sampling noise of requests that send no noise_key.")

log = logging.getLogger("tinyvla_jax.serve")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if not _WORKDIR.value:
    raise UserError("pass --workdir DIR (a training workdir with checkpoints)")
  from tinyvla_jax.serving.inference import load_policy
  from tinyvla_jax.serving.server import PolicyServer

  policy = load_policy(_WORKDIR.value, _STEP.value, seed=_SEED.value)
  server = PolicyServer(policy, host=_HOST.value, port=_PORT.value, api_key=_API_KEY.value,
                        max_batch=_MAX_BATCH.value, max_message_mb=_MAX_MESSAGE_MB.value)
  if _HOST.value not in ("127.0.0.1", "localhost", "::1") and not _API_KEY.value:
    log.warning("serving on %s without --api_key: anyone who reaches this port can drive the policy", _HOST.value)
  log.info("compiling batch sizes up to %d ...", _MAX_BATCH.value)
  policy.warmup(_MAX_BATCH.value)
  asyncio.run(_serve(server))


async def _serve(server) -> None:
  loop = asyncio.get_running_loop()
  stop = loop.create_future()
  for sig in (signal.SIGINT, signal.SIGTERM):
    loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

  def ready(server):
    print(f"serving step {server.policy.step} of {server.policy.info.get('workdir')} on {server.url} "
          f"(GET http://{server.host}:{server.port}/healthz); Ctrl-C stops", flush=True)

  await server.serve(stop=stop, on_ready=ready)
  print(f"stopped: {server.stats}", flush=True)


if __name__ == "__main__":
  cli.run(main)
