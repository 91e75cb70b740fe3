"""The action head: Diffusion Policy's ConditionalUnet1D behind TinyVLA's condition encoder.

Data flow (B batch, T horizon, A action_dim, H LLM width, S state_dim):

  LLM hidden [B, L, H] --readout (models/readout.py; TinyVLA: masked mean over valid tokens, LayerNorm)-->
      concat state --Linear--> [B, H] = global condition
  timestep [B] --sinusoidal(E)--> Linear(E, 4E) --Mish--> Linear(4E, E) = step embedding [B, E]
  cond = concat(step embedding, global condition) [B, E+H]

  noisy actions [B, T, A] -> U-Net: per level two FiLM residual blocks then a stride-2 conv,
  two mid blocks, per level back up: concat skip, two FiLM blocks, transposed conv; final
  Conv1dBlock + width-1 projection -> predicted noise [B, T, A].

Differences from the PyTorch original, on purpose:
- the pooled mean excludes padding tokens (the original averages them in, so the condition depends
  on how much the batch was padded: a train/eval mismatch);
- activations are [B, T, C] (channels last) instead of torch's [B, C, T]: same math, JAX's layout.
As in Diffusion Policy, the skip from the first (full-resolution) level is computed but never
consumed by the up path; we keep that quirk so TinyVLA checkpoints map one to one.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Integer

from tinyvla_jax.errors import UserError
from tinyvla_jax.models import layers
from tinyvla_jax.models.config import ActionHeadConfig
from tinyvla_jax.models.readout import ConditionEncoder

Dtype = Any


def sinusoidal_embedding(timesteps: jax.Array, dim: int) -> jax.Array:
  """Diffusion Policy's SinusoidalPosEmb: [B] -> [B, dim] = concat(sin, cos), log-spaced frequencies."""
  half = dim // 2
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10000.0) / (half - 1)))
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class Conv1dBlock(nn.Module):
  """Conv1d(k, 'same') -> GroupNorm(n_groups, eps 1e-5) -> Mish."""

  features: int
  kernel_size: int
  n_groups: int
  init_scheme: str
  impl: str
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = layers.Conv1d(self.features, self.kernel_size, padding=self.kernel_size // 2, init_scheme=self.init_scheme,
                      impl=self.impl, dtype=self.dtype, name="conv")(x)
    x = layers.group_norm(self.n_groups, dtype=self.dtype, name="norm")(x)
    return layers.mish(x)


class ConditionalResidualBlock1D(nn.Module):
  """Two Conv1dBlocks with FiLM (scale, bias) from the condition between them, plus a residual."""

  features: int
  kernel_size: int
  n_groups: int
  cond_predict_scale: bool
  init_scheme: str
  impl: str
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, cond):
    block = lambda name: Conv1dBlock(self.features, self.kernel_size, self.n_groups, self.init_scheme, self.impl,
                                     self.dtype, name=name)
    out = block("block0")(x)
    channels = self.features * (2 if self.cond_predict_scale else 1)
    embed = layers.Dense(channels, init_scheme=self.init_scheme, dtype=self.dtype, name="cond_encoder")(layers.mish(cond))
    embed = embed[:, None, :]  # broadcast over time: [B, 1, C]
    if self.cond_predict_scale:
      # torch reshapes [B, 2C] to [B, 2, C]: the first C channels are the scale, the next C the bias.
      out = embed[..., : self.features] * out + embed[..., self.features:]
    else:
      out = out + embed
    out = block("block1")(out)
    if x.shape[-1] != self.features:
      x = layers.Conv1d(self.features, 1, init_scheme=self.init_scheme, impl=self.impl, dtype=self.dtype, name="residual_conv")(x)
    return out + x


class ConditionalUnet1D(nn.Module):
  """Diffusion Policy's ConditionalUnet1D (global condition only). [B, T, A], [B], [B, C] -> [B, T, A]."""

  config: ActionHeadConfig
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, sample: jax.Array, timesteps: jax.Array, global_cond: jax.Array) -> jax.Array:
    cfg = self.config
    impl = cfg.conv_impl
    e = cfg.step_embed_dim
    step = sinusoidal_embedding(timesteps, e)
    step = layers.Dense(4 * e, init_scheme=self.init_scheme, dtype=self.dtype, name="step_encoder_fc1")(step)
    step = layers.Dense(e, init_scheme=self.init_scheme, dtype=self.dtype, name="step_encoder_fc2")(layers.mish(step))
    cond = jnp.concatenate([step.astype(self.dtype), global_cond.astype(self.dtype)], axis=-1)

    def res_block(features, name):
      return ConditionalResidualBlock1D(features, cfg.kernel_size, cfg.n_groups, cfg.cond_predict_scale,
                                        self.init_scheme, impl, self.dtype, name=name)

    x = sample.astype(self.dtype)
    skips = []
    num_levels = len(cfg.down_dims)
    for level, features in enumerate(cfg.down_dims):
      x = res_block(features, f"down{level}_res0")(x, cond)
      x = res_block(features, f"down{level}_res1")(x, cond)
      skips.append(x)
      if level < num_levels - 1:
        x = layers.Conv1d(features, 3, stride=2, padding=1, init_scheme=self.init_scheme, impl=impl, dtype=self.dtype,
                          name=f"down{level}_downsample")(x)
    mid = cfg.down_dims[-1]
    x = res_block(mid, "mid0")(x, cond)
    x = res_block(mid, "mid1")(x, cond)
    # Up path: levels num_levels-2 .. 0, each consuming the skip one level deeper (DP's h.pop()).
    for i, features in enumerate(reversed(cfg.down_dims[:-1])):
      x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = res_block(features, f"up{i}_res0")(x, cond)
      x = res_block(features, f"up{i}_res1")(x, cond)
      x = layers.ConvTranspose1d(features, 4, stride=2, padding=1, init_scheme=self.init_scheme, impl=impl, dtype=self.dtype,
                                 name=f"up{i}_upsample")(x)
    x = Conv1dBlock(cfg.down_dims[0], cfg.kernel_size, cfg.n_groups, self.init_scheme, impl, self.dtype,
                    name="final_block")(x)
    x = layers.Conv1d(cfg.action_dim, 1, init_scheme=self.init_scheme, kind="projection", impl=impl, dtype=self.dtype,
                      name="final_projection")(x)
    return x.astype(jnp.float32)


