"""A byte-level tokenizer that needs no files: UTF-8 bytes shifted past four special ids.

  PAD=0  BOS=1  EOS=2  IMAGE=3  byte b -> b + 4   (vocab_size 260)

The prompt follows TinyVLA's (LLaVA's) template; its `<image>` placeholder becomes the single IMAGE id,
which the model replaces by the image tokens (models/vla.py, `splice_image_tokens`). Prompts are right
padded with PAD and come with a mask that is True on real tokens. No BOS is added: Pythia's tokenizer
adds none either.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tinyvla_jax.errors import UserError

PROMPT_TEMPLATE = "USER: <image>\n{instruction} ASSISTANT: "
IMAGE_PLACEHOLDER = "<image>"


class PromptEncoding:
  """Padding and batching of prompts, shared by every tokenizer: a subclass gives `prompt_ids(instruction)`
  (the unpadded ids, with exactly one image placeholder) and `pad_id`."""

  pad_id: int

  def prompt_ids(self, instruction: str) -> list[int]:
    raise NotImplementedError

  def encode_prompt(self, instruction: str, *, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids int32 [max_length], mask bool [max_length]), right padded with `pad_id`."""
    ids = self.prompt_ids(instruction)
    if len(ids) > max_length:
      raise UserError(f"prompt {instruction!r} needs {len(ids)} tokens but max_length is {max_length}: "
                       f"raise config.data.max_text_len to at least {len(ids)}")
    out = np.full((max_length,), self.pad_id, np.int32)
    out[: len(ids)] = ids
    mask = np.zeros((max_length,), np.bool_)
    mask[: len(ids)] = True
    return out, mask

  def encode_batch(self, instructions: Sequence[str], *, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids int32 [N, max_length], mask bool [N, max_length])."""
    pairs = [self.encode_prompt(s, max_length=max_length) for s in instructions]
    if not pairs:
      return np.zeros((0, max_length), np.int32), np.zeros((0, max_length), np.bool_)
    ids, masks = zip(*pairs)
    return np.stack(ids), np.stack(masks)


class ByteTokenizer(PromptEncoding):
  PAD = 0
  pad_id = PAD
  BOS = 1
  EOS = 2
  IMAGE = 3
  NUM_SPECIAL = 4

  @property
  def vocab_size(self) -> int:
    return self.NUM_SPECIAL + 256

  @property
  def image_token_id(self) -> int:
    return self.IMAGE

  def to_asset(self) -> str:
    return "byte"

  def encode(self, text: str) -> list[int]:
    return [b + self.NUM_SPECIAL for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    """Skips special ids; a cut multi-byte character decodes as U+FFFD rather than raising."""
    data = bytes(int(i) - self.NUM_SPECIAL for i in ids if int(i) >= self.NUM_SPECIAL)
    return data.decode("utf-8", errors="replace")

  def prompt_ids(self, instruction: str) -> list[int]:
    """The unpadded prompt. Only the template's placeholder becomes IMAGE: an "<image>" typed in the
    instruction stays text, so every prompt has exactly one IMAGE id."""
    before, after = PROMPT_TEMPLATE.split(IMAGE_PLACEHOLDER)
    return self.encode(before) + [self.IMAGE] + self.encode(after.format(instruction=instruction))


# --- choosing a tokenizer -----------------------------------------------------------------------------

TOKENIZERS = ("byte", "bpe")


def make_tokenizer(config):
  """The run's tokenizer: the pretrained LLM's tokenizer.json when `config.pretrained.llm` is set (see
  data/hf_tokenizer.py), else `config.data.tokenizer`: "byte" (this file) or "bpe" (the instruction BPE
  shipped with the package, data/instruction_bpe.py). `config` is the run config (ml_collections)."""
  pre = config.get("pretrained") if hasattr(config, "get") else None
  folder = pre.get("llm") if pre else None
  if folder:
    from tinyvla_jax.data.hf_tokenizer import HFTokenizer

    return HFTokenizer.from_folder(folder)
  data = config.get("data") if hasattr(config, "get") else None
  kind = (data.get("tokenizer") if data is not None else None) or "byte"
  if kind not in TOKENIZERS:
    raise UserError(f"data.tokenizer={kind!r} must be one of {TOKENIZERS} (or set pretrained.llm)")
  if kind == "bpe":
    from tinyvla_jax.data import instruction_bpe

    return instruction_bpe.load_shipped()
  return ByteTokenizer()


def tokenizer_from_assets(assets: dict):
  """Rebuilds the tokenizer a checkpoint was trained with from its assets (`assets["tokenizer"]` is what
  the tokenizer's `to_asset()` returned; checkpoints without the key used the byte tokenizer)."""
  stored = assets.get("tokenizer", "byte")
  if stored == "byte":
    return ByteTokenizer()
  from tinyvla_jax.data import hf_tokenizer

  if isinstance(stored, dict) and stored.get("kind") == hf_tokenizer.ASSET_KIND:
    tok = hf_tokenizer.HFTokenizer(stored["json"], source="the checkpoint's tokenizer asset")
    if tok.image_token_id != stored.get("image_token_id", tok.image_token_id):
      raise UserError(f"the checkpoint's tokenizer asset says image_token_id={stored['image_token_id']}, "
                       f"its tokenizer.json gives {tok.image_token_id}")
    return tok
  kind = stored.get("kind") if isinstance(stored, dict) else stored
  raise UserError(f"unknown tokenizer {kind!r} in the checkpoint's assets: expected 'byte' or "
                   f"{{'kind': {hf_tokenizer.ASSET_KIND!r}, ...}}")
