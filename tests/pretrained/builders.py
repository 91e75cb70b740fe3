"""Builders for the pretrained-folder tests: tiny backbones' params and a tiny tokenizer.

Nothing is downloaded: folders come either from transformers (random tiny models, `save_pretrained`;
the parity tests) or from our own exporter (random JAX params; needs only safetensors), and the
tokenizer is a byte-level BPE trained here on a few sentences with the `tokenizers` library.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.models.config import LanguageConfig, VisionConfig
from tinyvla_jax.models.language import GPTNeoX
from tinyvla_jax.models.vision import VisionEncoder

TINY_LANGUAGE = LanguageConfig(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, rotary_pct=0.5, rotary_emb_base=1000.0,
                               max_position_embeddings=256)
TINY_VISION = VisionConfig(image_size=32, patch_size=8, width=32, depth=3, num_heads=2, mlp_dim=64)

SENTENCES = ["USER: <image>\npick up the red block ASSISTANT: ", "push the button", "open the drawer slowly",
             "reach the goal position", "close the window", "Pick Up The Blue Cube!", "insert the peg 2 cm deep"]


def random_language_params(config: LanguageConfig, seed: int = 0, scale: float = 0.3) -> dict:
  """GPTNeoX params drawn away from the init (norm scales near 1), so a mix-up of two tensors shows."""
  shapes = jax.eval_shape(lambda: GPTNeoX(config).init(
      jax.random.key(0), jnp.zeros((1, 3), jnp.int32), jnp.ones((1, 3), bool),
      method=lambda m, i, k: m(m.embed(i), k)))["params"]
  return _draw(shapes, seed, scale)


def random_vision_params(config: VisionConfig, seed: int = 0, scale: float = 0.15) -> dict:
  shapes = jax.eval_shape(lambda: VisionEncoder(config).init(
      jax.random.key(0), jnp.zeros((1, config.image_size, config.image_size, 3))))["params"]
  return _draw(shapes, seed, scale)


def _draw(shapes, seed: int, scale: float) -> dict:
  """numpy draws for a tree of shapes (no JAX compile); leaves named "scale" near 1, the rest N(0, scale^2)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    return 1.0 + 0.2 * noise if str(path[-1].key) == "scale" else scale * noise

  return jax.tree_util.tree_map_with_path(draw, shapes)


def random_params_like(shapes, seed: int = 0, scale: float = 0.05) -> dict:
  return _draw(shapes, seed, scale)


def train_bpe_tokenizer_json(*, vocab_size: int = 300, bos: bool = False) -> str:
  """A byte-level BPE like GPT-NeoX's (ByteLevel pre-tokenizer and decoder), trained on SENTENCES."""
  tokenizers = pytest.importorskip("tokenizers")
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|padding|>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
  if bos:
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A $B", special_tokens=[("<|endoftext|>", 0)])
  else:
    tok.post_processor = tokenizers.processors.ByteLevel(trim_offsets=False)
  return tok.to_str()
