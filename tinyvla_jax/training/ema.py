"""The exponential moving average of the weights that the policy acts with, with Diffusion Policy's warmup.

    ema <- decay(k) * ema + (1 - decay(k)) * params      after optimizer update k = 0, 1, 2, ...

decay(k) is Diffusion Policy's EMAModel.get_decay (crowsonkb's EMA warmup, update_after_step 0,
inv_gamma 1): with j = max(0, k - 1), decay = 0 for j = 0, else clip(1 - (1 + j / inv_gamma)^-power,
0, max_decay). DP trains with power 0.75 and max 0.9999: the average covers roughly the last
k / 4 steps early on (decay 0.994 after 1k updates, 0.999 after 10k), so it forgets the random init
instead of keeping most of it, as a constant 0.9999 from step 0 would for the first ~10k updates.
`power=None` keeps a constant decay (the older behaviour of train.ema_decay alone).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_decay(step: jax.Array, *, max_decay: float, power: float | None, inv_gamma: float = 1.0) -> jax.Array:
  """The decay applied after optimizer update number `step` (0-based; the count before the update)."""
  if power is None:
    return jnp.asarray(max_decay, jnp.float32)
  j = jnp.maximum(jnp.asarray(step, jnp.float32) - 1.0, 0.0)
  value = 1.0 - (1.0 + j / inv_gamma) ** -power
  return jnp.where(j <= 0, 0.0, jnp.clip(value, 0.0, max_decay)).astype(jnp.float32)


def update(ema, params, decay: jax.Array):
  return jax.tree.map(lambda e, p: e * decay + p * (1 - decay), ema, params)
