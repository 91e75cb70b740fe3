"""The train step: DDPM epsilon loss, one optimizer update, and non-finite batches masked out.

`make_train_step` returns a pure function `(state, batch) -> (state, metrics)`; the caller jits it
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

from tinyvla_jax.diffusion.loss import epsilon_mse
from tinyvla_jax.diffusion.schedule import NoiseSchedule, q_sample
from tinyvla_jax.errors import UserError
from tinyvla_jax.training import ema as ema_lib
from tinyvla_jax.training.state import TrainState

Batch = dict[str, jax.Array]


def diffusion_loss(apply_fn: Callable, params, batch: Batch, rng: jax.Array, schedule: NoiseSchedule, *,
                   train: bool = False, noise_samples: int = 1) -> jax.Array:
  """Epsilon-MSE of the noise predicted for randomly noised action chunks (padding excluded).

  `train` hands the model a "dropout" rng (LoRA dropout, models/layers.py); evaluation passes none.
  `noise_samples` = K > 1 noises each chunk K times (K noises, K timesteps) under one observation
  encoding: the vision tower and the decoder, most of a step's FLOPs, run once per example while the
  U-Net, which is what learns to denoise, gets K times the signal. It needs an `apply_fn` with the
  model's `condition` and `predict_noise` methods (UnifiedTinyVLAModel.apply).
  """
  actions = batch["actions"]
  noise_key, t_key = jax.random.split(rng)
  # A key of its own, derived beside the split: the noise and timesteps stay what they were without it.
  rngs = {"dropout": jax.random.fold_in(rng, 1)} if train else {}
  observation = dict(images=batch["images"], tokens=batch["tokens"], token_mask=batch["token_mask"],
                     state=batch["state"])
  mask = batch["action_mask"]
  if noise_samples < 1:
    raise UserError(f"train.noise_samples={noise_samples} must be >= 1")
  if noise_samples > 1:
    condition = apply_fn({"params": params}, **observation, rngs=rngs, method="condition")
    tile = lambda x: jnp.tile(x, (noise_samples,) + (1,) * (x.ndim - 1))  # [K*B, ...], sample-major
    actions, condition, mask = tile(actions), tile(condition), tile(mask)
  noise = jax.random.normal(noise_key, actions.shape, jnp.float32)
  timesteps = jax.random.randint(t_key, (actions.shape[0],), 0, schedule.num_train_steps)
  noisy = q_sample(schedule, actions, noise, timesteps)
  if noise_samples > 1:
    predicted = apply_fn({"params": params}, condition=condition, noisy_actions=noisy, timesteps=timesteps,
                         rngs=rngs, method="predict_noise")
  else:  # one call of the whole model (any apply_fn with the model's signature works)
    predicted = apply_fn({"params": params}, **observation, noisy_actions=noisy, timesteps=timesteps, rngs=rngs)
  return epsilon_mse(predicted=predicted, target=noise, mask=mask)


def make_train_step(*, apply_fn: Callable, tx: optax.GradientTransformation, lr_schedule: optax.Schedule,
                    noise_schedule: NoiseSchedule, ema_decay: float | None = None, ema_power: float | None = None,
                    loss_scale_threshold: float | None = None, loss_scale_factor: float = 0.1,
                    skip_nonfinite: bool = True,
                    noise_samples: int = 1) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Any]]]:
  """Builds the step. `loss_scale_threshold` reproduces the broken original (loss *= factor above it).
  `ema_decay` is the EMA's (maximum) decay, `ema_power` Diffusion Policy's warmup (training/ema.py; None:
  constant decay). `noise_samples`: noised copies of each chunk per encoding (see diffusion_loss)."""

  def objective(params, batch, rng):
    loss = diffusion_loss(apply_fn, params, batch, rng, noise_schedule, train=True, noise_samples=noise_samples)
    scaled = loss
    if loss_scale_threshold is not None:
      # The original's "loss clipping": scales the loss (and so the gradient) when it is large.
      scaled = jnp.where(loss > loss_scale_threshold, loss * loss_scale_factor, loss)
    return scaled, loss

  def train_step(state: TrainState, batch: Batch):
    rng = jax.random.fold_in(state.rng, state.batches_seen)
    (scaled, loss), grads = jax.value_and_grad(objective, has_aux=True)(state.params, batch, rng)
    grad_norm = optax.tree.norm(grads)
    # The update is computed outside the cond so its finiteness can decide the cond; it is the same
    # work the update branch would do (XLA keeps one copy).
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    update_norm = optax.tree.norm(updates)
    finite = (jnp.isfinite(scaled) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
              & jnp.isfinite(optax.tree.norm(params)))
    if not skip_nonfinite:
      finite = jnp.array(True)

    def apply_update(state):
      ema = state.ema_params
      if ema is not None:
        ema = ema_lib.update(ema, params, ema_lib.ema_decay(state.step, max_decay=ema_decay, power=ema_power))
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


def make_eval_step(*, apply_fn: Callable, noise_schedule: NoiseSchedule) -> Callable:
  """(params, batch, rng) -> epsilon-MSE on a held-out batch (fixed rng: comparable across epochs)."""

  def eval_step(params, batch, rng):
    return diffusion_loss(apply_fn, params, batch, rng, noise_schedule)

  return eval_step
