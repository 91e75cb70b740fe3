"""Model size presets, in one place. `configs/*.py` consume them; `summary` prints them.

| preset | vision                      | LLM                          | head down dims   | use                    |
|--------|-----------------------------|------------------------------|------------------|------------------------|
| tiny   | ViT 32px/8, width 32, 2 L   | NeoX 64 wide, 2 L            | 32/64/128        | CI, seconds            |
| cpu    | ViT 64px/8, width 128, 3 L  | NeoX 128 wide, 2 L           | 64/128/256       | a laptop CPU, minutes  |
| s      | CLIP ViT-L/14-336           | Pythia-70M  (512, 6 L)       | 256/512/1024     | TinyVLA-S              |
| b      | CLIP ViT-L/14-336           | Pythia-410M (1024, 24 L)     | 256/512/1024     | TinyVLA-B              |
| h      | CLIP ViT-L/14-336           | Pythia-1B   (2048, 16 L)     | 256/512/1024     | TinyVLA-H              |

The paper presets use action chunks of 16, a 256-wide diffusion step embedding, and read the CLIP
tower's second-to-last layer (so its last layer is never built). They fine-tune both backbones with
TinyVLA's LoRA (r=64, alpha=256, dropout 0.05; `model.finetune`), the projector and head fully; tiny and
cpu train everything from scratch. `--config.pretrained.llm=DIR --config.pretrained.vision=DIR` load
Hugging Face folders at train start, and their config.json then sets the backbone sizes
(pretrained/backbones.py); without them the same shapes start from random weights. Action/state sizes come from the
data (MetaWorld: 4-D action, 4-D state); the head's parameter count in the paper (72.83M at
TinyVLA-S) is for action_dim 10, state_dim 7 -- `summary` can be run with those to compare.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import LanguageConfig, VisionConfig, VLAConfig


PRESETS = ("tiny", "cpu", "s", "b", "h")

# The tokenizer: the byte-level one has 260 ids. Pythia's vocabulary is 50304 (padded for speed).
BYTE_VOCAB = 260
PYTHIA_VOCAB = 50304

CLIP_VIT_L14_336 = dict(image_size=336, patch_size=14, width=1024, depth=24, num_heads=16, mlp_dim=4096,
                        select_layer=-2, act="quick_gelu", layer_norm_eps=1e-5, patch_bias=False,
                        class_token=True, pre_layernorm=True)

PYTHIA = {
    "70m": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048),
    "410m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=8, intermediate_size=8192),
}
PYTHIA_COMMON = dict(vocab_size=PYTHIA_VOCAB, rotary_pct=0.25, rotary_emb_base=10000.0,
                     max_position_embeddings=2048, use_parallel_residual=True, layer_norm_eps=1e-5,
                     hidden_act="gelu")

PAPER_HEAD = dict(down_dims=(256, 512, 1024), kernel_size=5, n_groups=8, step_embed_dim=256, horizon=16)

# TinyVLA's LoRA setting; the from-scratch presets keep the numbers but train fully.
TINYVLA_LORA = dict(lora_rank=64, lora_alpha=256.0, lora_dropout=0.05)


def _defaults(config_class, **values) -> dict:
  """Every field of `config_class` (a models/config.py dataclass) at its default, then `values`: each key
  of the model section exists, so `--config.model.KEY=VALUE` can set any of them."""
  default = config_class()
  return {**{f.name: getattr(default, f.name) for f in dataclasses.fields(config_class)
             if not dataclasses.is_dataclass(getattr(default, f.name))}, **values}


def model_preset(name: str) -> ml_collections.ConfigDict:
  """The `model` section of a config for a preset name (see the table above)."""
  if name not in PRESETS:
    raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)} "
                     "(as in --config configs/fixed.py:cpu)")
  paper = name in ("s", "b", "h")
  finetune = dict(vision="lora" if paper else "full", language="lora" if paper else "full", **TINYVLA_LORA)
  if name == "tiny":
    vision = dict(image_size=32, patch_size=8, width=32, depth=2, num_heads=2, mlp_dim=128, stem="patch",
                  stem_channels=32)
    language = dict(vocab_size=BYTE_VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=256)
    head = dict(down_dims=(32, 64, 128), step_embed_dim=32, horizon=16)
  elif name == "cpu":
    # ViT 3 layers (was 4) and the decoder 128 wide with 2 layers (was 256 wide, 4 layers): the decoder was
    # ~75% of the step's FLOPs; the smaller pair trains ~2.5x more examples per second on 2 cores and, at
    # the same wall time, reached a lower validation loss on the MetaWorld demos (reports/metaworld).
    vision = dict(image_size=64, patch_size=8, width=128, depth=3, num_heads=4, mlp_dim=512, stem="patch",
                  stem_channels=32)
    language = dict(vocab_size=BYTE_VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=512)
    head = dict(down_dims=(64, 128, 256), step_embed_dim=64, horizon=16)
  else:
    vision = dict(CLIP_VIT_L14_336, stem="patch", stem_channels=32)
    language = dict(PYTHIA_COMMON, **PYTHIA[{"s": "70m", "b": "410m", "h": "1b"}[name]])
    head = dict(PAPER_HEAD)
  head.update(action_dim=4, state_dim=4, kernel_size=5, n_groups=8, cond_predict_scale=True, conv_impl="auto",
              readout="mean", num_keypoints=32, num_queries=4, keypoint_source="decoder", privileged_dim=0)
  # The paper presets run each backbone's layers as one lax.scan: their first compile is half as long
  # (README, "Performance") and the parameter tree is the same. tiny and cpu (2-3 layers) unroll them.
  return ml_collections.ConfigDict(dict(
      _defaults(VLAConfig, projector="mlp2x_gelu", num_cameras=1, obs_steps=1, init="fixed", dtype="float32",
                image_token_id=3, scan_layers=paper),
      vision=_defaults(VisionConfig, **vision), language=_defaults(LanguageConfig, **language), head=head,
      finetune=finetune))
