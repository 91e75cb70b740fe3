"""Reading the action head's condition out of the decoder's final hidden states.

The decoder's output is one sequence: text tokens, with the image tokens of every view spliced in as a
block at the placeholder (models/vla.py). A readout turns it into one vector per example:

| readout           | what it keeps                                                      | width                 |
|-------------------|--------------------------------------------------------------------|-----------------------|
| "mean"            | TinyVLA: masked mean over every valid token, LayerNorm             | H                     |
| "split_mean"      | text tokens and image tokens averaged apart, each LayerNorm'd      | 2H                    |
| "spatial_softmax" | Diffusion Policy's keypoints: per view, K softmax maps over the    | H + views * K * 2     |
|                   | patch grid -> their expected (x, y); plus the text mean            |                       |
| "attention"       | K learned queries attend over every valid token (a MAP head)       | K * H                 |

Why not only the mean: in a mean over ~100 tokens the few patches that show where the object is are
averaged away, and a policy trained on it learned to ignore the image (the object's position is all
that differs between setups of one task). The keypoints carry positions explicitly: a keypoint is a
soft arg-max over the patch grid, so where a feature is found becomes two numbers the head can read,
with sub-patch precision. Diffusion Policy reads its ResNet feature map the same way.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyvla_jax.errors import UserError
from tinyvla_jax.models import initializers, layers

Dtype = Any


def masked_mean(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """[B, L, H], [B, L] bool -> [B, H]: mean over the valid tokens only (a row with none gives 0)."""
  weights = mask.astype(jnp.float32)[..., None]
  total = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
  return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def image_block(*, hidden: jax.Array, image_start: jax.Array, num_tokens: int) -> jax.Array:
  """The spliced image tokens: hidden [B, L, H], image_start [B] -> [B, num_tokens, H]."""
  idx = image_start[:, None] + jnp.arange(num_tokens)[None, :]
  return jnp.take_along_axis(hidden, idx[..., None], axis=1)


def image_token_mask(*, length: int, image_start: jax.Array, num_tokens: int) -> jax.Array:
  """[B, length] bool: True on the spliced image tokens."""
  j = jnp.arange(length)[None, :]
  start = image_start[:, None]
  return (j >= start) & (j < start + num_tokens)


def grid_coordinates(height: int, width: int) -> jax.Array:
  """[height * width, 2] (x, y) of each patch centre in [-1, 1], row-major like the patch order."""
  ys = jnp.linspace(-1.0, 1.0, height) if height > 1 else jnp.zeros((1,))
  xs = jnp.linspace(-1.0, 1.0, width) if width > 1 else jnp.zeros((1,))
  gy, gx = jnp.meshgrid(ys, xs, indexing="ij")
  return jnp.stack([gx.reshape(-1), gy.reshape(-1)], axis=-1)


class SpatialSoftmax(nn.Module):
  """Keypoints of patch features: [B, V, P, H] on a (gh, gw) grid -> [B, V * K * 2].

  A 1x1 projection gives K maps per view, a softmax over the P patches turns each into a distribution,
  and its expected grid coordinate is the keypoint (robomimic's / Diffusion Policy's SpatialSoftmax,
  temperature 1).
  """

  num_keypoints: int
  grid: tuple[int, int]
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    b, v, p, _ = tokens.shape
    gh, gw = self.grid
    if p != gh * gw:
      raise UserError(f"spatial_softmax got {p} patches per view, expected a {gh}x{gw} grid")
    logits = layers.Dense(self.num_keypoints, init_scheme=self.init_scheme, dtype=self.dtype,
                          name="keypoint_maps")(tokens).astype(jnp.float32)  # [B, V, P, K]
    attention = jax.nn.softmax(logits, axis=2)
    keypoints = jnp.einsum("bvpk,pc->bvkc", attention, grid_coordinates(gh, gw))
    return keypoints.reshape(b, v * self.num_keypoints * 2)


class AttentionReadout(nn.Module):
  """K learned queries attend over the valid tokens (multi-head, float32 softmax) -> [B, K * H]."""

  num_queries: int
  num_heads: int
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
    b, length, width = hidden.shape
    heads = self.num_heads
    head_dim = width // heads
    queries = self.param("query_embedding", initializers.embedding_init(self.init_scheme), (self.num_queries, width),
                         jnp.float32)
    dense = lambda name: layers.Dense(width, init_scheme=self.init_scheme, dtype=self.dtype, name=name)
    q = dense("q_proj")(jnp.broadcast_to(queries.astype(self.dtype), (b, self.num_queries, width)))
    k, v = dense("k_proj")(hidden), dense("v_proj")(hidden)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, head_dim)
    out = layers.softmax_attention(split(q), split(k), split(v), mask[:, None, None, :])
    out = dense("out_proj")(out.reshape(b, self.num_queries, width).astype(self.dtype))
    out = layers.layer_norm(1e-5, name="norm", dtype=self.dtype)(out)
    return out.reshape(b, self.num_queries * width)


class ConditionEncoder(nn.Module):
  """readout(hidden) -> concat robot state -> Linear back to the decoder width H = global condition.

  With readout="mean" this is exactly TinyVLA's encoder (and its parameter names): masked mean ->
  LayerNorm -> concat state -> Linear.
  """

  readout: str = "mean"
  num_keypoints: int = 32
  num_queries: int = 4
  num_views: int = 1
  grid: tuple[int, int] = (1, 1)  # the patch grid of one view
  keypoint_source: str = "decoder"  # spatial_softmax reads the decoder's image positions, or the vision tokens
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, mask: jax.Array, image_start: jax.Array, state: jax.Array,
               image_tokens: jax.Array | None = None) -> jax.Array:
    b, length, width = hidden.shape
    num_image = self.num_views * self.grid[0] * self.grid[1]
    norm = lambda name: layers.layer_norm(1e-5, name=name)
    if self.readout == "mean":
      features = [norm("norm_after_pool")(masked_mean(hidden, mask))]
    elif self.readout == "attention":
      features = [AttentionReadout(self.num_queries, max(1, width // 64), self.init_scheme, self.dtype,
                                   name="attention_pool")(hidden, mask)]
    elif self.readout in ("split_mean", "spatial_softmax"):
      is_image = image_token_mask(length=length, image_start=image_start, num_tokens=num_image)
      features = [norm("norm_text")(masked_mean(hidden, mask & ~is_image))]
      if self.readout == "split_mean":
        features.append(norm("norm_image")(masked_mean(hidden, is_image)))
      else:
        if self.keypoint_source == "vision":
          if image_tokens is None:
            raise UserError("model.head.keypoint_source='vision' needs the vision tokens (UnifiedTinyVLAModel passes them)")
          tokens = image_tokens
        else:
          tokens = image_block(hidden=hidden, image_start=image_start, num_tokens=num_image)
        tokens = tokens.reshape(b, self.num_views, self.grid[0] * self.grid[1], width)
        features.append(SpatialSoftmax(self.num_keypoints, self.grid, self.init_scheme, self.dtype,
                                       name="spatial_softmax")(tokens))
    else:
      raise UserError(f"model.head.readout={self.readout!r} is not a readout")
    x = jnp.concatenate([f.astype(jnp.float32) for f in features] + [state.astype(jnp.float32)], axis=-1)
    return layers.Dense(width, init_scheme=self.init_scheme, dtype=self.dtype, name="combine")(x)
