"""The long CPU recipe: configs/fixed.py's `cpu` recipe trained longer (45 epochs), with periodic evaluation.

Run (1 h 30 min - 3 h of training on 2 CPU cores: 120-140 s per two-frame epoch alone, 170-270 s when the
cores are shared; plus ~3 min per evaluation):
  python -m tinyvla_jax.train --config configs/long.py --workdir workdirs/long

What differs from configs/fixed.py (and nothing else):
- 45 epochs instead of 12 (the cosine schedule stretches with them): in the one-frame default run the validation
  loss was still falling at the last epoch, so more passes over the same 72 demonstrations are the first
  thing the measurements point at;
- a closed-loop evaluation every 20 epochs (eval.every_epochs; the final checkpoint is evaluated at the
  end as in every run), so metrics.jsonl holds success against training time (scripts/plot_metaworld.py
  draws it).
Measured (2-core CPU) with the previous `cpu` recipe (one observation frame, a chunk of 16; pass
--config.model.obs_steps=1 --config.model.head.horizon=16 to reproduce it): 79.9 min of training (~65 min
alone), closed-loop success on 20 unseen setups per task 86% [77-92%] on seed 2000 and 91% on seed 1000
(70% and 84% for that recipe's 15-epoch run); the validation loss bottoms out at epoch ~28 and then rises
while success keeps rising. With the current recipe (two frames, a chunk of 4), measured at HEAD edc667f:
16,155 steps, 176.5 min of epochs (the cores shared with other work throughout), closed-loop success
90% [81-95%] on seed 5000 (never looked at while choosing), 88% [78-93%] on seed 4000, 86% on seed 1000
(pooled 88% [83-91%] over 240 episodes; window-open 65% [52-76%], the other three 85-100%). So the 95%
goal is not reached: the extra epochs add ~8 points over the default's 79%, all of it on the three
easier tasks. The validation loss is lowest at epoch 14 (0.039) and rises to 0.070 by epoch 45.
Details: reports/metaworld/README.md.
"""

from tinyvla_jax import presets
from tinyvla_jax.recipes import fixed_recipe


def get_config(preset: str = "cpu"):
  preset = preset or "cpu"
  c = fixed_recipe(presets.model_preset(preset), preset=preset)
  c.train.epochs = 45
  c.eval.every_epochs = 20
  return c
