"""Hugging Face model folders on disk -> our configs and params (hf_import.py does the mapping).

A folder is what transformers' `save_pretrained` writes:
  config.json
  model.safetensors                                  one file, or sharded:
  model.safetensors.index.json + model-0000i-of-0000n.safetensors   ({"weight_map": {tensor: file}})
  tokenizer.json                                     (an LLM's; read by data/hf_tokenizer.py)
Tensors are read lazily with safetensors' numpy API (no torch), so the text tower of a full CLIP folder
is never loaded, and any float dtype (float16, bfloat16) is cast to float32 on read.

Every problem is one ValueError line naming the folder and, where it applies, the file and the tensor.
safetensors is an optional dependency: `pip install 'tinyvla_jax[pretrained]'`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from tinyvla_jax.errors import UserError
from tinyvla_jax.extras import require
from tinyvla_jax.models.config import LanguageConfig, VisionConfig
from tinyvla_jax.pretrained import hf_import

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
# Written by our exporter (hf_export.py) into a vision folder that it cut at the feature layer: the
# folder's last layer is then the one to read, whatever the preset's select_layer says.
SELECT_LAYER_KEY = "tinyvla_select_layer"


def read_config(folder: str) -> dict[str, Any]:
  if not os.path.isdir(folder):
    raise UserError(f"pretrained folder {folder!r} does not exist (expected a Hugging Face model folder)")
  path = os.path.join(folder, CONFIG)
  if not os.path.isfile(path):
    raise UserError(f"{path} not found: a Hugging Face model folder has a config.json beside its weights")
  try:
    with open(path) as f:
      cfg = json.load(f)
  except (OSError, json.JSONDecodeError) as error:
    raise UserError(f"{path} is not readable JSON ({error})") from None
  if not isinstance(cfg, dict):
    raise UserError(f"{path} must hold a JSON object, got {type(cfg).__name__}")
  return cfg


class TensorFolder(Mapping):
  """The folder's tensors by name, read on access as float32 numpy arrays; `locate(name)` is the file."""

  def __init__(self, folder: str):
    safetensors = require("safetensors")
    self.folder = folder
    files = _weight_files(folder)
    self._handles: dict[str, Any] = {}
    self._file_of: dict[str, str] = {}
    for name in files:
      path = os.path.join(folder, name)
      try:
        handle = safetensors.safe_open(path, framework="numpy")
        keys = list(handle.keys())
      except Exception as error:  # noqa: BLE001 - a torn or foreign file raises several error types
        raise UserError(f"{path} is not a readable safetensors file ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
      self._handles[name] = handle
      for key in keys:
        if key in self._file_of:
          raise UserError(f"tensor {key!r} is in both {self._file_of[key]} and {name} under {folder}")
        self._file_of[key] = name
    index = _read_index(folder)
    if index is not None:
      wrong = sorted(k for k, f in index.items() if self._file_of.get(k) != f)
      if wrong:
        k = wrong[0]
        raise UserError(f"{os.path.join(folder, INDEX)} puts {k!r} in {index[k]}, but "
                         f"{'it is in ' + self._file_of[k] if k in self._file_of else 'no shard holds it'}")

  def __getitem__(self, key: str) -> np.ndarray:
    return np.asarray(self._handles[self._file_of[key]].get_tensor(key), np.float32)

  def __iter__(self) -> Iterator[str]:
    return iter(self._file_of)

  def __len__(self) -> int:
    return len(self._file_of)

  def __contains__(self, key) -> bool:
    return key in self._file_of

  def locate(self, key: str) -> str:
    return self._file_of.get(key, self.folder)


def _read_index(folder: str) -> dict[str, str] | None:
  path = os.path.join(folder, INDEX)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      weight_map = json.load(f)["weight_map"]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
    raise UserError(f"{path} is not a safetensors index with a 'weight_map' "
                     f"({type(error).__name__}: {error})") from None
  return dict(weight_map)


def _weight_files(folder: str) -> list[str]:
  if os.path.isfile(os.path.join(folder, WEIGHTS)):
    return [WEIGHTS]
  index = _read_index(folder)
  if index is not None:
    files = sorted(set(index.values()))
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
      raise UserError(f"{os.path.join(folder, INDEX)} names {missing[0]}, which is not in the folder")
    return files
  if any(name.endswith(".bin") for name in os.listdir(folder)):
    raise UserError(f"{folder} has only PyTorch .bin weights: re-save it as safetensors "
                     "(save_pretrained(..., safe_serialization=True))")
  raise UserError(f"{folder} has no {WEIGHTS} (nor {INDEX}): is it a Hugging Face model folder?")


def _in_folder(folder: str, fn, *args, **kwargs):
  """Runs an hf_import function; its errors gain the folder's name."""
  try:
    return fn(*args, **kwargs)
  except ValueError as error:
    raise UserError(f"{folder}: {error}") from None


def language_config(folder: str) -> LanguageConfig:
  return _in_folder(folder, hf_import.language_config_from_hf, read_config(folder))


def vision_config(folder: str, *, select_layer: int = -2) -> VisionConfig:
  cfg = read_config(folder)
  return _in_folder(folder, hf_import.vision_config_from_hf, cfg,
                    select_layer=int(cfg.get(SELECT_LAYER_KEY, select_layer)))


def load_language(folder: str) -> tuple[LanguageConfig, dict]:
  """A GPT-NeoX / Pythia folder -> (its LanguageConfig, GPTNeoX params)."""
  config = language_config(folder)
  return config, _in_folder(folder, hf_import.gpt_neox_params_from_hf, TensorFolder(folder), config)


def load_vision(folder: str, *, select_layer: int = -2) -> tuple[VisionConfig, dict]:
  """A CLIP / SigLIP (vision or full) folder -> (its VisionConfig, VisionEncoder params)."""
  config = vision_config(folder, select_layer=select_layer)
  return config, _in_folder(folder, hf_import.clip_vision_params_from_hf, TensorFolder(folder), config)
