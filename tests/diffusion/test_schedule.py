"""Noise schedule: diffusers' numbers, timestep spacing, and the forward process."""

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.diffusion import inference_timesteps, make_schedule, q_sample

GOLDEN = json.loads(pathlib.Path(__file__).with_name("diffusers_golden.json").read_text())

# The schedule is float32 (as in diffusers), so agreement is bounded by float32's relative spacing
# 2**-24 ~ 6e-8 per rounding; 1e-6 leaves room for a few roundings of difference and no more. Reference
# values quoted with 7-10 significant digits are themselves rounded at ~5e-8 relative.
RTOL = 1e-6


def test_facts_golden_values():
  s = make_schedule(num_train_steps=100, beta_schedule="squaredcos_cap_v2")
  np.testing.assert_allclose(s.betas[:3], [6.312816e-4, 1.116937e-3, 1.6028992e-3], rtol=RTOL)
  np.testing.assert_allclose(
      s.alphas_cumprod[:5], [0.9993687272, 0.998252511, 0.9966524243, 0.9945700169, 0.9920073152], rtol=RTOL
  )
  np.testing.assert_allclose(
      s.alphas_cumprod[95:], [3.8809993e-3, 2.1842998e-3, 9.7119284e-4, 2.4285720e-4, 2.4285407e-7], rtol=RTOL
  )
  assert s.betas.dtype == s.alphas.dtype == s.alphas_cumprod.dtype == jnp.float32
  assert s.num_train_steps == 100


@pytest.mark.parametrize(
    "key, kwargs",
    [
        ("squaredcos_cap_v2_100", dict(num_train_steps=100, beta_schedule="squaredcos_cap_v2")),
        ("linear_1000", dict(num_train_steps=1000, beta_schedule="linear")),
    ],
)
def test_schedule_is_bit_identical_to_diffusers(key, kwargs):
  # Bit-exact, not just close: we mirror torch.linspace and torch's float64-accumulated cumprod.
  s = make_schedule(**kwargs)
  np.testing.assert_array_equal(s.betas, np.float32(GOLDEN["schedules"][key]["betas"]))
  np.testing.assert_array_equal(s.alphas_cumprod, np.float32(GOLDEN["schedules"][key]["alphas_cumprod"]))


def test_unknown_schedule_raises():
  with pytest.raises(ValueError, match="beta_schedule"):
    make_schedule(beta_schedule="cosine")


@pytest.mark.parametrize(
    "train, infer, expected",
    [
        (100, 10, [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]),
        (100, 1, [0]),
        (100, 3, [66, 33, 0]),
        (10, 10, list(range(9, -1, -1))),
        (1000, 7, [852, 710, 568, 426, 284, 142, 0]),
    ],
)
def test_inference_timesteps_leading(train, infer, expected):
  ts = inference_timesteps(train, infer)
  assert ts.tolist() == expected
  assert ts.dtype == np.int32


@pytest.mark.parametrize("infer", [0, -1, 101])
def test_inference_timesteps_rejects_bad_counts(infer):
  with pytest.raises(ValueError, match="num_inference_steps"):
    inference_timesteps(100, infer)


def _batch(seed=0, shape=(3, 8, 4)):
  # NumPy, not jax.random: each eager jax.random call compiles threefry (~1 s on CPU).
  rng = np.random.default_rng(seed)
  x0 = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
  noise = rng.standard_normal(shape).astype(np.float32)
  return jnp.asarray(x0), jnp.asarray(noise)


def test_q_sample_closed_form():
  s = make_schedule()
  x0, noise = _batch()
  t = jnp.array([0, 42, 99], jnp.int32)
  xt = q_sample(s, x0, noise, t)
  abar = np.asarray(s.alphas_cumprod, np.float64)[np.asarray(t)][:, None, None]
  expected = np.sqrt(abar) * np.asarray(x0, np.float64) + np.sqrt(1 - abar) * np.asarray(noise, np.float64)
  np.testing.assert_allclose(xt, expected, rtol=1e-6, atol=1e-6)


def test_q_sample_then_solve_for_x0_recovers_x0():
  s = make_schedule()
  x0, noise = _batch(seed=1)
  # t = 99 is left out: abar_99 = 2.4e-7, so dividing by sqrt(abar) ~ 5e-4 amplifies float32
  # rounding of x_t by ~2000x; at t <= 95 the amplification is at most ~16x.
  t = jnp.array([0, 50, 95], jnp.int32)
  xt = q_sample(s, x0, noise, t)
  abar = s.alphas_cumprod[t][:, None, None]
  recovered = (xt - jnp.sqrt(1 - abar) * noise) / jnp.sqrt(abar)
  np.testing.assert_allclose(recovered, x0, atol=1e-5)


def test_q_sample_shape_errors():
  s = make_schedule()
  x0, noise = _batch()
  with pytest.raises(ValueError, match="timesteps"):
    q_sample(s, x0, noise, jnp.zeros((2,), jnp.int32))
  with pytest.raises(ValueError, match="timesteps"):
    q_sample(s, x0, noise, jnp.zeros((3,), jnp.float32))
  with pytest.raises(ValueError, match="x0 and noise"):
    q_sample(s, x0, noise[:, :4], jnp.zeros((3,), jnp.int32))
