"""TinyVLA with the seed's four fixes (the product's default recipe).

Run (trains the `cpu` preset on the shipped MetaWorld dataset on a laptop CPU):
  python -m tinyvla_jax.train --config configs/fixed.py --workdir workdirs/fixed
Other sizes:  --config configs/fixed.py:tiny | :cpu | :s | :b | :h
Inspect sizes without allocating weights:
  python -m tinyvla_jax.summary --config configs/fixed.py:s
Pretrained backbones (local Hugging Face folders; `pip install 'tinyvla_jax[pretrained]'`), LoRA r=64 on
both by default for s/b/h (`--config.model.finetune.{vision,language}=full|lora|frozen`):
  python -m tinyvla_jax.train --config configs/fixed.py:s --config.pretrained.llm=/models/pythia-70m \
      --config.pretrained.vision=/models/clip-vit-large-patch14-336

The recipe (the seed's fixes): 1) xavier_uniform(gain 0.5)/kaiming_normal(fan_out) init, 2) no loss
clipping, non-finite batches skipped, 3) AdamW lr 1e-4, betas (0.9, 0.95), eps 1e-8, weight decay
0.01, cosine decay, batch 4, 4) gradient clipping by global norm 1.0. The seed's PyTorch run of this
recipe reached an epsilon-MSE of 0.16 after 10 epochs (its data and 73M head).

What it reaches here (default data, 2-core CPU, measured by scripts/reproduce_seed.py):
  (default, :cpu)  train loss 0.94 -> 0.30, val 0.80 -> 0.34 after 10 epochs (1390 steps), ~10 min.
  :tiny            train loss 1.00 -> 0.54, val 0.57 after 10 epochs, ~3 min (reports/seed/seed_table.md).
"""

from tinyvla_jax import presets
from tinyvla_jax.recipes import fixed_recipe


def get_config(preset: str = "cpu"):
  return fixed_recipe(presets.model_preset(preset or "cpu"), preset=preset or "cpu")
