"""Parameterized building blocks that take their initializers from `initializers.py`.

Each layer carries the init scheme (`"fixed"` / `"torch_default"`) so one config switch reaches every
weight. The layers compute in `dtype` and keep float32 parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tinyvla_jax.errors import UserError
from tinyvla_jax.models import conv as conv_lib
from tinyvla_jax.models import initializers
from tinyvla_jax.models.config import LoraConfig

Dtype = Any


def mish(x: jax.Array) -> jax.Array:
  return x * jnp.tanh(jax.nn.softplus(x))


def quick_gelu(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch nn.GELU(), erf form
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # torch GELU(approximate="tanh")
    "quick_gelu": quick_gelu,  # CLIP
    "mish": mish,
}


class Dense(nn.Module):
  """A Linear layer. kernel [in, out]; torch weight [out, in] is its transpose.

  With `lora` set it also holds LoRA adapters `lora_a` [in, r] and `lora_b` [r, out] (models/lora.py) and
  adds dropout(x) @ A @ B * alpha / r. The dropout is on only when the caller passes a "dropout" rng (the
  train step does; init, evaluation and sampling do not), so no train flag runs through the model.
  """

  features: int
  init_scheme: str = "fixed"
  use_bias: bool = True
  kind: str = "dense"  # "projection" documents a Dense that stands for a width-1 conv
  dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", initializers.kernel_init(self.init_scheme, "dense"), (fan_in, self.features), jnp.float32)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", initializers.bias_init(self.init_scheme, fan_in), (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    if self.lora is not None:
      # Created after kernel and bias: those draw the same values with or without adapters.
      a = self.param("lora_a", initializers.lora_a_init(), (fan_in, self.lora.rank), jnp.float32)
      b = self.param("lora_b", initializers.lora_b_init(), (self.lora.rank, self.features), jnp.float32)
      h = x.astype(self.dtype)
      if self.lora.dropout > 0 and self.has_rng("dropout"):
        h = nn.Dropout(self.lora.dropout, deterministic=False)(h, rng=self.make_rng("dropout"))
      y = y + jnp.dot(jnp.dot(h, a.astype(self.dtype)), b.astype(self.dtype)) * self.lora.scaling
    return y


class Conv1d(nn.Module):
  """torch.nn.Conv1d on [B, L, C] activations. kernel [K, in, out] (torch weight.transpose(2, 1, 0)).

  kind="conv" uses the conv initializer; kind="projection" (only for width 1) the Dense one -- see
  initializers.py for why the U-Net's output projection is one.
  """

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  init_scheme: str = "fixed"
  kind: str = "conv"
  impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == "projection" and self.kernel_size != 1:
      raise UserError(f"a projection conv must have kernel_size 1, got {self.kernel_size}")
    fan_in = x.shape[-1] * self.kernel_size
    kernel = self.param("kernel", initializers.kernel_init(self.init_scheme, self.kind),
                        (self.kernel_size, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", initializers.bias_init(self.init_scheme, fan_in), (self.features,), jnp.float32)
    y = conv_lib.conv1d(x.astype(self.dtype), kernel.astype(self.dtype), stride=self.stride,
                        padding=(self.padding, self.padding), impl=self.impl)
    return y + bias.astype(self.dtype)


class Conv2d(nn.Module):
  """torch.nn.Conv2d on [B, H, W, C] images. kernel [kh, kw, in, out] (torch weight.transpose(2, 3, 1, 0));
  fans are in*kh*kw and out*kh*kw, as torch computes them."""

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", initializers.kernel_init(self.init_scheme, "conv"), (k, k, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", initializers.bias_init(self.init_scheme, x.shape[-1] * k * k), (self.features,),
                      jnp.float32)
    pad = ((self.padding, self.padding),) * 2
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (self.stride,) * 2, pad,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(self.dtype)


class ConvTranspose1d(nn.Module):
  """torch.nn.ConvTranspose1d on [B, L, C]. kernel [K, in, out] (torch weight [in, out, K].transpose(2, 0, 1))."""

  features: int
  kernel_size: int
  stride: int
  padding: int
  init_scheme: str = "fixed"
  impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # torch computes a transposed conv's fans from weight [in, out, K]: "fan_in" = out * K.
    fan_in = self.features * self.kernel_size
    kernel = self.param("kernel", initializers.kernel_init(self.init_scheme, "conv_transpose"),
                        (self.kernel_size, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", initializers.bias_init(self.init_scheme, fan_in), (self.features,), jnp.float32)
    y = conv_lib.conv_transpose1d(x.astype(self.dtype), kernel.astype(self.dtype), stride=self.stride,
                                  padding=self.padding, impl=self.impl)
    return y + bias.astype(self.dtype)


def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Scaled dot-product attention in float32 (softmax needs the digits), whatever the compute dtype.

  q/k/v [B, L, heads, head_dim]; mask broadcastable to [B, heads, Lq, Lk], True = may attend.
  Returns float32 [B, Lq, heads, head_dim].
  """
  q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def layer_norm(eps: float, name: str | None = None, dtype: Dtype = jnp.float32) -> nn.LayerNorm:
  # Exact two-pass variance: the fast E[x^2]-E[x]^2 form loses digits the parity tests need.
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32, name=name)


def group_norm(num_groups: int, eps: float = 1e-5, name: str | None = None, dtype: Dtype = jnp.float32) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=num_groups, epsilon=eps, use_fast_variance=False, dtype=dtype,
                      param_dtype=jnp.float32, name=name)
