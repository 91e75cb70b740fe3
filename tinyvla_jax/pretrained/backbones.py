"""Pretrained backbones in a run: `config.pretrained.{llm,vision}` folders -> model sizes and weights.

Two steps, both no-ops without folders:
  resolve_config(config)          at train start (and in `summary`), before the model is built: a copy
                                  of the run config whose model.language / model.vision come from the
                                  folders' config.json (so any Pythia size loads; the preset supplies the
                                  rest, e.g. select_layer and the head) and whose model.image_token_id is
                                  the LLM tokenizer's placeholder id (data/hf_tokenizer.py).
  load_pretrained(params, config) after the random init: the imported weights replace the initialized
                                  ones leaf by leaf; what no folder provides (projector, head, LoRA
                                  adapters, a backbone without a folder) keeps its init.
The resolved config is what the checkpoint stores, so evaluation rebuilds the model without the folders;
the checkpoint holds the JAX weights from then on.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.models.lora import is_adapter
from tinyvla_jax.pretrained import hf_folder


def pretrained_folders(config) -> tuple[str | None, str | None]:
  """(llm folder, vision folder) from `config.pretrained`; a config without the section has none."""
  pre = config.get("pretrained") if hasattr(config, "get") else None
  if not pre:
    return None, None
  return pre.get("llm") or None, pre.get("vision") or None


def resolve_config(config):
  """The run config with the model sections the pretrained folders fix; the same object without folders
  (where the image placeholder id follows `data.tokenizer`, see _resolve_tokenizer)."""
  llm, vision = pretrained_folders(config)
  if not llm and not vision:
    return _resolve_tokenizer(config)
  from tinyvla_jax.data.tokenizer import make_tokenizer  # data imports models; keep this edge one-way at import

  preset = VLAConfig.from_dict(config.model.to_dict())  # typed, with the defaults a preset left out
  config = copy.deepcopy(config)
  if llm:
    language = hf_folder.language_config(llm)
    _update(config.model.language, dataclasses.asdict(language))
    tokenizer = make_tokenizer(config)
    if tokenizer.image_token_id >= language.vocab_size:
      raise UserError(f"{llm}: the tokenizer uses every id of the LLM's {language.vocab_size}-row embedding, "
                       f"leaving none for the image placeholder: it needs >= {tokenizer.image_token_id + 1} rows "
                       "(Pythia pads 50277 ids to 50304; data/hf_tokenizer.py)")
    config.model.image_token_id = tokenizer.image_token_id
  if vision:
    if preset.vision.stem != "patch":
      raise UserError(f"model.vision.stem={preset.vision.stem!r} has no pretrained weights in {vision}: "
                       "use --config.model.vision.stem=patch with pretrained.vision")
    vis = hf_folder.vision_config(vision, select_layer=preset.vision.select_layer)
    _update(config.model.vision, dataclasses.asdict(vis))
  return config


def _resolve_tokenizer(config):
  """A from-scratch LLM with `data.tokenizer`: model.image_token_id is that tokenizer's placeholder (the
  presets already agree with their default tokenizer: then this returns the same object)."""
  from tinyvla_jax.data.tokenizer import make_tokenizer

  if not hasattr(config, "get") or config.get("data") is None or config.get("model") is None:
    return config
  tokenizer = make_tokenizer(config)
  vocab = config.model.language.get("vocab_size")
  if vocab is not None and tokenizer.image_token_id >= vocab:
    raise UserError(f"data.tokenizer={config.data.get('tokenizer')!r} needs {tokenizer.image_token_id + 1} embedding rows "
                     f"(its image placeholder is id {tokenizer.image_token_id}) but model.language.vocab_size={vocab}: "
                     f"set --config.model.language.vocab_size={tokenizer.image_token_id + 1}")
  if config.model.get("image_token_id") == tokenizer.image_token_id:
    return config
  config = copy.deepcopy(config)
  config.model.image_token_id = tokenizer.image_token_id
  return config


def _update(section, values: dict[str, Any]) -> None:
  """Sets every field of a model section; a preset that left a field to its default gains the key."""
  with section.unlocked():
    for key, value in values.items():
      section[key] = value


def load_pretrained(params: dict, config) -> dict:
  """Replaces the backbones' initialized weights by the folders' (a resolved config is required)."""
  llm, vision = pretrained_folders(config)
  model = VLAConfig.from_dict(config.model.to_dict())
  for component, folder in (("language", llm), ("vision", vision)):
    if not folder and model.finetune.mode(component) != "full":
      logging.warning("model.finetune.%s=%r without pretrained.%s: that backbone stays at its random init",
                      component, model.finetune.mode(component), "llm" if component == "language" else "vision")
  if not llm and not vision:
    return params
  params = dict(params)
  if llm:
    language, imported = hf_folder.load_language(llm)
    _check_resolved(language, model.language, "model.language", llm)
    params["language"] = graft(params["language"], imported, where=f"{llm} -> params['language']")
  if vision:
    vis, imported = hf_folder.load_vision(vision, select_layer=model.vision.select_layer)
    _check_resolved(vis, model.vision, "model.vision", vision)
    params["vision"] = graft(params["vision"], imported, where=f"{vision} -> params['vision']")
  return params


def _check_resolved(from_folder, in_model, prefix: str, folder: str) -> None:
  if from_folder != in_model:
    diffs = [f"{prefix}.{f.name}={getattr(in_model, f.name)!r} vs {getattr(from_folder, f.name)!r}"
             for f in dataclasses.fields(from_folder) if getattr(in_model, f.name) != getattr(from_folder, f.name)]
    raise UserError(f"{folder}/config.json differs from the model config ({diffs[0]}): "
                     "pass the config through pretrained.backbones.resolve_config first")


def graft(initialized: dict, imported: dict, *, where: str) -> dict:
  """`initialized` with every leaf of `imported` put in its place (same path, same shape, float32).

  Every leaf of `initialized` except LoRA adapters must be provided: a backbone is loaded whole or not at all.
  """
  init_leaves = dict(jax.tree_util.tree_flatten_with_path(initialized)[0])
  new = {}
  for path, value in jax.tree_util.tree_flatten_with_path(imported)[0]:
    name = jax.tree_util.keystr(path)
    if path not in init_leaves:
      raise UserError(f"{where}: the checkpoint provides {name}, which the model does not have")
    value = np.asarray(value, np.float32)
    if value.shape != init_leaves[path].shape:
      raise UserError(f"{where}: {name} has shape {value.shape} in the checkpoint, {init_leaves[path].shape} "
                       "in the model")
    new[path] = jnp.asarray(value)
  missing = [p for p in init_leaves if p not in new and not is_adapter(p)]
  if missing:
    raise UserError(f"{where}: the checkpoint does not provide {jax.tree_util.keystr(missing[0])} "
                     f"({len(missing)} parameter(s) in all)")
  return jax.tree_util.tree_map_with_path(lambda path, leaf: new.get(path, leaf), initialized)
