"""The original, broken TinyVLA recipe, to reproduce its failure on demand.

Run:  python -m tinyvla_jax.train --config configs/broken.py --workdir workdirs/broken
Compare with the fixed recipe:  python scripts/reproduce_seed.py

What differs from configs/fixed.py (and nothing else):
- PyTorch's default init everywhere (model.init="torch_default"),
- AdamW lr 1e-3 with torch's default betas (0.9, 0.999) and weight decay 0.01 on every parameter,
  constant learning rate (no schedule), batch 16,
- no gradient clipping,
- "loss clipping": the loss (and so its gradient) is scaled by 0.1 whenever it exceeds 1000.
The seed's PyTorch run of this recipe sat at a loss of 1400+. Whether the JAX port reproduces that gap
is measured, not assumed: see scripts/reproduce_seed.py and its table.
"""

from tinyvla_jax import presets
from tinyvla_jax.recipes import broken_recipe


def get_config(preset: str = "cpu"):
  return broken_recipe(presets.model_preset(preset or "cpu"), preset=preset or "cpu")
