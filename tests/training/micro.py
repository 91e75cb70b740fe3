"""The micro training config shared by the loop tests, in process and as a config file for subprocesses:
`python -m tinyvla_jax.train --config tests/training/micro.py --workdir W` (seconds per epoch on a CPU)."""

from tinyvla_jax import presets, recipes


def micro_config(**train):
  """The tiny preset cut further (fewer layers = faster compiles); 8 procedural episodes, 2 epochs."""
  c = recipes.synthetic_data(recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny"))
  c.model.vision.depth = 2  # select_layer -2: one layer runs
  c.model.language.num_hidden_layers = 1
  c.model.head.down_dims = (16, 32)
  c.model.head.step_embed_dim = 16
  c.model.head.horizon = 8
  c.data.num_episodes = 8
  c.data.val_fraction = 0.25
  c.data.max_text_len = 64
  c.train.epochs = 2
  c.train.log_every = 2
  c.train.tensorboard = False
  c.eval.at_end = False
  c.train.update(train)
  return c


def get_config():
  return micro_config()
