"""What the train step minimizes: the policy's denoising loss, and the recipe's wrappers around it.

An objective is `(params, batch, rng) -> (value to differentiate, loss to log)`. The product's objective is
the policy's epsilon loss itself; the broken original's "loss clipping" (loss *= 0.1 above 1000, the
seed's fix 2 removed it) is a wrapper that `configs/broken.py` selects through train.loss_scale_threshold,
so the product's step has no branch for it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.run_config import TrainConfig

Batch = dict[str, jax.Array]
Objective = Callable[[dict, Batch, jax.Array], tuple[jax.Array, jax.Array]]


def denoising(policy: DiffusionPolicy, *, noise_samples: int = 1) -> Objective:
  """The policy's training loss (with its dropout rng), `noise_samples` noised copies per encoding."""

  def objective(params, batch, rng):
    loss = policy.compute_loss(params, batch, rng, train=True, noise_samples=noise_samples)
    return loss, loss

  return objective


def original_loss_scaling(objective: Objective, *, threshold: float, factor: float) -> Objective:
  """The broken original: the loss (and so the gradient) scaled by `factor` whenever it exceeds `threshold`;
  the logged loss stays the unscaled one."""

  def scaled(params, batch, rng):
    value, loss = objective(params, batch, rng)
    return jnp.where(value > threshold, value * factor, value), loss

  return scaled


def for_recipe(policy: DiffusionPolicy, train: TrainConfig) -> Objective:
  """The objective a run's `train` section asks for."""
  objective = denoising(policy, noise_samples=train.noise_samples)
  if train.loss_scale_threshold is not None:
    objective = original_loss_scaling(objective, threshold=train.loss_scale_threshold,
                                      factor=train.loss_scale_factor)
  return objective
