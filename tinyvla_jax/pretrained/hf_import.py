"""Hugging Face checkpoints -> our configs and Flax parameter trees. Pure numpy: no torch needed.

Functions here take a state dict already read into numpy (e.g. `safetensors.numpy.load_file`, or the lazy
mapping of pretrained/hf_folder.py) and the config.json as a dict. Every tensor the model needs is checked
for presence and shape, and a tensor that is neither used nor known to be unneeded is an error too, so a
checkpoint that does not fit the config fails with one line naming the tensor, not deep inside a jit.

Layouts (torch -> ours):
  Linear weight [out, in]           -> Dense kernel [in, out] (transpose); bias as is
  LayerNorm weight / bias           -> scale / bias
  patch conv weight [D, 3, p, p]    -> patch_embedding kernel [p*p*3, D] (see models/vision.patchify)
  GPT-NeoX query_key_value          -> as is (transposed): both sides group its rows per head [q, k, v]
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import LanguageConfig, VisionConfig

Params = dict[str, Any]

# transformers' class defaults: a nested vision_config in a full CLIP/SigLIP config.json omits the keys
# that equal them (transformers writes only the differences).
_VISION_DEFAULTS = {
    "clip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    "siglip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
}

# transformers' activation names -> ours.
_ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
         "gelu_fast": "gelu_tanh"}


# --- configs --------------------------------------------------------------------------------------

def language_config_from_hf(cfg: Mapping[str, Any]) -> LanguageConfig:
  """GPTNeoXConfig dict -> LanguageConfig. Reads rotary settings in both forms: transformers 4
  (`rotary_pct`, `rotary_emb_base`) and 5 (`rope_parameters: {partial_rotary_factor, rope_theta}`)."""
  if cfg.get("model_type", "gpt_neox") != "gpt_neox":
    raise UserError(f"expected a gpt_neox config, got model_type={cfg['model_type']!r}")
  rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
  if rope.get("rope_type", rope.get("type", "default")) != "default":
    raise UserError(f"only the default rotary embedding is supported, got rope_type={rope.get('rope_type')!r}")
  if not cfg.get("attention_bias", True):
    raise UserError("attention_bias=False is not supported: our GPT-NeoX attention has biases (as Pythia)")
  # transformers' own defaults when a key is absent: 25% rotary, base 10000.
  pct = _first(cfg.get("rotary_pct"), rope.get("partial_rotary_factor"), cfg.get("partial_rotary_factor"), 0.25)
  base = _first(cfg.get("rotary_emb_base"), rope.get("rope_theta"), cfg.get("rope_theta"), 10000.0)
  need = lambda key: _require(cfg, key, "GPT-NeoX config")
  config = LanguageConfig(
      vocab_size=int(need("vocab_size")),
      hidden_size=int(need("hidden_size")),
      num_hidden_layers=int(need("num_hidden_layers")),
      num_attention_heads=int(need("num_attention_heads")),
      intermediate_size=int(need("intermediate_size")),
      rotary_pct=float(pct),
      rotary_emb_base=float(base),
      max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
      use_parallel_residual=bool(cfg.get("use_parallel_residual", True)),
      layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
      hidden_act=_act(cfg.get("hidden_act", "gelu")),
  )
  config.validate(prefix="language config")
  return config


def vision_config_from_hf(cfg: Mapping[str, Any], *, select_layer: int = -2) -> VisionConfig:
  """CLIPVisionConfig / SiglipVisionConfig dict (or a full CLIP/SigLIP config with `vision_config`)
  -> VisionConfig. `select_layer` is ours, not the checkpoint's: TinyVLA reads the second-to-last layer."""
  model_type = cfg.get("model_type", "clip_vision_model")
  if "vision_config" in cfg:
    return vision_config_from_hf(dict(cfg["vision_config"], model_type=model_type + "_vision_model"),
                                 select_layer=select_layer)
  siglip = model_type.startswith("siglip")
  if not (siglip or model_type.startswith("clip")):
    raise UserError(f"expected a CLIP or SigLIP vision config, got model_type={model_type!r}")
  cfg = {**_VISION_DEFAULTS["siglip" if siglip else "clip"], **cfg}
  for key in ("image_size", "patch_size"):
    if not isinstance(cfg[key], int):  # transformers also allows (h, w) pairs; our ViT is square
      raise UserError(f"vision config {key}={cfg[key]!r}: only a single int (square images, patches) is supported")
  config = VisionConfig(
      image_size=int(cfg["image_size"]),
      patch_size=int(cfg["patch_size"]),
      width=int(cfg["hidden_size"]),
      depth=int(cfg["num_hidden_layers"]),
      num_heads=int(cfg["num_attention_heads"]),
      mlp_dim=int(cfg["intermediate_size"]),
      select_layer=select_layer,
      act=_act(cfg["hidden_act"]),
      layer_norm_eps=float(cfg["layer_norm_eps"]),
      patch_bias=siglip,
      class_token=not siglip,
      pre_layernorm=not siglip,
  )
  config.validate(prefix="vision config")
  return config


