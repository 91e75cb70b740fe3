"""Our vision tower and LLM -> Hugging Face folders (config.json + model.safetensors [+ tokenizer.json]).

The inverse of hf_import.py / hf_folder.py, so JAX -> HF -> JAX is exact (only transposes and reshapes;
every export is re-imported in memory and compared before it is written):

  GPT-NeoX -> a `GPTNeoXModel` folder (no `gpt_neox.` prefix): our model has no LM head (`embed_out`),
              so transformers' GPTNeoXForCausalLM would load it with a fresh head.
  ViT      -> a `CLIPVisionModel` or `SiglipVisionModel` folder holding the layers our tower runs, i.e.
              cut at `select_layer`: num_hidden_layers = config.num_layers_run, and `tinyvla_select_layer:
              -1` in config.json so that hf_folder.py reads its last layer back. transformers' features
              for our tokens are `hidden_states[-1]`; its `post_layernorm` (which we never use) is written
              as an identity-affine LayerNorm so the folder loads without missing weights.

LoRA adapters must be merged first (`export_vla` does it; models/lora.py). Run on a training workdir:
  python -m tinyvla_jax.pretrained.hf_export --workdir workdirs/s --out exported/s
writes exported/s/language (+ tokenizer.json when the run used one) and exported/s/vision.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from tinyvla_jax import extras
from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import LanguageConfig, VisionConfig, VLAConfig
from tinyvla_jax.models.lora import has_adapters, merge_lora
from tinyvla_jax.pretrained import hf_folder, hf_import

# Our activation names -> transformers' (ACT2FN keys in transformers 4 and 5).
_HF_ACTS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu"}


# --- state dicts ----------------------------------------------------------------------------------

def _np(x) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(x, np.float32))


def _linear(sd: dict, name: str, p: dict) -> None:
  sd[name + ".weight"] = _np(p["kernel"]).T.copy()
  if "bias" in p:
    sd[name + ".bias"] = _np(p["bias"])


def _layer_norm(sd: dict, name: str, p: dict) -> None:
  sd[name + ".weight"], sd[name + ".bias"] = _np(p["scale"]), _np(p["bias"])


def gpt_neox_params_to_hf(params: dict, config: LanguageConfig) -> dict[str, np.ndarray]:
  """GPTNeoX params -> a GPTNeoXModel state dict (numpy, float32)."""
  _check_no_adapters(params, "language")
  sd = {"embed_in.weight": _np(params["embed_in"]["embedding"])}
  _layer_norm(sd, "final_layer_norm", params["final_layer_norm"])
  for i in range(config.num_hidden_layers):
    p, q = params[f"layers_{i}"], f"layers.{i}."
    _layer_norm(sd, q + "input_layernorm", p["input_layernorm"])
    _layer_norm(sd, q + "post_attention_layernorm", p["post_attention_layernorm"])
    for name in ("query_key_value", "dense"):
      _linear(sd, q + "attention." + name, p["attention"][name])
    for name in ("dense_h_to_4h", "dense_4h_to_h"):
      _linear(sd, q + "mlp." + name, p["mlp"][name])
  return sd


def vision_params_to_hf(params: dict, config: VisionConfig) -> dict[str, np.ndarray]:
  """VisionEncoder params -> a CLIPVisionModel / SiglipVisionModel state dict of `num_layers_run` layers."""
  _check_no_adapters(params, "vision")
  w, p = config.width, config.patch_size
  kernel = _np(params["patch_embedding"]["kernel"])
  # [p*p*3, D] -> [p, p, 3, D] -> [D, 3, p, p]: the inverse of hf_import's conv mapping.
  sd = {"embeddings.patch_embedding.weight": np.ascontiguousarray(kernel.reshape(p, p, 3, w).transpose(3, 2, 0, 1))}
  if config.patch_bias:
    sd["embeddings.patch_embedding.bias"] = _np(params["patch_embedding"]["bias"])
  if config.class_token:
    sd["embeddings.class_embedding"] = _np(params["class_embedding"])
  sd["embeddings.position_embedding.weight"] = _np(params["position_embedding"])
  if config.pre_layernorm:
    _layer_norm(sd, "pre_layrnorm", params["pre_layrnorm"])
  for i in range(config.num_layers_run):
    layer, q = params[f"layers_{i}"], f"encoder.layers.{i}."
    _layer_norm(sd, q + "layer_norm1", layer["layer_norm1"])
    _layer_norm(sd, q + "layer_norm2", layer["layer_norm2"])
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
      _linear(sd, q + "self_attn." + name, layer["self_attn"][name])
    for name in ("fc1", "fc2"):
      _linear(sd, q + "mlp." + name, layer["mlp"][name])
  sd["post_layernorm.weight"], sd["post_layernorm.bias"] = np.ones((w,), np.float32), np.zeros((w,), np.float32)
  return sd


def _check_no_adapters(params: dict, component: str) -> None:
  if has_adapters(params):
    raise UserError(f"the {component} params hold LoRA adapters: merge them first "
                     "(tinyvla_jax.models.lora.merge_lora, or export_vla which does)")


# --- configs --------------------------------------------------------------------------------------

def language_config_to_hf(config: LanguageConfig) -> dict[str, Any]:
  return {
      "architectures": ["GPTNeoXModel"], "model_type": "gpt_neox",
      "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
      "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
      "intermediate_size": config.intermediate_size, "hidden_act": _HF_ACTS[config.hidden_act],
      "max_position_embeddings": config.max_position_embeddings, "layer_norm_eps": config.layer_norm_eps,
      "use_parallel_residual": config.use_parallel_residual, "attention_bias": True, "tie_word_embeddings": False,
      # Both rotary forms: transformers 4 reads the first two, 5 the dict.
      "rotary_pct": config.rotary_pct, "rotary_emb_base": config.rotary_emb_base,
      "rope_parameters": {"rope_type": "default", "rope_theta": config.rotary_emb_base,
                          "partial_rotary_factor": config.rotary_pct},
  }


def vision_config_to_hf(config: VisionConfig) -> dict[str, Any]:
  clip = (True, True, False)  # (class_token, pre_layernorm, patch_bias)
  switches = (config.class_token, config.pre_layernorm, config.patch_bias)
  if switches not in (clip, tuple(not s for s in clip)):
    raise UserError(f"a ViT with class_token={switches[0]}, pre_layernorm={switches[1]}, patch_bias={switches[2]} "
                     "is neither CLIP nor SigLIP: Hugging Face has no model to export it as")
  siglip = switches != clip
  out = {
      "architectures": ["SiglipVisionModel" if siglip else "CLIPVisionModel"],
      "model_type": "siglip_vision_model" if siglip else "clip_vision_model",
      "hidden_size": config.width, "intermediate_size": config.mlp_dim,
      "num_hidden_layers": config.num_layers_run, "num_attention_heads": config.num_heads,
      "image_size": config.image_size, "patch_size": config.patch_size, "num_channels": 3,
      "hidden_act": _HF_ACTS[config.act], "layer_norm_eps": config.layer_norm_eps,
      hf_folder.SELECT_LAYER_KEY: -1,
  }
  if siglip:
    out["vision_use_head"] = False  # SigLIP's attention-pooling head: not part of our tower
  return out


# --- folders --------------------------------------------------------------------------------------

def _write(folder: str, config: dict, state_dict: dict[str, np.ndarray]) -> None:
  safetensors_numpy = extras.require("safetensors.numpy")
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, hf_folder.CONFIG), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  safetensors_numpy.save_file(state_dict, os.path.join(folder, hf_folder.WEIGHTS), metadata={"format": "pt"})


def _assert_round_trip(params: dict, back: dict, what: str) -> None:
  """The exported state dict must import back to the very same arrays (a mapping bug fails here)."""
  import jax

  mine = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  theirs = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(back)[0]}
  if mine.keys() != theirs.keys():
    extra = sorted(mine.keys() ^ theirs.keys())
    raise UserError(f"{what} params do not match their config: {extra[0]} is not exported (wrong config?)")
  for key, value in mine.items():
    if value.shape != theirs[key].shape or not np.array_equal(value.astype(np.float32), theirs[key]):
      raise UserError(f"{what} export of {key} does not round-trip exactly")


def export_language(folder: str, params: dict, config: LanguageConfig, *, tokenizer_json: str | None = None) -> None:
  """Writes GPTNeoX params as a GPTNeoXModel folder (and tokenizer.json when given)."""
  sd = gpt_neox_params_to_hf(params, config)
  _assert_round_trip(params, hf_import.gpt_neox_params_from_hf(sd, config), "language")
  _write(folder, language_config_to_hf(config), sd)
  if tokenizer_json is not None:
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
      f.write(tokenizer_json)


def export_vision(folder: str, params: dict, config: VisionConfig) -> None:
  """Writes VisionEncoder params as a CLIPVisionModel / SiglipVisionModel folder cut at the feature layer."""
  sd = vision_params_to_hf(params, config)
  hf_config = vision_config_to_hf(config)
  back_config = hf_import.vision_config_from_hf(hf_config, select_layer=-1)
  _assert_round_trip(params, hf_import.clip_vision_params_from_hf(sd, back_config), "vision")
  _write(folder, hf_config, sd)


def export_vla(out_dir: str, params: dict, config: VLAConfig, *, tokenizer_json: str | None = None) -> dict[str, str]:
  """Merges LoRA adapters (if any) and writes `out_dir/language` and `out_dir/vision`; -> their paths."""
  params, config = merge_lora(params, config)
  paths = {"language": os.path.join(out_dir, "language"), "vision": os.path.join(out_dir, "vision")}
  export_language(paths["language"], params["language"], config.language, tokenizer_json=tokenizer_json)
  export_vision(paths["vision"], params["vision"], config.vision)
  return paths


# --- command line ---------------------------------------------------------------------------------

def main(argv):
  del argv
  import jax

  from tinyvla_jax.data.tokenizer import tokenizer_from_assets
  from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params
  from tinyvla_jax.checkpoints import Checkpointer

  workdir, out = _WORKDIR.value, _OUT.value
  if not Checkpointer.exists(workdir):
    raise UserError(f"no checkpoint under {workdir}/checkpoints: pass the --workdir of a training run")
  with Checkpointer(workdir) as ckpt:
    _, stored = ckpt.restore_json(_STEP.value)
    config = VLAConfig.from_dict(stored["model"])
    target = jax.eval_shape(lambda: init_params(UnifiedTinyVLAModel(config), jax.random.key(0)))
    restored = ckpt.restore(train_state_target=None, params_target=target, step=_STEP.value)
  tokenizer = tokenizer_from_assets(restored.assets)
  paths = export_vla(out, jax.device_get(restored.params), config,
                     tokenizer_json=getattr(tokenizer, "json_text", None))
  print(f"step {restored.step}: language -> {paths['language']}, vision -> {paths['vision']}")


if __name__ == "__main__":
  from absl import flags

  from tinyvla_jax import cli

  _WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.", required=True)
  _OUT = flags.DEFINE_string("out", None, "Folder to write language/ and vision/ into.", required=True)
  _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
  cli.run(main)
