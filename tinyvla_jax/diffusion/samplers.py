"""DDIM and DDPM reverse steps (epsilon prediction) and full sampling loops.

Each step follows diffusers 0.42 `DDIMScheduler.step` / `DDPMScheduler.step` with "leading" timestep
spacing, so the previous timestep is always t - num_train_steps // num_inference_steps and a negative
one means "before the chain", whose abar is 1 (diffusers' set_alpha_to_one=True / `self.one`).

Timesteps may be traced int32 scalars: the branches diffusers takes in Python (prev_t >= 0, t > 0)
are `jnp.where`s here, so one compiled step serves the whole loop.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from tinyvla_jax.diffusion.schedule import NoiseSchedule, inference_timesteps
from tinyvla_jax.errors import UserError

# denoise_fn(x_t [B, T, A], t int32 [B]) -> predicted epsilon [B, T, A]
DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


class StepOutput(NamedTuple):
  prev_sample: jax.Array  # x_{t_prev} [B, T, A]
  pred_original_sample: jax.Array  # x0 estimate [B, T, A], clipped when clip_sample


def _check_step_args(schedule: NoiseSchedule, model_output, timestep, sample, num_inference_steps) -> None:
  if model_output.shape != sample.shape:
    raise UserError(f"model_output {model_output.shape} and sample {sample.shape} must have the same shape")
  if jnp.ndim(timestep) != 0:
    raise UserError(f"timestep must be a scalar, got shape {jnp.shape(timestep)}")
  if not 1 <= num_inference_steps <= schedule.num_train_steps:
    raise UserError(f"num_inference_steps must be in [1, {schedule.num_train_steps}], got {num_inference_steps}")


def _alphas_at(schedule: NoiseSchedule, timestep, num_inference_steps: int) -> tuple[jax.Array, jax.Array]:
  """abar_t and abar_{t_prev}; abar_{t_prev} = 1 past the end of the chain."""
  timestep = jnp.asarray(timestep, jnp.int32)
  prev_timestep = timestep - schedule.num_train_steps // num_inference_steps
  abar_t = schedule.alphas_cumprod[timestep]
  # Clamp the index so the gather stays in range; the where then discards it for prev < 0.
  abar_prev = jnp.where(prev_timestep >= 0, schedule.alphas_cumprod[jnp.maximum(prev_timestep, 0)], 1.0)
  return abar_t, abar_prev.astype(abar_t.dtype)


def _predict_x0(*, sample, model_output, abar_t, clip_sample: bool, clip_range: float) -> jax.Array:
  x0 = (sample - jnp.sqrt(1 - abar_t) * model_output) / jnp.sqrt(abar_t)
  return jnp.clip(x0, -clip_range, clip_range) if clip_sample else x0


def ddim_step(
    schedule: NoiseSchedule,
    *,
    model_output: jax.Array,
    timestep,
    sample: jax.Array,
    num_inference_steps: int,
    eta: float = 0.0,
    clip_sample: bool = True,
    clip_range: float = 1.0,
    noise: jax.Array | None = None,
) -> StepOutput:
  """One DDIM step x_t -> x_{t_prev} (DDIM paper eqs. 12 and 16).

  model_output (epsilon), sample, noise: [B, T, A]; timestep: int scalar (may be traced).
  `noise` is needed only when eta > 0. Like diffusers with use_clipped_model_output=False, the
  direction term uses the raw epsilon even when x0 was clipped.
  """
  _check_step_args(schedule, model_output, timestep, sample, num_inference_steps)
  if eta > 0 and noise is None:
    raise UserError("ddim_step with eta > 0 needs `noise` [B, T, A]")
  abar_t, abar_prev = _alphas_at(schedule, timestep, num_inference_steps)
  x0 = _predict_x0(
      sample=sample, model_output=model_output, abar_t=abar_t, clip_sample=clip_sample, clip_range=clip_range
  )
  variance = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
  std_dev = eta * jnp.sqrt(variance)
  direction = jnp.sqrt(1 - abar_prev - std_dev**2) * model_output
  prev_sample = jnp.sqrt(abar_prev) * x0 + direction
  if eta > 0:
    prev_sample = prev_sample + std_dev * noise
  return StepOutput(prev_sample=prev_sample, pred_original_sample=x0)


def ddpm_step(
    schedule: NoiseSchedule,
    *,
    model_output: jax.Array,
    timestep,
    sample: jax.Array,
    num_inference_steps: int,
    noise: jax.Array,
    clip_sample: bool = True,
    clip_range: float = 1.0,
) -> StepOutput:
  """One ancestral DDPM step x_t -> x_{t_prev} (DDPM paper eqs. 6-7), variance "fixed_small".

  model_output (epsilon), sample, noise: [B, T, A]; timestep: int scalar (may be traced).
  `noise` is ignored at t = 0, where the step returns the posterior mean, as diffusers does.
  """
  _check_step_args(schedule, model_output, timestep, sample, num_inference_steps)
  if noise.shape != sample.shape:
    raise UserError(f"noise {noise.shape} must match sample {sample.shape}")
  abar_t, abar_prev = _alphas_at(schedule, timestep, num_inference_steps)
  # With skipped steps the one-step alpha is the ratio of cumulative products, not schedule.alphas[t].
  alpha_t = abar_t / abar_prev
  beta_t = 1 - alpha_t
  x0 = _predict_x0(
      sample=sample, model_output=model_output, abar_t=abar_t, clip_sample=clip_sample, clip_range=clip_range
  )
  x0_coeff = jnp.sqrt(abar_prev) * beta_t / (1 - abar_t)
  sample_coeff = jnp.sqrt(alpha_t) * (1 - abar_prev) / (1 - abar_t)
  mean = x0_coeff * x0 + sample_coeff * sample
  # diffusers clamps before its log-variance variants; "fixed_small" inherits the clamp.
  variance = jnp.maximum((1 - abar_prev) / (1 - abar_t) * beta_t, 1e-20)
  prev_sample = jnp.where(jnp.asarray(timestep) > 0, mean + jnp.sqrt(variance) * noise, mean)
  return StepOutput(prev_sample=prev_sample, pred_original_sample=x0)


def _check_sample_args(*, shape, schedule: NoiseSchedule, num_inference_steps: int) -> None:
  if len(shape) != 3:
    raise UserError(f"shape must be (B, T, A), got {shape}")
  if not 1 <= num_inference_steps <= schedule.num_train_steps:
    raise UserError(f"num_inference_steps must be in [1, {schedule.num_train_steps}], got {num_inference_steps}")


def _denoise(denoise_fn: DenoiseFn, x: jax.Array, timestep: jax.Array) -> jax.Array:
  t = jnp.full((x.shape[0],), timestep, jnp.int32)
  eps = denoise_fn(x, t)
  if eps.shape != x.shape:
    raise UserError(f"denoise_fn returned {eps.shape}, expected {x.shape}")
  return eps.astype(x.dtype)


def ddim_sample(
    denoise_fn: DenoiseFn,
    *,
    rng: jax.Array,
    shape: tuple[int, int, int],
    schedule: NoiseSchedule,
    num_inference_steps: int = 10,
    clip_sample: bool = True,
) -> jax.Array:
  """Deterministic DDIM (eta = 0) from N(0, I) noise. Returns the final x0 estimate [B, T, A].

  `rng` is a PRNG key (raw uint32 or typed). One `lax.scan` over the timesteps, so the denoiser
  is traced once however many steps are taken; `shape` and `num_inference_steps` must be static.
  """
  _check_sample_args(shape=shape, schedule=schedule, num_inference_steps=num_inference_steps)
  x_T = jax.random.normal(rng, shape, jnp.float32)
  return ddim_sample_from(
      denoise_fn, x_T=x_T, schedule=schedule, num_inference_steps=num_inference_steps, clip_sample=clip_sample
  )


def ddim_sample_from(
    denoise_fn: DenoiseFn,
    *,
    x_T: jax.Array,
    schedule: NoiseSchedule,
    num_inference_steps: int = 10,
    clip_sample: bool = True,
) -> jax.Array:
  """`ddim_sample` from a given starting sample x_T [B, T, A] (DDIM is deterministic given x_T)."""
  _check_sample_args(shape=x_T.shape, schedule=schedule, num_inference_steps=num_inference_steps)
  timesteps = jnp.asarray(inference_timesteps(schedule.num_train_steps, num_inference_steps))

  def body(carry, t):
    x, _ = carry
    out = ddim_step(
        schedule,
        model_output=_denoise(denoise_fn, x, t),
        timestep=t,
        sample=x,
        num_inference_steps=num_inference_steps,
        clip_sample=clip_sample,
    )
    return (out.prev_sample, out.pred_original_sample), None

  # At t = 0 the step's prev_sample equals its clipped x0 estimate (abar_prev = 1); return the
  # estimate itself so the [-1, 1] bound holds by construction, not by float cancellation.
  (_, x0), _ = jax.lax.scan(body, (x_T, jnp.zeros_like(x_T)), timesteps)
  return x0


def ddpm_sample(
    denoise_fn: DenoiseFn,
    *,
    rng: jax.Array,
    shape: tuple[int, int, int],
    schedule: NoiseSchedule,
    num_inference_steps: int = 10,
    clip_sample: bool = True,
) -> jax.Array:
  """Ancestral DDPM sampling from N(0, I) noise. Returns the final x0 estimate [B, T, A].

  Same contract as `ddim_sample`; each step draws fresh noise from its own key split off `rng`.
  """
  _check_sample_args(shape=shape, schedule=schedule, num_inference_steps=num_inference_steps)
  timesteps = jnp.asarray(inference_timesteps(schedule.num_train_steps, num_inference_steps))
  init_rng, steps_rng = jax.random.split(rng)
  x_T = jax.random.normal(init_rng, shape, jnp.float32)
  step_rngs = jax.random.split(steps_rng, num_inference_steps)

  def body(carry, inputs):
    x, _ = carry
    t, step_rng = inputs
    out = ddpm_step(
        schedule,
        model_output=_denoise(denoise_fn, x, t),
        timestep=t,
        sample=x,
        num_inference_steps=num_inference_steps,
        noise=jax.random.normal(step_rng, shape, jnp.float32),
        clip_sample=clip_sample,
    )
    return (out.prev_sample, out.pred_original_sample), None

  (_, x0), _ = jax.lax.scan(body, (x_T, jnp.zeros_like(x_T)), (timesteps, step_rngs))
  return x0


# `diffusion.sampler` names the sampling loop (diffusion/config.py).
SAMPLERS = {"ddim": ddim_sample, "ddpm": ddpm_sample}
