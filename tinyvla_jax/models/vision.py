"""The vision tower: a pre-LN ViT in the CLIP layout (SigLIP by three switches), and image preprocessing.

  uint8 [B, h, w, 3] --preprocess_images--> float32 [B, S, S, 3] (S = config.image_size, normalized)
  --patchify + patch_embedding--> [B, P, D] (+ class token) + position_embedding --pre_layrnorm-->
  hidden state 0 --layers_0..layers_{n-1}--> hidden state n = config.num_layers_run --> patch tokens [B, P, D]

Hidden states are counted as in Hugging Face's `CLIPVisionModel(..., output_hidden_states=True)`:
`hidden_states[0]` is the input of the first encoder layer, i.e. the embeddings *after* `pre_layrnorm`
(transformers records it as the first layer's input), and `hidden_states[i]` the output of layer i-1.
TinyVLA (like LLaVA) reads `hidden_states[-2]`, so the last layer and `post_layernorm` are never built.

Parameter names follow the Hugging Face modules so the importer (pretrained/hf_import.py) is a rename:
`patch_embedding`, `class_embedding`, `position_embedding`, `pre_layrnorm` (sic), `layers_{i}` with
`layer_norm1`, `self_attn/{q,k,v,out}_proj`, `layer_norm2`, `mlp/fc{1,2}`.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from tinyvla_jax.errors import UserError
from tinyvla_jax.models import initializers
from tinyvla_jax.models.config import LoraConfig, VisionConfig
from tinyvla_jax.models.layer_stack import run_layers
from tinyvla_jax.models.layers import ACTIVATIONS, Conv2d, Dense, group_norm, layer_norm, softmax_attention

Dtype = Any

# OpenAI CLIP's normalization (CLIPImageProcessor image_mean / image_std).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess_images(images: jax.Array, *, image_size: int, mean: Sequence[float],
                      std: Sequence[float]) -> jax.Array:
  """uint8 [B, H, W, 3] -> float32 [B, image_size, image_size, 3], scaled to [0, 1], resized, normalized.

  The resize is bilinear (antialiased when shrinking) and only happens when H or W differ from
  `image_size`. CLIP's own processor resizes bicubically and center-crops; we feed square frames.
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise UserError(f"images must be [B, H, W, 3], got shape {images.shape}")
  if images.dtype != jnp.uint8:
    # A float input would be divided by 255 a second time: refuse it rather than guess.
    raise UserError(f"images must be uint8 (0..255), got {images.dtype}")
  x = images.astype(jnp.float32) / 255.0
  b, h, w, c = x.shape
  if (h, w) != (image_size, image_size):
    x = jax.image.resize(x, (b, image_size, image_size, c), method="bilinear")
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (x - mean) / std


