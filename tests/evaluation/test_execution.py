"""Receding-horizon and temporal-ensembling execution against hand-computed actions."""

from __future__ import annotations

import numpy as np
import pytest

from tinyvla_jax.evaluation.execution import RecedingHorizon, TemporalEnsemble, make_execution


def counting_policy(horizon=4):
  """Chunk predicted at call c: entry j is the action 100*c + j (one dimension)."""
  calls = []

  def predict(obs):
    c = len(calls)
    calls.append(obs)
    return (100.0 * c + np.arange(horizon, dtype=np.float64))[:, None]
  return predict, calls


def test_receding_horizon_executes_the_first_steps_then_replans():
  predict, calls = counting_policy()
  ex = RecedingHorizon(predict, action_steps=3)
  got = [float(ex.act(obs=t)[0]) for t in range(7)]
  assert got == [0, 1, 2, 100, 101, 102, 200]
  assert calls == [0, 3, 6] and ex.calls == 3
  ex.reset()
  assert float(ex.act(obs=0)[0]) == 300  # a fresh queue after reset


def test_temporal_ensemble_weights_oldest_chunk_most():
  predict, _ = counting_policy(horizon=3)
  k = 0.5
  ex = TemporalEnsemble(predict, k=k)
  got = [float(ex.act(obs=t)[0]) for t in range(4)]
  w = np.exp(-k * np.arange(3))
  # Step t averages the chunks predicted at t-2, t-1, t (those still covering t), oldest first.
  expect = [0.0,
            (w[0] * 1 + w[1] * 100) / w[:2].sum(),
            (w[0] * 2 + w[1] * 101 + w[2] * 200) / w.sum(),
            (w[0] * 102 + w[1] * 201 + w[2] * 300) / w.sum()]
  np.testing.assert_allclose(got, expect)
  assert ex.calls == 4


def test_bad_execution_names_the_flag():
  with pytest.raises(ValueError, match="--execution='x' must be one of receding, ensemble"):
    make_execution("x", lambda o: None)
  with pytest.raises(ValueError, match="--action_steps=0"):
    make_execution("receding", lambda o: None, action_steps=0)
