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

PROMPT_TEMPLATE = "USER: <image>\n{instruction} ASSISTANT: "
IMAGE_PLACEHOLDER = "<image>"


class ByteTokenizer:
  PAD = 0
  BOS = 1
  EOS = 2
  IMAGE = 3
  NUM_SPECIAL = 4

  @property
  def vocab_size(self) -> int:
    return self.NUM_SPECIAL + 256

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

  def encode_prompt(self, instruction: str, *, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids int32 [max_length], mask bool [max_length]), right padded with PAD."""
    ids = self.prompt_ids(instruction)
    if len(ids) > max_length:
      raise ValueError(f"prompt {instruction!r} needs {len(ids)} tokens but max_length is {max_length}: "
                       f"raise config.data.max_text_len to at least {len(ids)}")
    out = np.full((max_length,), self.PAD, np.int32)
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
