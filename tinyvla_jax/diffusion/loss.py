"""The denoising objective: MSE between predicted and true noise over real (unpadded) action steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tinyvla_jax.errors import UserError


def epsilon_mse(*, predicted: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean squared error over valid entries. Returns a float32 scalar.

  predicted, target: [B, T, A]. mask: bool [B, T], True = real action, False = padding past the
  episode end. With a mask the mean is sum over valid steps / (valid steps * A); without, a plain mean.

  TinyVLA's original computes `(mse * ~is_pad.unsqueeze(-1)).mean()`, dividing by every entry,
  padding included. That scales each batch's loss and gradient by its fraction of real steps, so
  chunks near episode ends count less and the logged loss moves with how much padding a batch
  happened to draw. Dividing by the valid count gives each real action step the same weight.
  """
  if predicted.ndim != 3 or predicted.shape != target.shape:
    raise UserError(f"predicted and target must both be [B, T, A], got {predicted.shape} and {target.shape}")
  squared = jnp.square(predicted.astype(jnp.float32) - target.astype(jnp.float32))
  if mask is None:
    return jnp.mean(squared)
  if mask.shape != predicted.shape[:2] or mask.dtype != jnp.bool_:
    raise UserError(f"mask must be bool [B, T] = {list(predicted.shape[:2])}, got {mask.dtype}{list(mask.shape)}")
  # where, not multiply: a non-finite prediction at a padded step must not turn the sum into NaN.
  total = jnp.sum(jnp.where(mask[..., None], squared, 0.0))
  count = jnp.sum(mask, dtype=jnp.float32) * predicted.shape[-1]
  # An all-padding batch has nothing to learn from: loss 0 (and zero gradient), not 0 / 0 = NaN.
  return total / jnp.maximum(count, 1.0)
