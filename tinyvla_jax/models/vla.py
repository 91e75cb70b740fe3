"""UnifiedTinyVLAModel: cameras + instruction + robot state -> predicted noise of an action chunk.

  images [B, V, h, w, 3] uint8 --preprocess--> [B*V, S, S, 3] --ViT--> [B*V, P, Dv] --> [B, V*P, Dv]
      --projector--> image tokens [B, V*P, H]
  tokens [B, L] (one IMAGE placeholder per row) --embed_in--> [B, L, H]
  splice: the placeholder is replaced by the V*P image tokens -> [B, L-1+V*P, H] (+ mask)
  GPT-NeoX -> hidden [B, L', H] -> ActionHead(readout, state, noisy actions, t) -> noise [B, T, A]

Camera views are encoded separately (one ViT pass each, weights shared) and their tokens concatenated
in camera order, as TinyVLA does for its two views.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Integer, UInt8

from tinyvla_jax.errors import UserError
from tinyvla_jax.models import layers
from tinyvla_jax.models.action_head import ActionHead
from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.models.language import GPTNeoX
from tinyvla_jax.models.vision import CLIP_MEAN, CLIP_STD, VisionEncoder, preprocess_images


class Projector(nn.Module):
  """LLaVA's projector: "linear", or "mlp2x_gelu" (Linear -> GELU -> Linear); "mlp2x_gelu_ln" adds a
  LayerNorm on its output, so image tokens enter the decoder's residual stream at unit scale per channel.

  Why the LayerNorm: a decoder trained from scratch adds updates that grow the residual stream ~10x over
  its layers (measured on the `cpu` preset: token norm 4 in, 38 before the final LayerNorm), so what the
  image tokens carried in becomes a small part of what the readout sees, and its gradient shrinks with it.
  """

  kind: str
  features: int
  init_scheme: str = "fixed"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = layers.Dense(self.features, init_scheme=self.init_scheme, dtype=self.dtype, name="fc1")(x)
    if self.kind.startswith("mlp2x_gelu"):
      x = jax.nn.gelu(x, approximate=False)
      x = layers.Dense(self.features, init_scheme=self.init_scheme, dtype=self.dtype, name="fc2")(x)
    if self.kind.endswith("_ln"):
      x = layers.layer_norm(1e-5, name="norm", dtype=self.dtype)(x)
    return x


def image_start(tokens: jax.Array, image_token_id: int) -> jax.Array:
  """[B, L] -> [B]: each row's placeholder position, where splicing puts the first image token."""
  return jnp.argmax(tokens == image_token_id, axis=1)


def splice_image_tokens(*, text_embeds: jax.Array, text_mask: jax.Array, tokens: jax.Array,
                        image_embeds: jax.Array, image_token_id: int) -> tuple[jax.Array, jax.Array]:
  """Replaces each row's IMAGE placeholder by the image tokens.

  text_embeds [B, L, H], text_mask [B, L], tokens [B, L] (exactly one `image_token_id` per row; the data
  pipeline checks this), image_embeds [B, N, H] -> (embeds [B, L-1+N, H], mask [B, L-1+N]). The
  placeholder may sit at a different position in each row; image tokens are always valid.
  """
  b, length, _ = text_embeds.shape
  n = image_embeds.shape[1]
  pos = image_start(tokens, image_token_id)[:, None]  # [B, 1]
  j = jnp.arange(length - 1 + n)[None, :]  # output positions
  is_image = (j >= pos) & (j < pos + n)
  text_idx = jnp.where(j < pos, j, j - n + 1).clip(0, length - 1)
  image_idx = (j - pos).clip(0, n - 1)
  from_text = jnp.take_along_axis(text_embeds, text_idx[..., None], axis=1)
  from_image = jnp.take_along_axis(image_embeds.astype(text_embeds.dtype), image_idx[..., None], axis=1)
  embeds = jnp.where(is_image[..., None], from_image, from_text)
  mask = jnp.where(is_image, True, jnp.take_along_axis(text_mask.astype(bool), text_idx, axis=1))
  return embeds, mask


