"""The prompt every tokenizer encodes, and its padding and batching.

The prompt follows TinyVLA's (LLaVA's) template; its `<image>` placeholder becomes a single image id,
which the model replaces by the image tokens (models/vla.py, `splice_image_tokens`). Prompts are right
padded and come with a mask that is True on real tokens. The tokenizers (data/byte_tokenizer.py,
data/hf_tokenizer.py) subclass PromptEncoding; data/tokenizer.py chooses one for a run.
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
