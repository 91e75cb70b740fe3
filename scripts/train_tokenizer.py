"""Train the instruction BPE shipped with the package (tinyvla_jax/data/instruction_bpe.py).

  python scripts/train_tokenizer.py                      # rewrites the shipped asset
  python scripts/train_tokenizer.py --out /tmp/tok.json  # somewhere else

The corpus is the prompt template around every instruction paraphrase of all 50 MetaWorld v3 tasks
(sim/metaworld.py: INSTRUCTIONS, and names turned into phrases for the others), so it needs the `sim`
extra. Training is deterministic: the same corpus gives the same file. If the vocabulary changes, update
SHIPPED_IMAGE_TOKEN_ID (its max id + 1) and the `cpu` preset's vocabulary, which a test checks.
"""

from __future__ import annotations

import os

from absl import flags

from tinyvla_jax import cli
from tinyvla_jax.data import instruction_bpe

_OUT = flags.DEFINE_string("out", instruction_bpe.SHIPPED, "Where to write tokenizer.json.")
_VOCAB = flags.DEFINE_integer("vocab_size", instruction_bpe.VOCAB_SIZE, "Largest vocabulary to train.")


def main(argv):
  del argv
  from tinyvla_jax.sim import metaworld as mw
  instructions = {task: mw.instructions_for(task) for task in mw.all_task_names()}
  text = instruction_bpe.train(instruction_bpe.corpus(instructions), vocab_size=_VOCAB.value)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write(text)
  from tinyvla_jax.data.hf_tokenizer import HFTokenizer
  tok = HFTokenizer(text)
  lengths = [len(tok.prompt_ids(i)) for words in instructions.values() for i in words]
  print(f"wrote {_OUT.value}: image placeholder id {tok.image_token_id}, prompts of "
        f"{min(lengths)}-{max(lengths)} ids (mean {sum(lengths) / len(lengths):.1f}) for {len(lengths)} instructions")


if __name__ == "__main__":
  cli.run(main)
