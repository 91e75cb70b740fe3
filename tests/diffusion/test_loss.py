"""epsilon_mse: hand-computed values, padding masked out, no NaN on an all-padding batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.diffusion import epsilon_mse


def test_unmasked_is_plain_mean():
  predicted = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])  # [1, 2, 2]
  target = jnp.zeros_like(predicted)
  assert float(epsilon_mse(predicted=predicted, target=target)) == pytest.approx((1 + 4 + 9 + 16) / 4)


def test_masked_by_hand():
  # B=2, T=3, A=2. Valid steps: (0,0), (0,1), (1,0) -> 3 steps * 2 dims = 6 entries.
  predicted = jnp.array([
      [[1.0, -1.0], [2.0, 0.0], [100.0, 100.0]],
      [[0.0, 3.0], [-50.0, 7.0], [9.0, 9.0]],
  ])
  target = jnp.zeros_like(predicted)
  mask = jnp.array([[True, True, False], [True, False, False]])
  expected = (1 + 1 + 4 + 0 + 0 + 9) / 6
  assert float(epsilon_mse(predicted=predicted, target=target, mask=mask)) == pytest.approx(expected)
  # TinyVLA's original (all 12 entries in the denominator) would give 15 / 12 instead.
  assert expected != pytest.approx(15 / 12)


def test_padding_predictions_do_not_matter():
  rng = np.random.default_rng(0)
  predicted = rng.standard_normal((4, 16, 10)).astype(np.float32)
  target = rng.standard_normal((4, 16, 10)).astype(np.float32)
  lengths = np.array([16, 9, 1, 5])
  mask = np.arange(16)[None, :] < lengths[:, None]
  changed = predicted.copy()
  changed[~mask] = rng.standard_normal(((~mask).sum(), 10)) * 1e3
  changed[3, 15] = np.inf  # even a non-finite value at a padded step stays out
  a = epsilon_mse(predicted=jnp.asarray(predicted), target=jnp.asarray(target), mask=jnp.asarray(mask))
  b = epsilon_mse(predicted=jnp.asarray(changed), target=jnp.asarray(target), mask=jnp.asarray(mask))
  assert float(a) == float(b)
  expected = np.mean((predicted - target)[mask] ** 2)
  assert float(a) == pytest.approx(expected, rel=1e-6)


def test_all_padding_gives_zero_loss_and_zero_gradient():
  predicted = jnp.ones((2, 4, 3))
  target = jnp.zeros((2, 4, 3))
  mask = jnp.zeros((2, 4), bool)
  loss, grad = jax.value_and_grad(lambda p: epsilon_mse(predicted=p, target=target, mask=mask))(predicted)
  assert float(loss) == 0.0
  assert bool(jnp.all(grad == 0.0))


def test_all_valid_mask_equals_no_mask():
  rng = np.random.default_rng(1)
  predicted, target = (jnp.asarray(rng.standard_normal((2, 8, 4)), jnp.float32) for _ in range(2))
  with_mask = epsilon_mse(predicted=predicted, target=target, mask=jnp.ones((2, 8), bool))
  np.testing.assert_allclose(with_mask, epsilon_mse(predicted=predicted, target=target), rtol=1e-6)


def test_shape_and_dtype_errors():
  x = jnp.zeros((2, 8, 4))
  with pytest.raises(ValueError, match="predicted and target"):
    epsilon_mse(predicted=x, target=x[:, :4])
  with pytest.raises(ValueError, match="mask must be bool"):
    epsilon_mse(predicted=x, target=x, mask=jnp.ones((2, 8), jnp.float32))
  with pytest.raises(ValueError, match="mask must be bool"):
    epsilon_mse(predicted=x, target=x, mask=jnp.ones((8, 2), bool))
