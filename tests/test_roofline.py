"""The roofline arithmetic and XLA's cost figures it reads."""

import jax
import jax.numpy as jnp
import pytest

from tinyvla_jax import roofline


def test_fractions_are_closed_form():
  limits = dict(memory_gb_per_s=20.0, matmul_gflop_per_s=400.0)
  # 2 GB and 40 GFLOP: the bandwidth allows 100 ms, the matmul rate 100 ms; a 200 ms run reaches half of each.
  out = roofline.fractions(0.2, dict(bytes=2e9, flops=40e9), limits)
  assert out == dict(gb_accessed=2.0, gflop=40.0, bandwidth_fraction=0.5, matmul_fraction=0.5, roofline_ms=100.0,
                     of_roofline=0.5)
  memory_bound = roofline.fractions(0.5, dict(bytes=5e9, flops=1e9), limits)
  assert memory_bound["roofline_ms"] == 250.0 and memory_bound["of_roofline"] == 0.5


def test_cost_reads_xla_counts():
  n = 64
  a = jnp.ones((n, n), jnp.float32)
  cost = roofline.cost(jax.jit(lambda a: a @ a).lower(a).compile())
  assert cost["flops"] == pytest.approx(2 * n**3, rel=0.01)
  assert cost["bytes"] >= 2 * n * n * 4  # reads a, writes the product


def test_limits_are_positive():
  limits = roofline.measure_limits(repeats=1)
  assert limits["memory_gb_per_s"] > 0.1 and limits["matmul_gflop_per_s"] > 0.1