def patchify(pixels: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C]; patches row-major, each flattened in (row, col, channel) order.

  A bias-free conv with kernel = stride = p equals a Dense over these vectors. An importer maps Hugging
  Face's conv weight [D, C, p, p] to our kernel [p*p*C, D] by `w.transpose(2, 3, 1, 0).reshape(-1, D)`.
  """
  b, h, w, c = pixels.shape
  gh, gw = h // patch_size, w // patch_size
  x = pixels.reshape(b, gh, patch_size, gw, patch_size, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # [B, gh, gw, p, p, C]
  return x.reshape(b, gh * gw, patch_size * patch_size * c)


class SelfAttention(nn.Module):
  num_heads: int
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, length, width = x.shape
    head_dim = width // self.num_heads
    dense = lambda name: Dense(width, init_scheme=self.init_scheme, dtype=self.dtype, lora=self.lora, name=name)
    split = lambda t: t.reshape(b, length, self.num_heads, head_dim)
    q, k, v = (split(dense(n)(x)) for n in ("q_proj", "k_proj", "v_proj"))
    out = softmax_attention(q, k, v).reshape(b, length, width).astype(self.dtype)
    return dense("out_proj")(out)


class MLP(nn.Module):
  hidden: int
  act: str
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = Dense(self.hidden, init_scheme=self.init_scheme, dtype=self.dtype, lora=self.lora, name="fc1")(x)
    x = ACTIVATIONS[self.act](x)
    return Dense(width, init_scheme=self.init_scheme, dtype=self.dtype, lora=self.lora, name="fc2")(x)


class EncoderLayer(nn.Module):
  """Pre-LN transformer block: x + attn(ln1 x), then + mlp(ln2 .)."""

  config: VisionConfig
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    eps = cfg.layer_norm_eps
    h = layer_norm(eps, name="layer_norm1", dtype=self.dtype)(x)
    x = x + SelfAttention(cfg.num_heads, self.init_scheme, self.dtype, self.lora, name="self_attn")(h)
    h = layer_norm(eps, name="layer_norm2", dtype=self.dtype)(x)
    return x + MLP(cfg.mlp_dim, cfg.act, self.init_scheme, self.dtype, self.lora, name="mlp")(h)


class ConvStem(nn.Module):
  """[B, S, S, 3] -> [B, S/p, S/p, C]: log2(p) stride-2 3x3 convs, each GroupNorm + GELU, channels doubling
  from `channels`. Translation-equivariant features with a receptive field that overlaps patches, which a
  ViT trained from scratch on a few dozen demonstrations learns to localize with far sooner than from a
  linear patch embedding."""

  patch_size: int
  channels: int
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(int(self.patch_size).bit_length() - 1):
      features = self.channels * 2 ** i
      x = Conv2d(features, 3, stride=2, padding=1, init_scheme=self.init_scheme, dtype=self.dtype, name=f"conv{i}")(x)
      x = group_norm(min(8, features), dtype=self.dtype, name=f"norm{i}")(x)
      x = jax.nn.gelu(x, approximate=False)
    return x


class VisionEncoder(nn.Module):
  """Normalized pixels [B, S, S, 3] -> patch tokens [B, num_patches, width] of `config.select_layer`.

  `lora` puts adapters on every Dense of the encoder layers (attention and MLP), not on the patch
  embedding: it is a Conv2d in Hugging Face's CLIP, which peft's linear-layer LoRA leaves alone.
  """

  config: VisionConfig
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None
  remat: bool = False  # recompute each layer in the backward pass (model.remat)
  scan: bool = False  # run the layers as one lax.scan (model.scan_layers; models/layer_stack.py)

  @nn.compact
  def __call__(self, pixels: Float[Array, "b s s 3"]) -> Float[Array, "b p w"]:
    cfg = self.config
    s = cfg.image_size
    if pixels.ndim != 4 or pixels.shape[1:] != (s, s, 3):
      raise UserError(f"pixels must be [B, {s}, {s}, 3] (model.vision.image_size), got {pixels.shape}")
    x = self._embed(pixels)
    if cfg.pre_layernorm:
      x = layer_norm(cfg.layer_norm_eps, name="pre_layrnorm", dtype=self.dtype)(x)
    # Hidden state i is the output of layer i-1: the layers after the selected one are never built.
    layer = nn.remat(EncoderLayer) if self.remat else EncoderLayer  # same parameters either way
    layers = [layer(cfg, self.init_scheme, self.dtype, self.lora, name=f"layers_{i}")
              for i in range(cfg.num_layers_run)]
    x = run_layers(self, layers, x, scan=self.scan)
    return x[:, 1:] if cfg.class_token else x

  def _embed(self, pixels: jax.Array) -> jax.Array:
    """Patch embedding (+ class token in front) + learned positions -> [B, (1+)P, width]."""
    cfg = self.config
    embed_init = initializers.embedding_init(self.init_scheme)
    if cfg.stem == "conv":
      x = ConvStem(cfg.patch_size, cfg.stem_channels, self.init_scheme, self.dtype, name="conv_stem")(pixels)
      x = x.reshape(x.shape[0], -1, x.shape[-1])  # [B, P, C], patches row-major as patchify's
    else:
      x = patchify(pixels.astype(self.dtype), cfg.patch_size)
    x = Dense(cfg.width, init_scheme=self.init_scheme, use_bias=cfg.patch_bias, dtype=self.dtype,
              name="patch_embedding")(x)
    if cfg.class_token:
      cls = self.param("class_embedding", embed_init, (cfg.width,), jnp.float32)
      cls = jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, cfg.width))
      x = jnp.concatenate([cls, x], axis=1)
    pos = self.param("position_embedding", embed_init, (x.shape[1], cfg.width), jnp.float32)
    return x + pos.astype(self.dtype)
