"""GPT-NeoX (Pythia), the decoder TinyVLA reads its condition from. Hidden states only, no LM head.

  ids [B, L] --embed--> [B, L, H] (the VLA splices image tokens in here)
  --__call__(inputs_embeds, mask)--> layers_0..layers_{n-1} --final_layer_norm--> [B, L, H]

Faithful to Hugging Face's GPTNeoXModel so Pythia weights load by renaming (pretrained/hf_import.py):
- `query_key_value` is fused and grouped per head: its output viewed as [B, L, heads, 3*head_dim] splits
  into q, k, v along the last axis (not all-q, all-k, all-v);
- rotary embedding on the first `rotary_ndims` dims of q and k, half-split ("rotate_half"), not interleaved;
- parallel residual x + attn(ln1 x) + mlp(ln2 x) (Pythia), or sequential when `use_parallel_residual` is off;
- exact erf GELU, LayerNorm eps from the config.

Padding is on the right: positions are arange(L) for every row, so a valid token's position does not
depend on how much padding follows it, and masked keys keep padding out of every valid row's attention.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Integer

from tinyvla_jax.errors import UserError
from tinyvla_jax.models import initializers
from tinyvla_jax.models.config import LanguageConfig, LoraConfig
from tinyvla_jax.models.layer_stack import run_layers
from tinyvla_jax.models.layers import ACTIVATIONS, Dense, layer_norm, softmax_attention

Dtype = Any


def rotary_cos_sin(length: int, *, rotary_ndims: int, base: float) -> tuple[jax.Array, jax.Array]:
  """cos, sin [L, rotary_ndims] for positions 0..L-1: frequencies base^(-2i/d), repeated for both halves."""
  inv_freq = 1.0 / (base ** (jnp.arange(0, rotary_ndims, 2, dtype=jnp.float32) / rotary_ndims))
  angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates the first cos.shape[-1] dims of x [B, L, heads, head_dim]; the rest pass through.

  Half-split: dim j pairs with dim j + d/2 (x_rot * cos + rotate_half(x_rot) * sin).
  """
  d = cos.shape[-1]
  rot, rest = x[..., :d], x[..., d:]
  x1, x2 = rot[..., : d // 2], rot[..., d // 2:]
  rotate_half = jnp.concatenate([-x2, x1], axis=-1)
  cos, sin = cos[None, :, None, :], sin[None, :, None, :]
  return jnp.concatenate([rot * cos + rotate_half * sin, rest], axis=-1)


def causal_padding_mask(mask: jax.Array) -> jax.Array:
  """[B, L] valid-token mask -> [B, 1, L, L] attention mask: key j visible to query i iff j <= i and j valid.

  Padded query rows still see the earlier valid keys, so no row is all-masked while position 0 is valid.
  """
  length = mask.shape[1]
  causal = jnp.tril(jnp.ones((length, length), bool))
  return causal[None, None] & mask[:, None, None, :].astype(bool)


class Attention(nn.Module):
  config: LanguageConfig
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array, attn_mask: jax.Array) -> jax.Array:
    cfg = self.config
    b, length, hidden = x.shape
    heads, head_dim = cfg.num_attention_heads, cfg.head_dim
    qkv = Dense(3 * hidden, init_scheme=self.init_scheme, dtype=self.dtype, lora=self.lora, name="query_key_value")(x)
    qkv = qkv.reshape(b, length, heads, 3 * head_dim).astype(jnp.float32)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    if cfg.rotary_ndims:
      cos, sin = rotary_cos_sin(length, rotary_ndims=cfg.rotary_ndims, base=cfg.rotary_emb_base)
      q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    out = softmax_attention(q, k, v, attn_mask).reshape(b, length, hidden).astype(self.dtype)
    return Dense(hidden, init_scheme=self.init_scheme, dtype=self.dtype, lora=self.lora, name="dense")(out)


class MLP(nn.Module):
  config: LanguageConfig
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    dense = lambda n, name: Dense(n, init_scheme=self.init_scheme, dtype=self.dtype, lora=self.lora, name=name)
    x = dense(cfg.intermediate_size, "dense_h_to_4h")(x)
    x = ACTIVATIONS[cfg.hidden_act](x)
    return dense(cfg.hidden_size, "dense_4h_to_h")(x)


class Layer(nn.Module):
  config: LanguageConfig
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array, attn_mask: jax.Array) -> jax.Array:
    cfg = self.config
    ln1 = layer_norm(cfg.layer_norm_eps, name="input_layernorm", dtype=self.dtype)
    ln2 = layer_norm(cfg.layer_norm_eps, name="post_attention_layernorm", dtype=self.dtype)
    attn = Attention(cfg, self.init_scheme, self.dtype, self.lora, name="attention")
    mlp = MLP(cfg, self.init_scheme, self.dtype, self.lora, name="mlp")
    attn_out = attn(ln1(x), attn_mask)
    if cfg.use_parallel_residual:
      return x + attn_out + mlp(ln2(x))
    x = x + attn_out
    return x + mlp(ln2(x))


class GPTNeoX(nn.Module):
  """`embed(ids)` -> token embeddings; `__call__(inputs_embeds, mask)` -> final hidden states.

  Parameters are created lazily by the method that uses them: to initialize all of them standalone, init
  with a method that calls both, e.g. `method=lambda m, ids, mask: m(m.embed(ids), mask)`.
  `lora` puts adapters on every Dense of the layers (query_key_value, dense, dense_h_to_4h, dense_4h_to_h).
  """

  config: LanguageConfig
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None
  remat: bool = False  # recompute each layer in the backward pass (model.remat)
  scan: bool = False  # run the layers as one lax.scan (model.scan_layers; models/layer_stack.py)

  def setup(self):
    cfg = self.config
    self.embed_in = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
                             embedding_init=initializers.embedding_init(self.init_scheme))
    # A list attribute is named layers_0, layers_1, ... by Flax.
    layer = nn.remat(Layer) if self.remat else Layer  # same parameters either way
    self.layers = [layer(cfg, self.init_scheme, self.dtype, self.lora) for _ in range(cfg.num_hidden_layers)]
    self.final_layer_norm = layer_norm(cfg.layer_norm_eps, dtype=self.dtype)

  def embed(self, ids: Integer[Array, "b l"]) -> Float[Array, "b l h"]:
    """int ids [B, L] -> [B, L, hidden_size]."""
    if ids.ndim != 2:
      raise UserError(f"ids must be [B, L], got shape {ids.shape}")
    return self.embed_in(ids)

  def __call__(self, inputs_embeds: Float[Array, "b l h"], mask: Bool[Array, "b l"]) -> Float[Array, "b l h"]:
    """inputs_embeds [B, L, H], mask [B, L] (True = real token, right padding) -> hidden [B, L, H]."""
    h = self.config.hidden_size
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != h:
      raise UserError(f"inputs_embeds must be [B, L, {h}] (model.language.hidden_size), got {inputs_embeds.shape}")
    if mask.shape != inputs_embeds.shape[:2]:
      raise UserError(f"mask must be [B, L] = {inputs_embeds.shape[:2]}, got {mask.shape}")
    attn_mask = causal_padding_mask(mask)
    x = inputs_embeds.astype(self.dtype)
    x = run_layers(self, self.layers, x, attn_mask, scan=self.scan)
    return self.final_layer_norm(x)
