"""The instruction BPE shipped as an asset: pinned ids, short prompts, a checkpoint round trip, and the
file is what its training script makes."""

from __future__ import annotations

import numpy as np
import pytest

from tinyvla_jax import presets, recipes
from tinyvla_jax.data import instruction_bpe
from tinyvla_jax.data.byte_tokenizer import ByteTokenizer
from tinyvla_jax.data.tokenizer import make_tokenizer, tokenizer_from_assets

INSTRUCTIONS = ["open the drawer", "press the button from the top", "slide the window open"]


def test_shipped_file_placeholder_and_prompt_lengths():
  tok = instruction_bpe.load_shipped()
  assert tok.image_token_id == instruction_bpe.SHIPPED_IMAGE_TOKEN_ID
  for text in INSTRUCTIONS:
    ids = tok.prompt_ids(text)
    assert ids.count(tok.image_token_id) == 1
    # About 4x shorter than bytes, and it decodes back to the prompt around the placeholder.
    assert len(ids) * 3 <= len(ByteTokenizer().prompt_ids(text))
    assert text in tok.decode(ids)
  # Text it never saw still encodes (byte fallback), with no unknown token.
  odd = "grasp the ünïcode mug 🙂"
  assert odd in tok.decode(tok.prompt_ids(odd))


def test_checkpoint_asset_round_trip():
  tok = make_tokenizer("bpe")
  again = tokenizer_from_assets({"tokenizer": tok.to_asset()})
  for text in INSTRUCTIONS:
    for a, b in zip(tok.encode_prompt(text, max_length=24), again.encode_prompt(text, max_length=24)):
      np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="data.tokenizer='words' must be one of"):
    make_tokenizer("words")
  c = recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny")
  c.data.tokenizer = "words"  # refused as soon as the run config is built
  with pytest.raises(ValueError, match=r"--config.data.tokenizer='words' must be one of \('byte', 'bpe'\)"):
    recipes.typed(c)


def test_tokenizer_choice_sets_the_placeholder_and_checks_the_vocabulary():
  from tinyvla_jax.run_config import with_backbones
  c = recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny")
  run = recipes.typed(c)
  assert with_backbones(run) is run  # the byte tokenizer's placeholder is the preset's
  c.data.tokenizer = "bpe"
  with pytest.raises(ValueError, match="set --config.model.language.vocab_size=513"):
    with_backbones(recipes.typed(c))
  c.model.language.vocab_size = 513
  assert with_backbones(recipes.typed(c)).model.image_token_id == instruction_bpe.SHIPPED_IMAGE_TOKEN_ID


def test_shipped_file_is_what_the_training_script_makes():
  mw = pytest.importorskip("tinyvla_jax.sim.metaworld")
  pytest.importorskip("metaworld")
  instructions = {task: mw.instructions_for(task) for task in mw.all_task_names()}
  text = instruction_bpe.train(instruction_bpe.corpus(instructions))
  with open(instruction_bpe.SHIPPED, encoding="utf-8") as f:
    assert f.read() == text
