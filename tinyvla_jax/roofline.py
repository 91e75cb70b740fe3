"""How close a compiled program runs to this machine's limits: measured memory bandwidth and matmul rate.

A step time alone does not say whether it is good. Against the two limits measured here, in the same
process, it does: a program that reads B bytes and does F FLOPs cannot take less than
max(B / bandwidth, F / matmul rate). XLA's cost analysis of the compiled program gives B ("bytes
accessed", every operand and result of every fused op counted once) and F; `fractions` turns a measured
time into the fraction of each limit reached. The benchmark scripts print these next to every figure.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def _best_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile and warm up
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
  """Bytes/s for a streaming read (sum of a float32 array much larger than the caches): the rate a
  memory-bound program can at best read its weights and activations."""
  x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
  seconds = _best_seconds(jax.jit(jnp.sum), x, repeats=repeats)
  return x.size * 4 / seconds


def matmul_rate(n: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
  """FLOP/s of one large square matmul: the rate a compute-bound program can at best reach."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  return 2 * n**3 / _best_seconds(jax.jit(lambda a: a @ a), a, repeats=repeats)


def measure_limits(repeats: int = 5) -> dict:
  return dict(memory_gb_per_s=memory_bandwidth(repeats=repeats) / 1e9,
              matmul_gflop_per_s=matmul_rate(repeats=repeats) / 1e9)


def cost(compiled) -> dict:
  """{"flops", "bytes"} of a compiled program (jax `Compiled`), from XLA's cost analysis; NaN where the
  backend does not report them."""
  analysis = compiled.cost_analysis()
  analysis = (analysis[0] if isinstance(analysis, (list, tuple)) and analysis else analysis) or {}
  return dict(flops=float(analysis.get("flops", np.nan)), bytes=float(analysis.get("bytes accessed", np.nan)))


def fractions(seconds: float, program_cost: dict, limits: dict) -> dict:
  """The fraction of the bandwidth and matmul limits a run of `seconds` reached, and the time the slower
  of the two limits allows (the roofline bound)."""
  gb, gflop = program_cost["bytes"] / 1e9, program_cost["flops"] / 1e9
  bound = max(gb / limits["memory_gb_per_s"], gflop / limits["matmul_gflop_per_s"])
  return dict(gb_accessed=round(gb, 3), gflop=round(gflop, 3),
              bandwidth_fraction=round(gb / seconds / limits["memory_gb_per_s"], 3),
              matmul_fraction=round(gflop / seconds / limits["matmul_gflop_per_s"], 3),
              roofline_ms=round(bound * 1e3, 2), of_roofline=round(bound / seconds, 3))
