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


def with_privileged_readout(policy: DiffusionPolicy, *, noise_samples: int, weight: float) -> Objective:
  """The denoising loss plus `weight` x the MSE of the condition's linear read-out of the batch's "privileged"
  targets (MetaWorld: the object's and goal's positions, standardized per task; sim/privileged.py). The
  denoising loss alone barely rewards a condition that says where small objects are (for most steps the hand's
  state and motion predict the next actions), and training was measured to drop position information the
  random initialization had; this term asks for it directly. The logged loss stays the denoising loss."""

  def objective(params, batch, rng):
    loss, condition = policy.compute_loss(params, batch, rng, train=True, noise_samples=noise_samples,
                                          with_condition=True)
    predicted = policy.model.apply({"params": params}, condition=condition, method="predict_privileged")
    readout = jnp.mean(jnp.square(predicted - batch["privileged"].astype(jnp.float32)))
    return loss + weight * readout, loss

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
  if train.privileged_weight > 0:
    objective = with_privileged_readout(policy, noise_samples=train.noise_samples, weight=train.privileged_weight)
  else:
    objective = denoising(policy, noise_samples=train.noise_samples)
  if train.loss_scale_threshold is not None:
    objective = original_loss_scaling(objective, threshold=train.loss_scale_threshold,
                                      factor=train.loss_scale_factor)
  return objective
