"""Diffusion for the action head: noise schedule, DDPM/DDIM samplers, and the training loss."""

from tinyvla_jax.diffusion.loss import epsilon_mse
from tinyvla_jax.diffusion.samplers import (
    StepOutput,
    ddim_sample,
    ddim_sample_from,
    ddim_step,
    ddpm_sample,
    ddpm_step,
)
from tinyvla_jax.diffusion.schedule import NoiseSchedule, inference_timesteps, make_schedule, q_sample

__all__ = [
    "NoiseSchedule",
    "StepOutput",
    "ddim_sample",
    "ddim_sample_from",
    "ddim_step",
    "ddpm_sample",
    "ddpm_step",
    "epsilon_mse",
    "inference_timesteps",
    "make_schedule",
    "q_sample",
]
