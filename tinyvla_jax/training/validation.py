"""Validation: the held-out denoising loss, and whether the policy uses what it observes.

Condition sensitivity (logged at every validation as `sensitivity/{images,state,instruction}`): the
relative increase of the validation loss when one input is shuffled across the batch (rolled by one row,
so every example gets another example's images, state or prompt) while the noise, the timesteps and the
other inputs stay the same. 0 means the policy ignores that input. A policy that cannot tell where the
object is shows ~0 for images (the failure this metric was made to catch: a mean-pooled condition that
averaged the scene away gave 0.0000 while the state gave 0.19). Validation batches are drawn across
episodes (a fixed shuffle), so a rolled row comes from another demonstration, not the next time step.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tinyvla_jax.data.loader import ChunkLoader
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy

# What is shuffled for each sensitivity figure: the batch keys that make up that input.
SHUFFLED = {"images": ("images",), "state": ("state",), "instruction": ("tokens", "token_mask")}


def make_validation_step(policy: DiffusionPolicy) -> Callable:
  """(params, batch, rng) -> {"loss": scalar, "images"|"state"|"instruction": loss with that input rolled,
  "weight": real action steps, "rows": examples with any}. The loss is the policy's, without dropout, with a
  fixed rng per batch: comparable across epochs."""

  def step(params, batch, rng):
    loss = lambda b: policy.compute_loss(params, b, rng)
    mask = batch["action_mask"]
    # The weight and row count of the whole (global) batch: on several processes no host sees all of it.
    out = {"loss": loss(batch), "weight": jnp.sum(mask, dtype=jnp.float32),
           "rows": jnp.sum(jnp.any(mask, axis=1), dtype=jnp.int32)}
    # Row i gets row i-1's input, row 0 the last real row's: a roll by one over the real rows, which come
    # first (a padded batch's masked padding rows, data/loader.py, come last and stay out of the shuffle).
    index = jnp.arange(mask.shape[0])
    previous = jnp.where(index == 0, out["rows"] - 1, index - 1)
    for name, keys in SHUFFLED.items():
      out[name] = loss({k: (jnp.take(v, previous, axis=0) if k in keys else v) for k, v in batch.items()})
    return out

  return step


def validate(step: Callable, params, loader: ChunkLoader | None, *, seed: int,
             place: Callable | None = None) -> dict[str, float]:
  """{"val_loss", "sensitivity/images", "sensitivity/state", "sensitivity/instruction"} over the loader's
  batches (weights: real action steps); {} without a loader. Batches of one example have nothing to
  shuffle with and count toward the loss only. `place(batch, rng) -> (batch, rng)` puts this process's
  part of a batch and the rng on the run's mesh (training/loop.py); every process gets the same figures,
  and a short last batch padded for the mesh (data/loader.py) the same as unpadded."""
  if loader is None:
    return {}
  sums = {k: 0.0 for k in ("loss", "base", *SHUFFLED)}
  weight_all = 0.0
  for i, batch in enumerate(loader.batches(0)):
    rng = jax.random.fold_in(jax.random.key(seed + 1), i)
    if place is not None:
      batch, rng = place(batch, rng)
    out = jax.device_get(step(params, batch, rng))
    w = float(out["weight"])
    sums["loss"] += float(out["loss"]) * w
    weight_all += w
    if int(out["rows"]) > 1:
      sums["base"] += float(out["loss"]) * w
      for name in SHUFFLED:
        sums[name] += (float(out[name]) - float(out["loss"])) * w
  result = {"val_loss": sums["loss"] / max(weight_all, 1e-9)}
  if sums["base"] > 0:
    result.update({f"sensitivity/{name}": sums[name] / sums["base"] for name in SHUFFLED})
  return result
