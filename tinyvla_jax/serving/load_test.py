"""The load test of the policy server (scripts/load_test_server.py is its command line): a server on
loopback over a policy, `clients` threads each with its own connection sending one request at a time (as
a robot does), and the figures: latency percentiles as a client sees them, throughput, errors, and the
batch sizes the server formed. Bounded: the run stops at `timeout_s`; what did not finish counts as errors.

Clients and server share one process (and its cores): the figures are what a robot on the same machine
would see, a lower bound for a client elsewhere.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from tinyvla_jax.serving.client import RemotePolicy
from tinyvla_jax.serving.server import PolicyServer

def run_load(policy, *, clients: int, requests: int, max_batch: int, timeout_s: float) -> dict:
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
