"""The byte tokenizer and TinyVLA's prompt template."""

import numpy as np
import pytest

from tinyvla_jax.data.byte_tokenizer import ByteTokenizer
from tinyvla_jax.data.prompt import PROMPT_TEMPLATE

tok = ByteTokenizer()


@pytest.mark.parametrize("text", ["", "pick up the red block", "Grüße, 机器人 🤖", "line\nbreak\ttab"])
def test_round_trip(text):
  ids = tok.encode(text)
  assert all(4 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text


def test_decode_skips_specials():
  ids = [tok.BOS, tok.IMAGE] + tok.encode("hi") + [tok.EOS, tok.PAD, tok.PAD]
  assert tok.decode(ids) == "hi"
  assert tok.vocab_size == 260


def test_prompt_layout():
  ids, mask = tok.encode_prompt("open the drawer", max_length=64)
  assert ids.shape == mask.shape == (64,) and ids.dtype == np.int32 and mask.dtype == np.bool_
  n = int(mask.sum())
  assert mask[:n].all() and not mask[n:].any()
  assert (ids[n:] == tok.PAD).all() and (ids[:n] != tok.PAD).all()
  assert (ids == tok.IMAGE).sum() == 1
  before, after = PROMPT_TEMPLATE.split("<image>")
  assert tok.decode(ids[: n]) == before + after.format(instruction="open the drawer")
  assert ids[len(before)] == tok.IMAGE


def test_typed_placeholder_stays_text():
  ids, _ = tok.encode_prompt("look at <image> here", max_length=64)
  assert (ids == tok.IMAGE).sum() == 1


def test_too_long_prompt_names_the_fix():
  need = len(tok.prompt_ids("x" * 40))
  with pytest.raises(ValueError, match=rf"needs {need} tokens .*config\.data\.max_text_len") as e:
    tok.encode_prompt("x" * 40, max_length=need - 1)
  assert "\n" not in str(e.value)
  ids, mask = tok.encode_prompt("x" * 40, max_length=need)
  assert mask.all()


def test_encode_batch():
  ids, mask = tok.encode_batch(["a", "bb", "ccc"], max_length=40)
  assert ids.shape == mask.shape == (3, 40)
  np.testing.assert_array_equal(mask.sum(1), np.array([1, 2, 3]) + mask[0].sum() - 1)
