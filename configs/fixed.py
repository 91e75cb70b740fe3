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
recipe reached an epsilon-MSE of 0.16 after 10 epochs (its data and 73M head). The paper presets
(s, b, h) and tiny keep exactly these numbers and TinyVLA's mean readout.

The `cpu` preset (the default) keeps fixes 1, 2 and 4 and AdamW's betas, eps, decay and cosine schedule,
and re-chooses the rest by measurement on the shipped MetaWorld demos (recipes.cpu_recipe has one
reason per line; the ablations are in reports/metaworld/README.md):
  - readout: spatial-softmax keypoints of the vision tokens + the text mean (TinyVLA's mean over all
    hidden states left the image out: shuffling images across a batch changed the loss by 0.0%; now +613%);
  - a conv stem for the ViT (70% vs 62% with the linear patch embedding, 10 episodes per task);
  - no random crop (the +-4 px jitter exceeds the objects' displacement between setups at 72 px);
  - ViT 3 layers, decoder 128 wide with 2 layers, the instruction BPE (12 ids instead of ~44 bytes):
    ~2.5x the examples per second of the earlier sizes;
  - batch 16, lr 1e-3 with 300 warmup steps (validation 0.054 vs 0.084 at lr 3e-4 after 3 epochs; 1e-4
    underfits), Diffusion Policy's EMA (warmup power 0.75), 4 noise samples per encoding;
  - two observation frames and a chunk of 4 actions, all executed (3D Diffusion Policy's MetaWorld
    setting): 82% against 68% with one frame and a chunk of 16, the same 80 unseen setups (seed 4000, 15 epochs);
  - of the two frames only the newest image is encoded (`model.image_history=False`; the head reads both
    states): the step costs 0.62x, so 24 epochs fit where 12 did;
  - the shipped demos collected with spread setups (data.path: `metaworld_4tasks_spread`), whose object
    placements cover each task's range evenly (the random draws left window-open's far range uncovered);
  - 24 epochs (was 19): at 19 the training seed moved a run by ~20 points (83% and 61% for train.seed 0
    and 1); at 24 all three training seeds tried reach 80-95%. 58-61 s per epoch alone here.

What it reaches here (2-core CPU, `python -m tinyvla_jax.train --config configs/fixed.py`, HEAD d3b4f0a):
24 epochs = 8,712 steps, 25.3-25.7 min from start to the last checkpoint over three runs alone (27.2 with the
closing seed-1000 evaluation); image sensitivity +832% at the end. Closed-loop success on 20 unseen setups
per task, seed 8000 never looked at while choosing: **94% [86-97%]** (seed 1000: 95%). Two more training
seeds (`--config.train.seed=1`, `=2`) on the same set: 88% and 90%; over the three runs 217/240 = 90%
[86-94%], window-open the weakest task (45/60 = 75%; 40% for train.seed=1 on seed 7000). A machine
slower than this one may need `--config.train.epochs=19` to stay within 30 minutes (20.4 min here,
83% / 61% for two training seeds). Commands and tables: reports/metaworld/README.md.
  :tiny on the procedural task (scripts/reproduce_seed.py, 10 epochs): train loss 1.00 -> 0.54, val 0.57.
"""

from tinyvla_jax import presets
from tinyvla_jax.recipes import fixed_recipe


def get_config(preset: str = "cpu"):
  return fixed_recipe(presets.model_preset(preset or "cpu"), preset=preset or "cpu")