# --- parameters -----------------------------------------------------------------------------------

class _Reader:
  """Fetches tensors by name under a prefix, checking presence and shape; remembers what it used."""

  def __init__(self, state_dict: Mapping[str, Any], prefix: str, what: str):
    self.sd, self.prefix, self.what, self.used = state_dict, prefix, what, set()

  def where(self, key: str) -> str:
    """" (in FILE)" when the state dict knows which file a tensor came from (pretrained/hf_folder.py)."""
    locate = getattr(self.sd, "locate", None)
    return f" (in {locate(key)})" if locate is not None else ""

  def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
    key = self.prefix + name
    if key not in self.sd:
      raise UserError(f"{self.what} checkpoint is missing {key!r} (expected shape {shape})")
    value = np.asarray(self.sd[key], np.float32)
    if value.shape != tuple(shape):
      raise UserError(f"{self.what} checkpoint tensor {key!r}{self.where(key)} has shape {value.shape}, "
                       f"the config expects {shape}")
    self.used.add(key)
    return value

  def check_unexpected(self, ignored: "re.Pattern[str]", hint: str) -> None:
    """Every tensor must be used or match `ignored` (matched against the name without the prefix)."""
    unexpected = sorted(k for k in self.sd if k not in self.used and not ignored.search(k.removeprefix(self.prefix)))
    if unexpected:
      raise UserError(f"{self.what} checkpoint has {len(unexpected)} unexpected tensor(s), e.g. "
                       f"{unexpected[0]!r}{self.where(unexpected[0])}: {hint}")

  def linear(self, name: str, fan_in: int, fan_out: int, bias: bool = True) -> Params:
    out = {"kernel": self.get(name + ".weight", (fan_out, fan_in)).T.copy()}
    if bias:
      out["bias"] = self.get(name + ".bias", (fan_out,))
    return out

  def layer_norm(self, name: str, width: int) -> Params:
    return {"scale": self.get(name + ".weight", (width,)), "bias": self.get(name + ".bias", (width,))}


# Tensors a GPT-NeoX checkpoint may hold that the hidden-state model does not use: the LM head and
# non-learned buffers (causal-mask and rotary caches written by older transformers).
_NEOX_IGNORED = re.compile(r"^(embed_out\.|lm_head\.)|\.attention\.(bias|masked_bias)$|rotary_emb\.inv_freq$")


