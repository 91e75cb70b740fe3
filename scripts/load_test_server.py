"""Load test of the policy server: `python scripts/load_test_server.py --workdir W --clients 8 --requests 200`.

Starts a server on loopback (port chosen by the OS) over the workdir's checkpoint, compiles its batch
sizes, then runs --clients client threads that send --requests observations in all (each client its
own connection, one request at a time, as a robot does) and prints JSON: latency p50/p95/p99 (ms, as
a client sees it), throughput (requests/s), errors, and the batch sizes the server formed. With
--compare_batching (the default) the same load runs a second time with --max_batch 1, and the JSON
gives the throughput gain of batching. Bounded: every run stops at --timeout_s, and a request that
takes longer than that counts as an error.

Clients and server share this process (and its cores): the figures are what a robot on the same machine
would see, a lower bound for a client elsewhere.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from absl import flags

from tinyvla_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir whose checkpoint is served.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest readable).")
_CLIENTS = flags.DEFINE_integer("clients", 8, "Concurrent clients (connections).")
_REQUESTS = flags.DEFINE_integer("requests", 200, "Requests in all, spread over the clients.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 8, "The server's --max_batch.")
_COMPARE = flags.DEFINE_bool("compare_batching", True, "Also run with --max_batch 1 and report the gain.")
_TIMEOUT = flags.DEFINE_float("timeout_s", 300.0, "Wall-clock limit of each run, seconds.")


def run_load(policy, *, clients: int, requests: int, max_batch: int, timeout_s: float) -> dict:
  from tinyvla_jax.serving.client import RemotePolicy
  from tinyvla_jax.serving.server import PolicyServer

  policy.warmup(max_batch)
  server = PolicyServer(policy, port=0, max_batch=max_batch).start_in_thread()
  example = policy.example_observation()
  latencies, errors, batch_sizes = [], [], []
  lock = threading.Lock()
  per_client = [requests // clients + (i < requests % clients) for i in range(clients)]
  deadline = time.monotonic() + timeout_s

  def client(i: int) -> None:
    rng = np.random.default_rng(i)
    try:
      remote = RemotePolicy(server.url, connect_timeout_s=30)
    except Exception as error:  # counted, not raised: the figures say how many failed
      with lock:
        errors.append(f"connect: {error}")
      return
    with remote:
      for _ in range(per_client[i]):
        if time.monotonic() > deadline:
          with lock:
            errors.append("timeout")
          break
        obs = dict(example, images={k: rng.integers(0, 256, v.shape, dtype=np.uint8)
                                    for k, v in example["images"].items()})
        start = time.monotonic()
        try:
          reply = remote.infer(obs)
        except Exception as error:
          with lock:
            errors.append(str(error))
          break
        with lock:
          latencies.append(1000 * (time.monotonic() - start))
          batch_sizes.append(int(reply["server_timing"]["batch_size"]))

  threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
  start = time.monotonic()
  for t in threads:
    t.start()
  for t in threads:
    t.join(max(1.0, deadline - time.monotonic() + 30))
  wall = time.monotonic() - start
  server.stop()
  done = np.asarray(latencies)
  return dict(max_batch=max_batch, clients=clients, requests=requests, completed=len(latencies),
              errors=len(errors), first_errors=errors[:3], wall_s=round(wall, 2),
              throughput_rps=round(len(latencies) / wall, 2),
              latency_ms={f"p{q}": round(float(np.percentile(done, q)), 1) for q in (50, 95, 99)} if len(done) else {},
              mean_batch_size=round(float(np.mean(batch_sizes)), 2) if batch_sizes else None)


def main(argv):
  from tinyvla_jax.serving.inference import load_policy

  cli.enable_compilation_cache("auto")
  policy = load_policy(_WORKDIR.value, _STEP.value)
  runs = [run_load(policy, clients=_CLIENTS.value, requests=_REQUESTS.value, max_batch=_MAX_BATCH.value,
                   timeout_s=_TIMEOUT.value)]
  if _COMPARE.value and _MAX_BATCH.value > 1:
    runs.append(run_load(policy, clients=_CLIENTS.value, requests=_REQUESTS.value, max_batch=1,
                         timeout_s=_TIMEOUT.value))
  out = dict(workdir=_WORKDIR.value, step=policy.step, runs=runs)
  if len(runs) == 2 and runs[1]["throughput_rps"]:
    out["batching_throughput_gain"] = round(runs[0]["throughput_rps"] / runs[1]["throughput_rps"], 2)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  cli.run(main)
