"""The train step: the objective's gradient, one optimizer update, and non-finite batches masked out.

`make_train_step` returns a pure function `(state, batch) -> (state, metrics)`. It differentiates only the
parameters the optimizer trains (`tx.partition`, training/optimizer.py): frozen backbone weights are
constants of the loss, so no frozen weight gradient is ever computed. The caller jits it
(with `donate_argnums=0`, and in/out shardings when running on a mesh), so the same function serves
one device and many.

Non-finite masking. If the loss, the gradient norm, the update's norm or the new parameters' norm is
not finite, the update branch of a `lax.cond` is not taken: params, EMA, optimizer moments and counts
(hence the learning-rate schedule) stay bit-identical, `skipped` and `consecutive_skipped` go up. (A
finite gradient can still give a non-finite update: a NaN learning rate, an eps of 0 with a zero second
moment, an overflowing step; checking the update too keeps those out of the parameters.) optax.apply_if_finite is not
used on purpose: it ignores the loss, lets our own counters/EMA advance, and applies the NaN update
after N consecutive bad steps (its documented behaviour). The host stops the run when `consecutive_skipped` grows
past a limit (training/loop.py).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from tinyvla_jax.training import ema as ema_lib
from tinyvla_jax.training.objectives import Batch, Objective
from tinyvla_jax.training.optimizer import partition_of
from tinyvla_jax.training.state import TrainState


def make_train_step(*, objective: Objective, tx: optax.GradientTransformation, lr_schedule: optax.Schedule,
                    ema_decay: float | None = None, ema_power: float | None = None,
                    skip_nonfinite: bool = True,
                    grad_accum_steps: int = 1) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Any]]]:
  """Builds the step around an objective (training/objectives.py: the policy's denoising loss, wrapped as
  the recipe says). `ema_decay` is the EMA's (maximum) decay, `ema_power` Diffusion Policy's warmup
  (training/ema.py; None: constant decay). `grad_accum_steps` > 1 averages the gradients of that many
  micro-batches of the batch (one update; micro-batch i holds rows i, i+k, i+2k, ... so that each
  device's rows stay on it), each with its own rng, fold_in(step rng, i)."""

  partition = partition_of(tx)

  def objective_of_trainable(trainable, frozen, batch, rng):
    return objective(partition.merge(trainable, frozen), batch, rng)

  grad_fn = jax.value_and_grad(objective_of_trainable, has_aux=True)

  def accumulated(trainable, frozen, batch, rng):
    k = grad_accum_steps
    # [B, ...] -> [B/k, k, ...] -> [k, B/k, ...]: micro-batch i is rows i::k (a reshape that keeps the
    # batch dimension's sharding, then a scan over the new leading axis).
    micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1), batch)

    def one(total, inputs):
      i, mb = inputs
      (scaled, loss), grads = grad_fn(trainable, frozen, mb, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, total, (scaled, loss, grads)), None

    zeros = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, trainable))
    (scaled, loss, grads), _ = jax.lax.scan(one, zeros, (jnp.arange(k), micro))
    return (scaled / k, loss / k), jax.tree.map(lambda g: g / k, grads)

  def train_step(state: TrainState, batch: Batch):
    rng = jax.random.fold_in(state.rng, state.batches_seen)
    # Only the trainable parameters are differentiated: the frozen ones are constants of the loss.
    trainable, frozen = partition.split(state.params)
    if grad_accum_steps > 1:
      (scaled, loss), grads = accumulated(trainable, frozen, batch, rng)
    else:
      (scaled, loss), grads = grad_fn(trainable, frozen, batch, rng)
    grad_norm = optax.tree.norm(grads)
    # The update is computed outside the cond so its finiteness can decide the cond; it is the same
    # work the update branch would do (XLA keeps one copy).
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    trained = optax.apply_updates(trainable, updates)
    params = partition.merge(trained, frozen)
    update_norm = optax.tree.norm(updates)
    finite = (jnp.isfinite(scaled) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
              & jnp.isfinite(optax.tree.norm(trained)))
    if not skip_nonfinite:
      finite = jnp.array(True)

    def apply_update(state):
      ema = state.ema_params
      if ema is not None:
        ema = ema_lib.update(ema, trained, ema_lib.ema_decay(state.step, max_decay=ema_decay, power=ema_power))
      return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
                           consecutive_skipped=jnp.zeros_like(state.consecutive_skipped))

    def skip(state):
      return state.replace(skipped=state.skipped + 1, consecutive_skipped=state.consecutive_skipped + 1)

    lr = lr_schedule(state.step)
    new_state = jax.lax.cond(finite, apply_update, skip, state)
    metrics = dict(loss=loss, scaled_loss=scaled, grad_norm=grad_norm, learning_rate=jnp.asarray(lr, jnp.float32),
                   update_norm=update_norm,  # of the update computed, also when it was skipped
                   finite=finite, skipped=new_state.skipped,
                   consecutive_skipped=new_state.consecutive_skipped)
    return new_state, metrics

  return train_step
