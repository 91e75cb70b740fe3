"""A byte-level tokenizer that needs no files: UTF-8 bytes shifted past four special ids.

  PAD=0  BOS=1  EOS=2  IMAGE=3  byte b -> b + 4   (vocab_size 260)

The template's `<image>` placeholder becomes the single IMAGE id (data/prompt.py). No BOS is added:
Pythia's tokenizer adds none either.
"""

from __future__ import annotations

from typing import Sequence

from tinyvla_jax.data.prompt import IMAGE_PLACEHOLDER, PROMPT_TEMPLATE, PromptEncoding


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