class ActionHead(nn.Module):
  """Predicts the noise in a noisy action chunk, given LLM hidden states, robot state and timestep."""

  config: ActionHeadConfig
  init_scheme: str = "fixed"
  dtype: Dtype = jnp.float32
  # Where the image tokens are (for the readouts that treat them apart): views per example and the
  # patch grid of one view. obs_steps robot states arrive concatenated.
  num_views: int = 1
  grid: tuple[int, int] = (1, 1)
  obs_steps: int = 1

  def setup(self):
    cfg = self.config
    self.condition = ConditionEncoder(cfg.readout, cfg.num_keypoints, cfg.num_queries, self.num_views,
                                      tuple(self.grid), cfg.keypoint_source, self.init_scheme, self.dtype)
    self.unet = ConditionalUnet1D(cfg, self.init_scheme, self.dtype)
    if cfg.privileged_dim:
      self.privileged = layers.Dense(cfg.privileged_dim, init_scheme=self.init_scheme, dtype=self.dtype)

  def encode_condition(self, *, hidden: jax.Array, mask: jax.Array, state: jax.Array,
                       image_start: jax.Array | None = None, image_tokens: jax.Array | None = None) -> jax.Array:
    """[B, L, H], [B, L], [B, obs_steps * S], image_start [B] (first image token; 0 if None), image_tokens
    [B, V*P, H] (the projected vision tokens as spliced into the decoder; only keypoint_source="vision"
    reads them) -> [B, H]."""
    _check_state(state, self.config, hidden.shape[0], self.obs_steps)
    if mask.shape != hidden.shape[:2]:
      raise UserError(f"hidden {hidden.shape} and mask {mask.shape} disagree: mask must be [B, L]")
    if image_start is None:
      image_start = jnp.zeros((hidden.shape[0],), jnp.int32)
    return self.condition(hidden, mask, image_start, state, image_tokens)

  def predict_noise(self, *, noisy_actions: Float[Array, "b t a"], timesteps: Integer[Array, " b"],
                    condition: Float[Array, "b c"]) -> Float[Array, "b t a"]:
    """[B, T, A], [B] int, [B, H] -> predicted noise [B, T, A]."""
    cfg = self.config
    b = condition.shape[0]
    if noisy_actions.ndim != 3 or noisy_actions.shape[0] != b or noisy_actions.shape[2] != cfg.action_dim:
      raise UserError(f"noisy_actions must be [B={b}, T, action_dim={cfg.action_dim}], got {noisy_actions.shape}")
    t = noisy_actions.shape[1]
    if t % cfg.downsample_factor:
      raise UserError(f"action horizon {t} must be divisible by {cfg.downsample_factor} "
                       f"(the U-Net with {len(cfg.down_dims)} levels halves it {len(cfg.down_dims) - 1} times)")
    timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (b,))
    return self.unet(noisy_actions, timesteps, condition)

  def predict_privileged(self, condition: Float[Array, "b c"]) -> Float[Array, "b p"]:
    """[B, H] -> [B, privileged_dim]: the auxiliary read-out of the condition (train.privileged_weight)."""
    if not self.config.privileged_dim:
      raise UserError("model.head.privileged_dim=0: this model has no privileged read-out")
    return self.privileged(condition).astype(jnp.float32)

  def __call__(self, *, hidden, mask, state, noisy_actions, timesteps):
    condition = self.encode_condition(hidden=hidden, mask=mask, state=state)
    return self.predict_noise(noisy_actions=noisy_actions, timesteps=timesteps, condition=condition)


def _check_state(state, cfg: ActionHeadConfig, batch: int, obs_steps: int = 1) -> None:
  width = cfg.state_dim * obs_steps
  if state.shape != (batch, width):
    raise UserError(f"state must be [B={batch}, {width}] (model.head.state_dim={cfg.state_dim} x "
                     f"model.obs_steps={obs_steps}), got {state.shape}")
