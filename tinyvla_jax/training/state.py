"""The train state: everything a step reads and writes, as one pytree (so it shards and checkpoints whole)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32: optimizer updates applied (skipped batches do not count)
  params: Any
  opt_state: optax.OptState
  ema_params: Any  # None when EMA is off
  rng: jax.Array  # typed PRNG key; the step's key is fold_in(rng, batches seen)
  skipped: jax.Array  # int32: batches skipped because the loss or a gradient was not finite
  consecutive_skipped: jax.Array  # int32: current run of skipped batches (the host fails fast on it)

  @property
  def batches_seen(self) -> jax.Array:
    return self.step + self.skipped

  @property
  def inference_params(self):
    """The parameters to act with: the EMA when it is on."""
    return self.params if self.ema_params is None else self.ema_params


def create_train_state(*, params, tx: optax.GradientTransformation, rng: jax.Array, use_ema: bool) -> TrainState:
  # Three distinct zeros, not one shared array: the step donates the state, and XLA refuses to
  # donate one buffer twice.
  zero = lambda: jnp.zeros((), jnp.int32)
  return TrainState(step=zero(), params=params, opt_state=tx.init(params),
                    ema_params=jax.tree.map(jnp.copy, params) if use_ema else None, rng=rng,
                    skipped=zero(), consecutive_skipped=zero())