class UnifiedTinyVLAModel(nn.Module):
  """TinyVLA in "action" mode. All public methods take keyword-only arguments and check shapes."""

  config: VLAConfig

  def setup(self):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    self.vision = VisionEncoder(cfg.vision, init_scheme=cfg.init, dtype=dtype, lora=cfg.finetune.lora_for("vision"),
                                remat=cfg.remat, scan=cfg.scan_layers)
    self.projector = Projector(cfg.projector, cfg.language.hidden_size, init_scheme=cfg.init, dtype=dtype)
    self.language = GPTNeoX(cfg.language, init_scheme=cfg.init, dtype=dtype, lora=cfg.finetune.lora_for("language"),
                            remat=cfg.remat, scan=cfg.scan_layers)
    grid = cfg.vision.image_size // cfg.vision.patch_size
    self.head = ActionHead(cfg.head, init_scheme=cfg.init, dtype=dtype, num_views=cfg.encoded_views, grid=(grid, grid),
                           obs_steps=cfg.obs_steps)

  def encode_images(self, images: UInt8[Array, "b v h w 3"]) -> Float[Array, "b n d"]:
    """uint8 [B, V, h, w, 3] -> image tokens in the LLM width [B, E*P, H]. V = obs_steps * num_cameras views,
    oldest step first, cameras in order within a step; E = model.encoded_views (all V, or with
    model.image_history=False the newest step's cameras, the last num_cameras views)."""
    cfg = self.config
    if images.ndim != 5 or images.shape[1] != cfg.num_views or images.shape[-1] != 3:
      raise UserError(f"images must be [B, {cfg.num_views}, H, W, 3] uint8 (model.num_cameras="
                       f"{cfg.num_cameras} x model.obs_steps={cfg.obs_steps} views), got {images.shape}")
    images = images[:, -cfg.encoded_views:]  # all views, or the newest step's (model.image_history=False)
    b, v = images.shape[:2]
    flat = images.reshape((b * v,) + images.shape[2:])
    pixels = preprocess_images(flat, image_size=cfg.vision.image_size, mean=CLIP_MEAN, std=CLIP_STD)
    feats = self.vision(pixels)  # [B*V, P, Dv]
    feats = feats.reshape(b, v * feats.shape[1], feats.shape[2])
    return self.projector(feats)

  def encode(self, *, images: UInt8[Array, "b v h w 3"], tokens: Integer[Array, "b l"],
             token_mask: Bool[Array, "b l"]) -> tuple[Float[Array, "b n d"], Bool[Array, "b n"]]:
    """-> (final LLM hidden states [B, L-1+V*P, H], their validity mask)."""
    hidden, mask, _ = self._encode(images, tokens, token_mask)
    return hidden, mask

  def _encode(self, images, tokens, token_mask):
    if tokens.ndim != 2 or token_mask.shape != tokens.shape or tokens.shape[0] != images.shape[0]:
      raise UserError(f"tokens and token_mask must both be [B={images.shape[0]}, L]; "
                       f"got {tokens.shape} and {token_mask.shape}")
    image_embeds = self.encode_images(images)
    text_embeds = self.language.embed(tokens)
    embeds, mask = splice_image_tokens(text_embeds=text_embeds, text_mask=token_mask, tokens=tokens,
                                       image_embeds=image_embeds, image_token_id=self.config.image_token_id)
    return self.language(embeds, mask), mask, image_embeds

  def condition(self, *, images: UInt8[Array, "b v h w 3"], tokens: Integer[Array, "b l"],
                token_mask: Bool[Array, "b l"], state: Float[Array, "b s"]) -> Float[Array, "b c"]:
    """The observation's global condition [B, H]: computed once per chunk, reused by every denoising step."""
    hidden, mask, image_embeds = self._encode(images, tokens, token_mask)
    return self.head.encode_condition(hidden=hidden, mask=mask, state=state,
                                      image_start=image_start(tokens, self.config.image_token_id),
                                      image_tokens=image_embeds)

  def predict_noise(self, *, condition: Float[Array, "b c"], noisy_actions: Float[Array, "b t a"],
                    timesteps: Integer[Array, " b"]) -> Float[Array, "b t a"]:
    return self.head.predict_noise(noisy_actions=noisy_actions, timesteps=timesteps, condition=condition)

  def predict_privileged(self, *, condition: Float[Array, "b c"]) -> Float[Array, "b p"]:
    """The auxiliary read-out of privileged scene coordinates from a condition (model.head.privileged_dim)."""
    return self.head.predict_privileged(condition)

  def __call__(self, *, images: UInt8[Array, "b v h w 3"], tokens: Integer[Array, "b l"],
               token_mask: Bool[Array, "b l"], state: Float[Array, "b s"], noisy_actions: Float[Array, "b t a"],
               timesteps: Integer[Array, " b"]) -> Float[Array, "b t a"]:
    """Predicted noise [B, T, A] for noisy action chunks [B, T, A] at diffusion steps [B]."""
    cond = self.condition(images=images, tokens=tokens, token_mask=token_mask, state=state)
    if self.config.head.privileged_dim and self.is_initializing():
      self.predict_privileged(condition=cond)  # creates the read-out's parameters; inference never calls it
    return self.predict_noise(condition=cond, noisy_actions=noisy_actions, timesteps=timesteps)


def example_inputs(config: VLAConfig, *, batch: int = 1, text_len: int = 32, image_hw: int | None = None) -> dict:
  """Zero inputs of the right shapes (for init and eval_shape); the placeholder sits at position 0."""
  hw = image_hw or config.vision.image_size
  tokens = jnp.zeros((batch, text_len), jnp.int32).at[:, 0].set(config.image_token_id)
  return dict(
      images=jnp.zeros((batch, config.num_views, hw, hw, 3), jnp.uint8),
      tokens=tokens,
      token_mask=jnp.ones((batch, text_len), bool),
      state=jnp.zeros((batch, config.state_width), jnp.float32),
      noisy_actions=jnp.zeros((batch, config.head.horizon, config.head.action_dim), jnp.float32),
      timesteps=jnp.zeros((batch,), jnp.int32),
  )


def init_params(model: UnifiedTinyVLAModel, rng: jax.Array, **kwargs) -> dict:
  """Initializes the model's parameters from example inputs (`example_inputs` kwargs pass through).

  Jitted: run eagerly, every initializer op compiles on its own (~400 tiny programs, ~15 s of a CPU
  start-up); as one program it compiles once and the persistent compilation cache keeps it."""
  inputs = example_inputs(model.config, **kwargs)
  return jax.jit(lambda key: model.init(key, **inputs)["params"])(rng)
