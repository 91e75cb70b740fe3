"""DDPM noise schedule, the forward process q(x_t | x_0), and inference timestep spacing.

The numbers match diffusers 0.42 (`DDPMScheduler` / `DDIMScheduler`) bit for bit on CPU, so a
checkpoint trained here samples the same way under diffusers and the reverse. The schedule is built
on the host with NumPy (it is a constant) and stored as float32 device arrays.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from tinyvla_jax.errors import UserError

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")


@flax.struct.dataclass
class NoiseSchedule:
  """Per-train-step noise constants, all float32 [num_train_steps].

  alphas_cumprod[t] is abar_t: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
  `num_train_steps` is static (a Python int) so step arithmetic stays static under jit.
  """

  betas: jax.Array
  alphas: jax.Array
  alphas_cumprod: jax.Array
  num_train_steps: int = flax.struct.field(pytree_node=False)


def _cosine_betas(num_train_steps: int, max_beta: float = 0.999) -> np.ndarray:
  """Glide's cosine schedule ("squaredcos_cap_v2"): betas in float64 Python math, as diffusers."""

  def alpha_bar(t: float) -> float:
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

  betas = [
      min(1 - alpha_bar((i + 1) / num_train_steps) / alpha_bar(i / num_train_steps), max_beta)
      for i in range(num_train_steps)
  ]
  return np.asarray(betas, dtype=np.float64).astype(np.float32)


def _torch_linspace_f32(start: float, end: float, num: int) -> np.ndarray:
  """torch.linspace(start, end, num, dtype=float32), reproduced exactly.

  torch takes a float32 step and fills the first half as start + step * i and the second half as
  end - step * (num - 1 - i), each with one rounding (a fused multiply-add). NumPy's float64
  linspace cast to float32 differs in the last bit at ~20% of entries, so we mirror torch instead.
  """
  start32, end32 = np.float32(start), np.float32(end)
  if num == 1:
    return np.asarray([start32], dtype=np.float32)
  step = np.float64((end32 - start32) / np.float32(num - 1))
  i = np.arange(num, dtype=np.float64)
  # A float32 x float32 product is exact in float64, so one final cast acts as the FMA's one rounding.
  values = np.where(i < num // 2, np.float64(start32) + step * i, np.float64(end32) - step * (num - 1 - i))
  return values.astype(np.float32)


def make_schedule(
    *,
    num_train_steps: int = 100,
    beta_schedule: str = "squaredcos_cap_v2",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> NoiseSchedule:
  """Builds the schedule diffusers builds for the same arguments.

  beta_start / beta_end are used only by "linear".
  """
  if num_train_steps < 1:
    raise UserError(f"num_train_steps must be >= 1, got {num_train_steps}")
  if beta_schedule == "squaredcos_cap_v2":
    betas = _cosine_betas(num_train_steps)
  elif beta_schedule == "linear":
    betas = _torch_linspace_f32(beta_start, beta_end, num_train_steps)
  else:
    raise UserError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
  alphas = (np.float32(1.0) - betas).astype(np.float32)
  # torch's CPU cumprod accumulates float32 inputs in float64 and rounds each output once; a float32
  # running product drifts from it by 1 ulp at most entries (92 of 100 for the cosine schedule).
  alphas_cumprod = np.cumprod(alphas.astype(np.float64)).astype(np.float32)
  return NoiseSchedule(
      betas=jnp.asarray(betas),
      alphas=jnp.asarray(alphas),
      alphas_cumprod=jnp.asarray(alphas_cumprod),
      num_train_steps=num_train_steps,
  )


def q_sample(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
  """Forward diffusion: x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * noise.

  x0, noise: [B, T, A]; timesteps: int [B] in [0, num_train_steps). Returns x_t [B, T, A].
  """
  if x0.ndim != 3 or x0.shape != noise.shape:
    raise UserError(f"x0 and noise must both be [B, T, A], got {x0.shape} and {noise.shape}")
  if timesteps.shape != (x0.shape[0],) or not jnp.issubdtype(timesteps.dtype, jnp.integer):
    raise UserError(f"timesteps must be int [B={x0.shape[0]}], got {timesteps.dtype}{list(timesteps.shape)}")
  abar = schedule.alphas_cumprod[timesteps].astype(x0.dtype)[:, None, None]
  return jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * noise


def inference_timesteps(num_train_steps: int, num_inference_steps: int) -> np.ndarray:
  """diffusers' "leading" spacing, descending: 100 / 10 -> [90, 80, ..., 0]. int32 [num_inference_steps].

  A NumPy array because it sets the length of the sampling loop, which must be static.
  """
  if not 1 <= num_inference_steps <= num_train_steps:
    raise UserError(f"num_inference_steps must be in [1, {num_train_steps}], got {num_inference_steps}")
  step_ratio = num_train_steps // num_inference_steps
  return (np.arange(num_inference_steps, dtype=np.int32) * step_ratio)[::-1].copy()
