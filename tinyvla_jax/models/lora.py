"""LoRA adapters in the parameter tree: which leaves they are, and folding them into the base weights.

A Dense with `lora` set (models/layers.py) holds, next to `kernel` [in, out] (and `bias`):
  lora_a [in, r]   (peft's lora_A.weight [r, in], transposed)
  lora_b [r, out]  (peft's lora_B.weight [out, r], transposed)
and computes x W + b + dropout(x) A B * alpha / r. Which backbones carry adapters is `model.finetune`
(models/config.py: FinetuneConfig); the optimizer trains only the adapters of a "lora" backbone
(training/optimizer.py).

`merge_lora` folds each adapter into its kernel, W + A B * alpha / r, and returns the params and config
of the same model without adapters: one matmul less per layer at inference, and the tree the exporter
(pretrained/hf_export.py) writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import VLAConfig

LORA_PARAMS = ("lora_a", "lora_b")


def is_adapter(path) -> bool:
  """Whether a leaf path (from jax.tree_util.tree_*_with_path) ends in a LoRA adapter matrix."""
  last = path[-1]
  return str(getattr(last, "key", last)) in LORA_PARAMS


def has_adapters(params) -> bool:
  return any(is_adapter(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0])


def merge_lora(params: dict, config: VLAConfig) -> tuple[dict, VLAConfig]:
  """-> (params with every adapter folded into its kernel and removed, the config without adapters).

  The merged model computes what the unmerged one does without dropout (evaluation), up to float32
  rounding: x (W + A B s) instead of x W + (x A) B s. Backbones that were "lora" become "full" in the
  returned config: the merged model has no adapters left to tell apart.
  """
  merged = dict(params)
  finetune = config.finetune
  for component in ("vision", "language"):
    lora = finetune.lora_for(component)
    if lora is None:
      if component in params and has_adapters(params[component]):
        raise UserError(f"params[{component!r}] holds LoRA adapters but model.finetune.{component}="
                         f"{finetune.mode(component)!r}: pass the config the params were trained with")
      continue
    if component not in params:
      raise UserError(f"model.finetune.{component}='lora' but the params have no {component!r} component")
    merged[component] = _merge_tree(params[component], lora.scaling, component)
  new_finetune = dataclasses.replace(
      finetune, **{c: "full" for c in ("vision", "language") if finetune.mode(c) == "lora"})
  return merged, dataclasses.replace(config, finetune=new_finetune)


def _merge_tree(tree: Any, scaling: float, where: str) -> Any:
  if not isinstance(tree, Mapping):
    return tree
  if "lora_a" in tree or "lora_b" in tree:
    if not {"kernel", "lora_a", "lora_b"} <= set(tree):
      raise UserError(f"{where}: a LoRA layer needs kernel, lora_a and lora_b; found {sorted(tree)}")
    kernel, a, b = (jnp.asarray(tree[k], jnp.float32) for k in ("kernel", "lora_a", "lora_b"))
    if a.shape != (kernel.shape[0], a.shape[1]) or b.shape != (a.shape[1], kernel.shape[1]):
      raise UserError(f"{where}: lora_a {a.shape} and lora_b {b.shape} do not fit kernel {kernel.shape}")
    out = {k: v for k, v in tree.items() if k not in LORA_PARAMS}
    out["kernel"] = kernel + jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST) * scaling
    return out
  return {k: _merge_tree(v, scaling, f"{where}/{k}") for k, v in tree.items()}
