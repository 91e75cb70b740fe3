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

from absl import flags

from tinyvla_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir whose checkpoint is served.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest readable).")
_CLIENTS = flags.DEFINE_integer("clients", 8, "Concurrent clients (connections).")
_REQUESTS = flags.DEFINE_integer("requests", 200, "Requests in all, spread over the clients.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 8, "The server's --max_batch.")
_COMPARE = flags.DEFINE_bool("compare_batching", True, "Also run with --max_batch 1 and report the gain.")
_TIMEOUT = flags.DEFINE_float("timeout_s", 300.0, "Wall-clock limit of each run, seconds.")


def main(argv):
  from tinyvla_jax.serving.inference import load_policy
  from tinyvla_jax.serving.load_test import run_load

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
