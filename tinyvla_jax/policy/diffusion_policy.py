"""DiffusionPolicy: a denoiser (UnifiedTinyVLAModel) with its noise schedule, epsilon loss and sampler.

    policy = DiffusionPolicy.from_config(model, run.diffusion)
    loss = policy.compute_loss(params, batch, rng, train=True)          # training and validation
    chunk = policy.sample_actions(params, rng, images=..., tokens=..., token_mask=..., state=...)
    sample = policy.jitted_sampler()                                      # evaluation, serving

As openpi keeps `compute_loss` and `sample_actions` on its model: the objective and the sampling loop
that must agree with it (the same schedule, the same normalized action space) live together. Actions are
in the data's normalized [-1, 1] space here; data/normalize.py maps them back to robot units.

Sampling encodes the observation once (vision tower + decoder) and runs only the U-Net per denoising
step, in one `lax.scan` (the condition is a closure constant inside it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Integer, UInt8

from tinyvla_jax.diffusion.config import DiffusionConfig
from tinyvla_jax.diffusion.loss import epsilon_mse
from tinyvla_jax.diffusion.samplers import SAMPLERS
from tinyvla_jax.diffusion.schedule import NoiseSchedule, make_schedule, q_sample
from tinyvla_jax.errors import UserError

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class DiffusionPolicy:
  """`model`: a flax module with the model's call signature `(images, tokens, token_mask, state,
  noisy_actions, timesteps) -> noise` and its `condition` / `predict_noise` methods (UnifiedTinyVLAModel)."""

  model: Any
  schedule: NoiseSchedule
  num_inference_steps: int = 10
  sampler: str = "ddim"
  clip_sample: bool = True

  def __post_init__(self):
    if self.sampler not in SAMPLERS:
      raise UserError(f"diffusion.sampler={self.sampler!r} must be one of {sorted(SAMPLERS)}")

  @classmethod
  def from_config(cls, model, diffusion: DiffusionConfig) -> "DiffusionPolicy":
    schedule = make_schedule(num_train_steps=diffusion.num_train_steps, beta_schedule=diffusion.beta_schedule)
    return cls(model, schedule=schedule, num_inference_steps=diffusion.num_inference_steps,
               sampler=diffusion.sampler, clip_sample=diffusion.clip_sample)

  def compute_loss(self, params, batch: Batch, rng: jax.Array, *, train: bool = False,
                   noise_samples: int = 1, with_condition: bool = False):
    """Epsilon-MSE of the noise predicted for randomly noised action chunks (padding excluded).

    `train` hands the model a "dropout" rng (LoRA dropout, models/layers.py); evaluation passes none.
    `noise_samples` = K > 1 noises each chunk K times (K noises, K timesteps) under one observation
    encoding: the vision tower and the decoder, most of a step's FLOPs, run once per example while the
    U-Net, which is what learns to denoise, gets K times the signal.
    `with_condition`: return (loss, the condition [B, C]) for an auxiliary loss on it (the same loss: the
    model runs as condition + predict_noise, which is what one call of it does).
    """
    apply_fn = self.model.apply
    actions = batch["actions"]
    noise_key, t_key = jax.random.split(rng)
    # A key of its own, derived beside the split: the noise and timesteps stay what they were without it.
    rngs = {"dropout": jax.random.fold_in(rng, 1)} if train else {}
    observation = dict(images=batch["images"], tokens=batch["tokens"], token_mask=batch["token_mask"],
                       state=batch["state"])
    mask = batch["action_mask"]
    if noise_samples < 1:
      raise UserError(f"train.noise_samples={noise_samples} must be >= 1")
    split = noise_samples > 1 or with_condition
    condition = apply_fn({"params": params}, **observation, rngs=rngs, method="condition") if split else None
    untiled = condition
    if noise_samples > 1:
      tile = lambda x: jnp.tile(x, (noise_samples,) + (1,) * (x.ndim - 1))  # [K*B, ...], sample-major
      actions, condition, mask = tile(actions), tile(condition), tile(mask)
    noise = jax.random.normal(noise_key, actions.shape, jnp.float32)
    timesteps = jax.random.randint(t_key, (actions.shape[0],), 0, self.schedule.num_train_steps)
    noisy = q_sample(self.schedule, actions, noise, timesteps)
    if split:
      predicted = apply_fn({"params": params}, condition=condition, noisy_actions=noisy, timesteps=timesteps,
                           rngs=rngs, method="predict_noise")
    else:  # one call of the whole model
      predicted = apply_fn({"params": params}, **observation, noisy_actions=noisy, timesteps=timesteps, rngs=rngs)
    loss = epsilon_mse(predicted=predicted, target=noise, mask=mask)
    return (loss, untiled) if with_condition else loss

  def sample_actions(self, params, rng: jax.Array, *, images: UInt8[Array, "b v h w 3"],
                     tokens: Integer[Array, "b l"], token_mask: Bool[Array, "b l"],
                     state: Float[Array, "b s"]) -> Float[Array, "b horizon action"]:
    """Normalized action chunks [B, horizon, action_dim] in [-1, 1] (with clip_sample) for a batch of
    observations (not jitted: see jitted_sampler)."""
    model = self.model
    variables = {"params": params}
    condition = model.apply(variables, images=images, tokens=tokens, token_mask=token_mask, state=state,
                            method=model.condition)

    def denoise(x, t):
      return model.apply(variables, condition=condition, noisy_actions=x, timesteps=t, method=model.predict_noise)

    head = model.config.head
    shape = (images.shape[0], head.horizon, head.action_dim)
    return SAMPLERS[self.sampler](denoise, rng=rng, shape=shape, schedule=self.schedule,
                                  num_inference_steps=self.num_inference_steps, clip_sample=self.clip_sample)

  def jitted_sampler(self) -> Callable:
    """A jitted `(params, rng, *, images, tokens, token_mask, state) -> chunk [B, T, A]` (traces once per
    input shape)."""
    return jax.jit(lambda params, rng, **obs: self.sample_actions(params, rng, **obs))
