"""A pretrained LLM's tokenizer (Hugging Face `tokenizer.json`, read by the `tokenizers` library).

Same interface as data/byte_tokenizer.py's ByteTokenizer (data/prompt.py's PromptEncoding): `encode`,
`prompt_ids`, `encode_prompt`, `encode_batch`, `decode`, `image_token_id`, `to_asset`.

The image placeholder. `<image>` is not in Pythia's vocabulary, and LLaVA/TinyVLA never embed their
placeholder (-200): they tokenize the text around it separately and splice the image features in. We do
the same, except the placeholder needs a real row of the embedding table because the model embeds the
whole id sequence before splicing (models/vla.py, splice_image_tokens). So the placeholder is the first
id past the tokenizer's vocabulary (`max id + 1`): the tokenizer never produces it, so it can never be a
text id, and Pythia's embedding table is padded past its tokenizer (50304 rows for 50277 ids) so the row
exists; resolve_model (pretrained/backbones.py) checks that it does. The row's value never reaches the
model: the splice replaces it. The prompt is then, as in LLaVA's tokenizer_image_token:
  [specials before] + ids("USER: ") + [placeholder] + ids("\\n{instruction} ASSISTANT: ") + [specials after]
where the specials are whatever the tokenizer's post-processor adds around one sequence (none for Pythia).

Padding ids are the tokenizer's own pad id when tokenizer.json sets one, else 0; the mask keeps them out
of every result, so their value does not matter.
"""

from __future__ import annotations

import os
from typing import Sequence

from tinyvla_jax.data.prompt import IMAGE_PLACEHOLDER, PROMPT_TEMPLATE, PromptEncoding
from tinyvla_jax.errors import UserError
from tinyvla_jax.extras import require

ASSET_KIND = "hf_tokenizers"
FILE = "tokenizer.json"


class HFTokenizer(PromptEncoding):
  def __init__(self, json_text: str, *, source: str = FILE):
    tokenizers = require("tokenizers")
    try:
      self._tok = tokenizers.Tokenizer.from_str(json_text)
    except Exception as error:  # noqa: BLE001 - the Rust side raises a generic Exception
      raise UserError(f"{source} is not a readable tokenizers file ({str(error).splitlines()[0][:200]})") from None
    self.json_text = json_text
    vocab = self._tok.get_vocab(with_added_tokens=True)
    if not vocab:
      raise UserError(f"{source} has an empty vocabulary")
    self.image_token_id = max(vocab.values()) + 1
    padding = self._tok.padding
    self.pad_id = int(padding["pad_id"]) if padding else 0
    self._prefix, self._suffix = self._specials()

  @classmethod
  def from_folder(cls, folder: str) -> "HFTokenizer":
    path = os.path.join(folder, FILE)
    if not os.path.isfile(path):
      raise UserError(f"{path} not found: a pretrained LLM folder needs its tokenizer.json "
                       "(transformers' save_pretrained of the tokenizer writes it)")
    with open(path, encoding="utf-8") as f:
      return cls(f.read(), source=path)

  @property
  def vocab_size(self) -> int:
    """Ids in use, the placeholder included."""
    return self.image_token_id + 1

  def _specials(self) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a single sequence (e.g. a BOS), found by diffing."""
    plain = self._tok.encode("USER:", add_special_tokens=False).ids
    full = self._tok.encode("USER:", add_special_tokens=True).ids
    for i in range(len(full) - len(plain) + 1):
      if full[i:i + len(plain)] == plain:
        return full[:i], full[i + len(plain):]
    raise UserError("the tokenizer's post-processor rewrites the text's ids, not only adds special tokens: "
                     "such a tokenizer.json is not supported")

  def encode(self, text: str) -> list[int]:
    """The text's ids, without special tokens."""
    return list(self._tok.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids if int(i) != self.image_token_id])

  def prompt_ids(self, instruction: str) -> list[int]:
    before, after = PROMPT_TEMPLATE.split(IMAGE_PLACEHOLDER)
    return (self._prefix + self.encode(before) + [self.image_token_id]
            + self.encode(after.format(instruction=instruction)) + self._suffix)

  def to_asset(self) -> dict:
    """What a checkpoint stores to rebuild this tokenizer without the folder (data/tokenizer.py)."""
    return {"kind": ASSET_KIND, "json": self.json_text, "image_token_id": self.image_token_id}
