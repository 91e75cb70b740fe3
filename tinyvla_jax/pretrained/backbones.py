"""Pretrained backbones in a run: `pretrained.{llm,vision}` folders -> model sizes and weights.

Two steps, both no-ops without folders (run_config.with_backbones applies the first to a RunConfig):
  resolve_model(model, tokenizer=, llm=, vision=)  at train start (and in `summary`), before the model is
                                  built: the model config whose language / vision sections come from the
                                  folders' config.json (so any Pythia size loads; the preset supplies the
                                  rest, e.g. select_layer and the head) and whose image_token_id is the
                                  tokenizer's placeholder id (data/hf_tokenizer.py).
  load_pretrained(params, model, llm=, vision=)  after the random init: the imported weights replace the
                                  initialized ones leaf by leaf; what no folder provides (projector, head,
                                  LoRA adapters, a backbone without a folder) keeps its init.
The resolved config is what the checkpoint stores, so evaluation rebuilds the model without the folders;
the checkpoint holds the JAX weights from then on.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.models.lora import is_adapter
from tinyvla_jax.pretrained import hf_folder


def resolve_model(model: VLAConfig, *, tokenizer, llm: str | None = None, vision: str | None = None) -> VLAConfig:
  """The model config with what the pretrained folders fix: model.language / model.vision from their
  config.json, and model.image_token_id = the run tokenizer's image placeholder (with no LLM folder, the
  placeholder of `data.tokenizer`; the presets already agree with their default tokenizer)."""
  if llm:
    language = hf_folder.language_config(llm)
    if tokenizer.image_token_id >= language.vocab_size:
      raise UserError(f"{llm}: the tokenizer uses every id of the LLM's {language.vocab_size}-row embedding, "
                       f"leaving none for the image placeholder: it needs >= {tokenizer.image_token_id + 1} rows "
                       "(Pythia pads 50277 ids to 50304; data/hf_tokenizer.py)")
    model = dataclasses.replace(model, language=language)
  elif tokenizer.image_token_id >= model.language.vocab_size:
    raise UserError(f"the tokenizer (data.tokenizer) needs {tokenizer.image_token_id + 1} embedding rows (its image "
                     f"placeholder is id {tokenizer.image_token_id}) but model.language.vocab_size="
                     f"{model.language.vocab_size}: set --config.model.language.vocab_size={tokenizer.image_token_id + 1}")
  if vision:
    if model.vision.stem != "patch":
      raise UserError(f"model.vision.stem={model.vision.stem!r} has no pretrained weights in {vision}: "
                       "use --config.model.vision.stem=patch with pretrained.vision")
    model = dataclasses.replace(model, vision=hf_folder.vision_config(vision, select_layer=model.vision.select_layer))
  if model.image_token_id != tokenizer.image_token_id:
    model = dataclasses.replace(model, image_token_id=tokenizer.image_token_id)
  return model.validate()


def load_pretrained(params: dict, model: VLAConfig, *, llm: str | None = None, vision: str | None = None) -> dict:
  """Replaces the backbones' initialized weights by the folders' (`model` resolved by resolve_model)."""
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
                     "pass the model config through pretrained.backbones.resolve_model first")


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
