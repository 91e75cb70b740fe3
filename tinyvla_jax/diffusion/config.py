"""The `diffusion` section of a run config, typed: the noise schedule and the sampler the policy uses.

TinyVLA / Diffusion Policy: DDPM training over 100 steps, DDIM sampling with 10.
"""

from __future__ import annotations

import dataclasses

from tinyvla_jax import checks
from tinyvla_jax.diffusion.samplers import SAMPLERS
from tinyvla_jax.diffusion.schedule import BETA_SCHEDULES


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
  num_train_steps: int = 100
  beta_schedule: str = "squaredcos_cap_v2"
  num_inference_steps: int = 10  # DDIM steps (DDPM always takes num_train_steps)
  sampler: str = "ddim"
  clip_sample: bool = True  # clip the predicted clean chunk to [-1, 1] (the data is min-max normalized)

  def validate(self) -> "DiffusionConfig":
    checks.int_at_least("diffusion.num_train_steps", self.num_train_steps, 1)
    checks.one_of("diffusion.beta_schedule", self.beta_schedule, BETA_SCHEDULES)
    checks.int_at_least("diffusion.num_inference_steps", self.num_inference_steps, 1)
    checks.require("diffusion.num_inference_steps", self.num_inference_steps,
                   self.num_inference_steps <= self.num_train_steps,
                   f"<= diffusion.num_train_steps={self.num_train_steps}")
    checks.one_of("diffusion.sampler", self.sampler, SAMPLERS)
    return self
