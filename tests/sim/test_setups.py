"""Setup choice for collection (sim/setups.py): seeded draws and the farthest-point order. Pure NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from tinyvla_jax.sim.setups import setup_seed_for, spread_order


def test_setup_seeds_are_a_function_of_seed_task_and_attempt():
  a = [setup_seed_for(0, "window-open-v3", k) for k in range(50)]
  assert a == [setup_seed_for(0, "window-open-v3", k) for k in range(50)]
  assert len(set(a)) == 50 and all(0 <= s < 2 ** 31 for s in a)
  assert a != [setup_seed_for(1, "window-open-v3", k) for k in range(50)]
  assert a != [setup_seed_for(0, "drawer-open-v3", k) for k in range(50)]


def test_spread_order_is_the_greedy_farthest_point_order():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(60, 3))
  order = spread_order(x)
  assert sorted(order) == list(range(60))
  assert order[0] == int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))
  for k in range(1, 60):  # brute force: each next one is the farthest from those before it
    chosen = x[order[:k]]
    gaps = np.sqrt(((x[:, None] - chosen[None]) ** 2).sum(-1)).min(1)
    gaps[order[:k]] = -1
    assert gaps[order[k]] == pytest.approx(gaps.max())
  # One dimension: the middle, then both ends, then the quarter points.
  line = np.linspace(0, 1, 9)[:, None]
  assert [float(line[i, 0]) for i in spread_order(line)[:5]] in ([0.5, 0.0, 1.0, 0.25, 0.75], [0.5, 1.0, 0.0, 0.25, 0.75],
                                                                   [0.5, 0.0, 1.0, 0.75, 0.25], [0.5, 1.0, 0.0, 0.75, 0.25])
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    spread_order(np.zeros((0, 2)))


def test_a_spread_prefix_leaves_smaller_gaps_than_random_draws():
  """20 of 500 uniform draws in a box (window-open's 0.2 x 0.2 m): the largest distance from any draw to its
  nearest chosen one is smaller for the spread prefix than for any of 20 random choices of 20."""
  rng = np.random.default_rng(1)
  pool = rng.uniform([-0.1, 0.7], [0.1, 0.9], size=(500, 2))

  def worst_gap(idx):
    return np.sqrt(((pool[:, None] - pool[idx][None]) ** 2).sum(-1)).min(1).max()

  spread = worst_gap(spread_order(pool)[:20])
  randoms = [worst_gap(rng.choice(500, 20, replace=False)) for _ in range(20)]
  assert spread < min(randoms) and spread < 0.7 * np.median(randoms)
