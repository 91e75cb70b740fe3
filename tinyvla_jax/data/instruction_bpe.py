"""A small byte-level BPE for robot instructions, trained on the prompts and shipped as an asset.

Why: the byte tokenizer spells every prompt out letter by letter ("USER: <image>\\n open the drawer
ASSISTANT: " is 40 ids), and the decoder's cost grows with the sequence. A BPE trained on the prompt
template and the instructions of all 50 MetaWorld tasks encodes such a prompt in ~8 ids (whole words and
the template's pieces are single tokens), while its byte-level alphabet still encodes any other text:
an unseen word falls back to smaller pieces, down to single bytes, never to an unknown token.

The shipped file (`SHIPPED`, a Hugging Face tokenizer.json) is made by scripts/train_tokenizer.py from
`corpus()`; `data.tokenizer="bpe"` selects it and data/hf_tokenizer.py reads it, so a checkpoint stores it
in its assets like a pretrained LLM's tokenizer. Its image placeholder is the first id past its
vocabulary (`SHIPPED_IMAGE_TOKEN_ID`, which the presets use and a test pins against the file).
"""

from __future__ import annotations

import os

from tinyvla_jax.data.hf_tokenizer import HFTokenizer
from tinyvla_jax.data.prompt import IMAGE_PLACEHOLDER, PROMPT_TEMPLATE
from tinyvla_jax.extras import require

SHIPPED = os.path.join(os.path.dirname(__file__), "assets", "instruction_bpe", "tokenizer.json")
VOCAB_SIZE = 512  # ids the BPE may use; training on this corpus stops below it once every word is one token
SHIPPED_IMAGE_TOKEN_ID = 512  # max id of the shipped file + 1 (tests/data/test_instruction_bpe.py checks)


def corpus(instructions: dict[str, tuple[str, ...]]) -> list[str]:
  """Training texts: every rendered prompt (template around each instruction), split at the placeholder
  exactly as prompts are encoded (data/hf_tokenizer.py encodes the two sides apart)."""
  before, after = PROMPT_TEMPLATE.split(IMAGE_PLACEHOLDER)
  texts = []
  for task in sorted(instructions):
    for instruction in instructions[task]:
      texts += [before, after.format(instruction=instruction)]
  return texts


def train(texts: list[str], *, vocab_size: int = VOCAB_SIZE) -> str:
  """-> tokenizer.json text of a byte-level BPE (GPT-2's pre-tokenizer and decoder) trained on `texts`."""
  tokenizers = require("tokenizers")
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=1, show_progress=False,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer=trainer)
  return tok.to_str(pretty=True)


def load_shipped() -> HFTokenizer:
  with open(SHIPPED, encoding="utf-8") as f:
    return HFTokenizer(f.read(), source=SHIPPED)