def gpt_neox_params_from_hf(state_dict: Mapping[str, Any], config: LanguageConfig) -> Params:
  """GPTNeoXModel / GPTNeoXForCausalLM state dict (with or without `gpt_neox.`) -> GPTNeoX params."""
  prefix = "gpt_neox." if any(k.startswith("gpt_neox.") for k in state_dict) else ""
  r = _Reader(state_dict, prefix, "GPT-NeoX")
  h, inner = config.hidden_size, config.intermediate_size
  params: Params = {
      "embed_in": {"embedding": r.get("embed_in.weight", (config.vocab_size, h))},
      "final_layer_norm": r.layer_norm("final_layer_norm", h),
  }
  for i in range(config.num_hidden_layers):
    p = f"layers.{i}."
    params[f"layers_{i}"] = {
        "input_layernorm": r.layer_norm(p + "input_layernorm", h),
        "post_attention_layernorm": r.layer_norm(p + "post_attention_layernorm", h),
        "attention": {"query_key_value": r.linear(p + "attention.query_key_value", h, 3 * h),
                      "dense": r.linear(p + "attention.dense", h, h)},
        "mlp": {"dense_h_to_4h": r.linear(p + "mlp.dense_h_to_4h", h, inner),
                "dense_4h_to_h": r.linear(p + "mlp.dense_4h_to_h", inner, h)},
    }
  r.check_unexpected(_NEOX_IGNORED, f"does num_hidden_layers={config.num_hidden_layers} match the checkpoint?")
  return params


def clip_vision_params_from_hf(state_dict: Mapping[str, Any], config: VisionConfig) -> Params:
  """CLIPVisionModel (or CLIPModel, or SiglipVisionModel with the SigLIP switches) state dict -> VisionEncoder
  params. Keys may carry the `vision_model.` prefix (CLIPModel, transformers 4) or not (transformers 5
  CLIPVisionModel). Only the layers `config.select_layer` needs are read; later layers (up to
  `config.depth`), `post_layernorm`, SigLIP's pooling head and a full model's text tower are ignored;
  any other tensor is an error."""
  prefix = "vision_model." if any(k.startswith("vision_model.") for k in state_dict) else ""
  r = _Reader(state_dict, prefix, "vision")
  w, p = config.width, config.patch_size
  conv = r.get("embeddings.patch_embedding.weight", (w, 3, p, p))
  # [D, C, p, p] -> [p, p, C, D] -> [p*p*C, D]: the (row, col, channel) order of vision.patchify.
  params: Params = {"patch_embedding": {"kernel": conv.transpose(2, 3, 1, 0).reshape(p * p * 3, w).copy()}}
  if config.patch_bias:
    params["patch_embedding"]["bias"] = r.get("embeddings.patch_embedding.bias", (w,))
  if config.class_token:
    params["class_embedding"] = r.get("embeddings.class_embedding", (w,))
  num_positions = config.num_patches + int(config.class_token)
  params["position_embedding"] = r.get("embeddings.position_embedding.weight", (num_positions, w))
  if config.pre_layernorm:
    params["pre_layrnorm"] = r.layer_norm("pre_layrnorm", w)
  for i in range(config.num_layers_run):
    q = f"encoder.layers.{i}."
    params[f"layers_{i}"] = {
        "layer_norm1": r.layer_norm(q + "layer_norm1", w),
        "self_attn": {n: r.linear(q + "self_attn." + n, w, w) for n in ("q_proj", "k_proj", "v_proj", "out_proj")},
        "layer_norm2": r.layer_norm(q + "layer_norm2", w),
        "mlp": {"fc1": r.linear(q + "mlp.fc1", w, config.mlp_dim), "fc2": r.linear(q + "mlp.fc2", config.mlp_dim, w)},
    }
  later = "|".join(str(i) for i in range(config.num_layers_run, config.depth)) or "(?!)"  # (?!): none
  ignored = re.compile(rf"^encoder\.layers\.({later})\.|^post_layernorm\.|^head\.|^embeddings\.position_ids$|"
                       r"^(text_model\.|visual_projection\.|text_projection\.|logit_scale$|logit_bias$)")
  r.check_unexpected(ignored, f"does num_hidden_layers={config.depth} match the checkpoint?")
  return params


def _require(cfg: Mapping[str, Any], key: str, what: str):
  if key not in cfg:
    raise UserError(f"{what} has no {key!r}: is this the config.json of the right model?")
  return cfg[key]


def _first(*values):
  return next(v for v in values if v is not None)


def _act(name: str) -> str:
  if name not in _ACTS:
    raise UserError(f"unsupported activation hidden_act={name!r}: supported {sorted(_ACTS)}")
  return _ACTS[name]
