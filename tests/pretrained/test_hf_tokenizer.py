"""The pretrained LLM's tokenizer: same ids as transformers, the image placeholder, checkpoint assets."""

from __future__ import annotations

import numpy as np
import pytest

from builders import train_bpe_tokenizer_json
from tinyvla_jax.data.byte_tokenizer import ByteTokenizer
from tinyvla_jax.data.prompt import PROMPT_TEMPLATE
from tinyvla_jax.data.tokenizer import make_tokenizer, tokenizer_from_assets

INSTRUCTIONS = ["pick up the red block", "Open the drawer, then close it!", "  push  the button ",
                "héllo wörld 42 — stack 3 cubes", "insert the peg 2 cm deep"]


@pytest.fixture(scope="module")
def hf_tokenizer():
  pytest.importorskip("tokenizers")
  from tinyvla_jax.data.hf_tokenizer import HFTokenizer
  return HFTokenizer


def llava_prompt_ids(tok, instruction: str, image_id: int) -> list[int]:
  """LLaVA's tokenizer_image_token (which TinyVLA uses), written against a transformers tokenizer:
  tokenize the text around <image> separately, keep one leading BOS, put the image id between."""
  chunks = [tok(chunk).input_ids for chunk in PROMPT_TEMPLATE.format(instruction=instruction).split("<image>")]
  offset = int(bool(chunks[0]) and tok.bos_token_id is not None and chunks[0][0] == tok.bos_token_id)
  return chunks[0] + [image_id] + chunks[1][offset:]


@pytest.mark.parity
@pytest.mark.parametrize("bos", [False, True], ids=["pythia_like", "with_bos"])
def test_ids_match_transformers(hf_tokenizer, tmp_path, bos):
  transformers = pytest.importorskip("transformers")
  text = train_bpe_tokenizer_json(bos=bos)
  (tmp_path / "tokenizer.json").write_text(text)
  theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                                                bos_token="<|endoftext|>" if bos else None)
  ours = hf_tokenizer.from_folder(str(tmp_path))
  assert ours.image_token_id == len(theirs) == 300  # the first id past the vocabulary
  for instruction in INSTRUCTIONS:
    assert ours.encode(instruction) == theirs(instruction, add_special_tokens=False).input_ids
    prompt = ours.prompt_ids(instruction)
    assert prompt == llava_prompt_ids(theirs, instruction, ours.image_token_id)
    assert prompt.count(ours.image_token_id) == 1 and (prompt[0] == 0) == bos
  print(f"tokenizer ({'bos' if bos else 'no bos'}): ids equal to transformers' for {len(INSTRUCTIONS)} instructions")


def test_prompt_padding_placeholder_and_decode(hf_tokenizer, tokenizer_json):
  tok = hf_tokenizer(tokenizer_json)
  ids, mask = tok.encode_batch(INSTRUCTIONS[:2], max_length=48)
  assert ids.shape == mask.shape == (2, 48) and ids.dtype == np.int32
  for row, m, instruction in zip(ids, mask, INSTRUCTIONS):
    assert list(row[m]) == tok.prompt_ids(instruction) and not m[m.sum():].any()
    assert np.all(row[~m] == tok.pad_id)
    assert tok.decode(row[m]) == PROMPT_TEMPLATE.format(instruction=instruction).replace("<image>", "")
  # A typed "<image>" is text, never the placeholder.
  assert tok.prompt_ids("look at <image>").count(tok.image_token_id) == 1
  with pytest.raises(ValueError, match=r"raise config.data.max_text_len to at least \d+"):
    tok.encode_prompt(INSTRUCTIONS[0], max_length=5)


def test_assets_rebuild_the_same_tokenizer(hf_tokenizer, tokenizer_json):
  tok = hf_tokenizer(tokenizer_json)
  back = tokenizer_from_assets({"tokenizer": tok.to_asset()})
  assert back.image_token_id == tok.image_token_id
  assert all(back.prompt_ids(s) == tok.prompt_ids(s) for s in INSTRUCTIONS)
  assert isinstance(tokenizer_from_assets({"tokenizer": "byte"}), ByteTokenizer)
  assert isinstance(tokenizer_from_assets({}), ByteTokenizer)  # checkpoints from before tokenizers had a choice
  with pytest.raises(ValueError, match="unknown tokenizer 'sentencepiece'"):
    tokenizer_from_assets({"tokenizer": {"kind": "sentencepiece"}})


def test_make_tokenizer_follows_pretrained_llm(hf_tokenizer, tokenizer_json, tmp_path):
  assert isinstance(make_tokenizer("byte", llm_folder=None), ByteTokenizer)
  assert isinstance(make_tokenizer(), ByteTokenizer)
  folder = str(tmp_path)
  with pytest.raises(ValueError, match="tokenizer.json not found: a pretrained LLM folder needs its tokenizer.json"):
    make_tokenizer("byte", llm_folder=folder)
  (tmp_path / "tokenizer.json").write_text(tokenizer_json[:100])
  with pytest.raises(ValueError, match="is not a readable tokenizers file"):
    make_tokenizer("byte", llm_folder=folder)
  (tmp_path / "tokenizer.json").write_text(tokenizer_json)
  assert make_tokenizer("bpe", llm_folder=folder).image_token_id == 300  # the folder's wins over data.tokenizer
