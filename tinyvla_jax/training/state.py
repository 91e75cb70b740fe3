"""The train state: everything a step reads and writes, as one pytree (so it shards and checkpoints whole)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from tinyvla_jax.training.optimizer import partition_of


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32: optimizer updates applied (skipped batches do not count)
  params: Any
  opt_state: optax.OptState
  ema_params: Any  # of the trainable parameters only; None when EMA is off
  rng: jax.Array  # typed PRNG key; the step's key is fold_in(rng, batches seen)
  skipped: jax.Array  # int32: batches skipped because the loss or a gradient was not finite
  consecutive_skipped: jax.Array  # int32: current run of skipped batches (the host fails fast on it)

  @property
  def batches_seen(self) -> jax.Array:
    return self.step + self.skipped

  @property
  def inference_params(self):
    """The parameters to act with: the EMA (of the trainable parameters) over the frozen ones, when it is on."""
    if self.ema_params is None:
      return self.params
    if jax.tree.structure(self.ema_params) == jax.tree.structure(self.params):
      return self.ema_params  # everything trains
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(self.params),
                                         **traverse_util.flatten_dict(self.ema_params)})


def create_train_state(*, params, tx: optax.GradientTransformation, rng: jax.Array, use_ema: bool) -> TrainState:
  """The optimizer state and the EMA cover what `tx` trains (training/optimizer.py: its partition)."""
  trainable, _ = partition_of(tx).split(params)
  # Three distinct zeros, not one shared array: the step donates the state, and XLA refuses to
  # donate one buffer twice.
  zero = lambda: jnp.zeros((), jnp.int32)
  # Jitted: run eagerly, each moment's zeros compile a program of their own (~50 at start-up, ~1 s on a
  # CPU); as one program the persistent compilation cache keeps it. Under `jax.eval_shape` it traces as is.
  return TrainState(step=zero(), params=params, opt_state=jax.jit(tx.init)(trainable),
                    ema_params=jax.tree.map(jnp.copy, trainable) if use_ema else None, rng=rng,
                    skipped=zero(), consecutive_skipped=zero())
