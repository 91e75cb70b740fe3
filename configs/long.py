"""The long CPU recipe: configs/fixed.py's `cpu` recipe trained longer (45 epochs) on the shipped demos with
spread setups.

Run (80-110 min on 2 CPU cores: 92-98 s per epoch alone, 120-270 s when the cores are shared; then ~2 min
for the closing evaluation):
  python -m tinyvla_jax.train --config configs/long.py --workdir workdirs/long

What differs from configs/fixed.py (and nothing else):
- 45 epochs instead of the default's 24 (the cosine schedule stretches with them): success kept rising with epochs long
  after the validation loss stopped falling;
- both observation frames' images are encoded (`model.image_history=True`), as when it was measured (the
  default encodes the newest only, to fit more epochs into its 30 minutes);
- a closed-loop evaluation every 20 epochs (eval.every_epochs), so metrics.jsonl holds success against
  training time (scripts/plot_metaworld.py draws it).
The data is the default's: the shipped 4 tasks x 20 demos collected with `--setups spread` (data.path, the
package's metaworld_4tasks_spread: the objects' placements cover each task's range evenly; independent
random draws left most of window-open's far range without a demo).
Measured (2-core CPU, HEAD 0380be1, 20 unseen setups per task, receding horizon): 16,335 steps, 106 min start
to last checkpoint (epochs 1-19 shared the cores with tests and a CI run); closed-loop success **99% [93-100%]
on seed 6000, never looked at before**, 100% on seed 1000, 96% on seed 5000 and 98% on seed 4000: pooled
314/320 = 98% [96-99%], window-open 75/80 = 94%. The same 45 epochs on the random-setup demos: 88% pooled
(window-open 65%), and the spread demos at the default's 12 epochs: 72% (as the random ones): neither
change alone, both together reach Diffusion Policy's published 98 / 93 / 100 / 100% on these tasks.
Details: reports/metaworld/README.md.
"""

from tinyvla_jax import presets
from tinyvla_jax.data.sources import SHIPPED_SPREAD_DATASET
from tinyvla_jax.recipes import fixed_recipe


def get_config(preset: str = "cpu"):
  preset = preset or "cpu"
  c = fixed_recipe(presets.model_preset(preset), preset=preset)
  c.train.epochs = 45
  c.data.path = SHIPPED_SPREAD_DATASET
  # Both frames' images through the encoders, as measured (the default encodes the newest only, to fit
  # more epochs in its 30 minutes; 45 epochs with both fit this recipe's budget).
  c.model.image_history = True
  c.eval.every_epochs = 20
  return c
