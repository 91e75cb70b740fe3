"""Training recipes shared by the config files: the seed's fixed one and the broken original.

Config files in configs/ are thin: they pick a model preset and a recipe. Keeping the recipes here
makes `configs/broken.py` a short, reviewable diff against `configs/fixed.py`.
"""

from __future__ import annotations

import ml_collections


def diffusion_config() -> ml_collections.ConfigDict:
  # TinyVLA / Diffusion Policy: DDPM training over 100 steps, DDIM sampling with 10.
  return ml_collections.ConfigDict(dict(
      num_train_steps=100, beta_schedule="squaredcos_cap_v2", num_inference_steps=10, sampler="ddim",
      clip_sample=True))


def fixed_recipe(model: ml_collections.ConfigDict, *, preset: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.model = model
  c.diffusion = diffusion_config()
  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.01, schedule="cosine", warmup_steps=0,
      grad_clip_norm=1.0))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=4, epochs=10, seed=0,
      # The seed's fix 2: no loss clipping. The broken original scaled the loss by 0.1 above 1000.
      loss_scale_threshold=ml_collections.config_dict.placeholder(float), loss_scale_factor=0.1,
      skip_nonfinite=True))
  return c
