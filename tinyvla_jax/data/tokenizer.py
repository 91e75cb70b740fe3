"""Which tokenizer a run uses, and rebuilding it from a checkpoint's assets.

Three kinds, one interface (data/prompt.py's PromptEncoding): the byte tokenizer (data/byte_tokenizer.py,
no files), the instruction BPE shipped with the package (data/instruction_bpe.py) and a pretrained LLM's
tokenizer.json (data/hf_tokenizer.py).
"""

from __future__ import annotations

from tinyvla_jax.data import hf_tokenizer, instruction_bpe
from tinyvla_jax.data.byte_tokenizer import ByteTokenizer
from tinyvla_jax.data.config import TOKENIZERS
from tinyvla_jax.errors import UserError


def make_tokenizer(kind: str = "byte", *, llm_folder: str | None = None):
  """The run's tokenizer: the pretrained LLM's tokenizer.json when `llm_folder` (pretrained.llm) is set (see
  data/hf_tokenizer.py), else `kind` (data.tokenizer): "byte" (data/byte_tokenizer.py) or "bpe" (the
  instruction BPE shipped with the package, data/instruction_bpe.py)."""
  if llm_folder:
    return hf_tokenizer.HFTokenizer.from_folder(llm_folder)
  if kind not in TOKENIZERS:
    raise UserError(f"data.tokenizer={kind!r} must be one of {TOKENIZERS} (or set pretrained.llm)")
  if kind == "bpe":
    return instruction_bpe.load_shipped()
  return ByteTokenizer()


def tokenizer_from_assets(assets: dict):
  """Rebuilds the tokenizer a checkpoint was trained with from its assets (`assets["tokenizer"]` is what
  the tokenizer's `to_asset()` returned; checkpoints without the key used the byte tokenizer)."""
  stored = assets.get("tokenizer", "byte")
  if stored == "byte":
    return ByteTokenizer()
  if isinstance(stored, dict) and stored.get("kind") == hf_tokenizer.ASSET_KIND:
    tok = hf_tokenizer.HFTokenizer(stored["json"], source="the checkpoint's tokenizer asset")
    if tok.image_token_id != stored.get("image_token_id", tok.image_token_id):
      raise UserError(f"the checkpoint's tokenizer asset says image_token_id={stored['image_token_id']}, "
                       f"its tokenizer.json gives {tok.image_token_id}")
    return tok
  kind = stored.get("kind") if isinstance(stored, dict) else stored
  raise UserError(f"unknown tokenizer {kind!r} in the checkpoint's assets: expected 'byte' or "
                   f"{{'kind': {hf_tokenizer.ASSET_KIND!r}, ...}}")
