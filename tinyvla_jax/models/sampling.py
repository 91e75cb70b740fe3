"""Action sampling for UnifiedTinyVLAModel: encode the observation once, then denoise in one scan.

    sample = make_action_sampler(model, schedule=make_schedule(), num_inference_steps=10)
    chunk = sample(params, rng, images=..., tokens=..., token_mask=..., state=...)  # [B, T, A] in [-1, 1]

The vision tower and the LLM run once per chunk; only the U-Net runs per denoising step (the
condition is a closure constant inside the scan). The returned function is jitted and traces once
per input shape.
"""

from __future__ import annotations

from typing import Callable

import jax

from tinyvla_jax.diffusion.samplers import ddim_sample, ddpm_sample
from tinyvla_jax.diffusion.schedule import NoiseSchedule
from tinyvla_jax.errors import UserError

SAMPLERS = {"ddim": ddim_sample, "ddpm": ddpm_sample}


def sample_actions(model, params, rng: jax.Array, *, images, tokens, token_mask, state, schedule: NoiseSchedule,
                   num_inference_steps: int = 10, sampler: str = "ddim", clip_sample: bool = True) -> jax.Array:
  """Normalized action chunk [B, horizon, action_dim] for a batch of observations (not jitted)."""
  if sampler not in SAMPLERS:
    raise UserError(f"diffusion.sampler={sampler!r} must be one of {sorted(SAMPLERS)}")
  variables = {"params": params}
  condition = model.apply(variables, images=images, tokens=tokens, token_mask=token_mask, state=state,
                          method=model.condition)

  def denoise(x, t):
    return model.apply(variables, condition=condition, noisy_actions=x, timesteps=t, method=model.predict_noise)

  head = model.config.head
  shape = (images.shape[0], head.horizon, head.action_dim)
  return SAMPLERS[sampler](denoise, rng=rng, shape=shape, schedule=schedule,
                           num_inference_steps=num_inference_steps, clip_sample=clip_sample)


def make_action_sampler(model, *, schedule: NoiseSchedule, num_inference_steps: int = 10, sampler: str = "ddim",
                        clip_sample: bool = True) -> Callable:
  """A jitted `(params, rng, *, images, tokens, token_mask, state) -> chunk [B, T, A]`."""
  if sampler not in SAMPLERS:
    raise UserError(f"diffusion.sampler={sampler!r} must be one of {sorted(SAMPLERS)}")

  def fn(params, rng, *, images, tokens, token_mask, state):
    return sample_actions(model, params, rng, images=images, tokens=tokens, token_mask=token_mask, state=state,
                          schedule=schedule, num_inference_steps=num_inference_steps, sampler=sampler,
                          clip_sample=clip_sample)

  return jax.jit(fn)
