"""The EMA of the weights: Diffusion Policy's warmup schedule, and the train step applying it."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tinyvla_jax.training import ema


def dp_get_decay(optimization_step, *, update_after_step=0, inv_gamma=1.0, power=0.75, min_value=0.0,
                 max_value=0.9999):
  """Diffusion Policy's EMAModel.get_decay, restated from its definition (ema_model.py) in plain Python."""
  step = max(0, optimization_step - update_after_step - 1)
  if step <= 0:
    return 0.0
  value = 1 - (1 + step / inv_gamma) ** -power
  return max(min_value, min(value, max_value))


@pytest.mark.parametrize("power,max_decay", [(0.75, 0.9999), (2 / 3, 0.999), (1.0, 0.99)])
def test_warmup_matches_diffusion_policy(power, max_decay):
  steps = np.array([0, 1, 2, 3, 10, 99, 1000, 9999, 10**5, 10**6, 10**7])
  got = np.asarray(jax.jit(lambda s: ema.ema_decay(s, max_decay=max_decay, power=power))(steps))
  want = np.array([dp_get_decay(int(s), power=power, max_value=max_decay) for s in steps])
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
  # The figures DP's docstring quotes for power 3/4: 0.999 at ~10k updates.
  if power == 0.75:
    assert abs(dp_get_decay(10_000) - 0.999) < 1e-4


def test_constant_decay_without_power():
  np.testing.assert_allclose(ema.ema_decay(0, max_decay=0.99, power=None), 0.99)
  np.testing.assert_allclose(ema.ema_decay(12345, max_decay=0.99, power=None), 0.99)


def test_train_step_ema_copies_the_first_updates_then_averages():
  """The first two updates have decay 0 (the EMA is the params), the third averages with decay 1-2^-0.75."""
  from test_step import SCHEDULE, make_batch, optim_config, setup  # the step tests' linear model and batches

  from tinyvla_jax.training.optimizer import make_optimizer
  from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
  from tinyvla_jax.training.objectives import denoising
  from tinyvla_jax.training.step import make_train_step
  model, state, _ = setup(ema_decay=0.9999)
  tx, lr = make_optimizer(optim_config(), total_steps=100, params=state.params)
  step = jax.jit(make_train_step(objective=denoising(DiffusionPolicy(model, schedule=SCHEDULE)), tx=tx,
                                 lr_schedule=lr, ema_decay=0.9999, ema_power=0.75))
  for i in range(2):
    state, _ = step(state, make_batch(i))
    jax.tree.map(lambda e, p: np.testing.assert_array_equal(e, p), state.ema_params, state.params)
  before = jax.device_get(state.ema_params)
  state, _ = step(state, make_batch(2))
  d = dp_get_decay(2)
  jax.tree.map(lambda e, b, p: np.testing.assert_allclose(e, d * b + (1 - d) * p, rtol=1e-6, atol=1e-7),
               jax.device_get(state.ema_params), before, jax.device_get(state.params))
