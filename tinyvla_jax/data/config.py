"""The `data` section of a run config, typed: where episodes come from and how examples are cut from them.

The defaults are the seed recipe's; the `cpu` recipe changes some (tinyvla_jax/recipes.py says why). Built by
run_config.RunConfig.from_dict from the ml_collections config, so a wrong value is one line naming its key.
"""

from __future__ import annotations

import dataclasses

from tinyvla_jax import checks
from tinyvla_jax.errors import UserError

SOURCES = ("metaworld", "lerobot", "synthetic")
TOKENIZERS = ("byte", "bpe")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The shipped MetaWorld demos by default (data/sources.py). `source="lerobot"` reads a local LeRobot dataset
folder (`path`; the fields under "lerobot only" apply), `source="synthetic"` the procedural reaching task (the
fields under "synthetic only")."""

  source: str = "metaworld"
  path: str | None = None  # the dataset directory; None: the MetaWorld dataset shipped in the package
  # comma-separated camera names ("": all cameras in the dataset); for LeRobot the feature keys
  # ("": every observation.images.* feature)
  cameras: str = ""
  tasks: str = ""  # comma-separated task names; "": all tasks in the dataset
  max_episodes_per_task: int | None = None
  # Diffusion Policy's augmentation: a random window of crop_fraction of the frame at training, the center
  # window at evaluation; the model resizes it to model.vision.image_size (72 x 0.89 = 64).
  random_crop: bool = True
  crop_fraction: float = 0.89
  # Training only: this fraction of examples sees the mean state instead of its own (data/loader.py).
  state_dropout: float = 0.0
  # Training only: an episode's first `first_steps` steps are sampled `first_steps_repeat` times per epoch
  # (data/loader.py says why); 0 / 1: every step once.
  first_steps: int = 0
  first_steps_repeat: int = 1
  # Held-out validation episodes (whole episodes), drawn with split_seed, not train.seed: changing the
  # training seed must not change which demos are held out.
  val_fraction: float = 0.1
  split_seed: int = 0
  max_text_len: int = 64
  # "byte" (UTF-8 bytes, no files) or "bpe" (the instruction BPE shipped in the package: ~4x shorter
  # prompts, data/instruction_bpe.py); a pretrained.llm folder brings its own tokenizer instead.
  tokenizer: str = "byte"
  # lerobot only: the features that are the state and the action; the side of the square frames the images
  # are padded and resized to (None: model.vision.image_size / crop_fraction, so the crop window is the model's
  # size); decoded frames kept on disk for the next run (data/frame_cache.py says where).
  lerobot_state: str = "observation.state"
  lerobot_action: str = "action"
  frame_size: int | None = None
  frame_cache: bool = True
  # synthetic only:
  num_episodes: int = 60
  seed: int = 0
  image_size: int = 32
  num_cameras: int = 1

  def validate(self) -> "DataConfig":
    checks.one_of("data.source", self.source, SOURCES)
    checks.one_of("data.tokenizer", self.tokenizer, TOKENIZERS)
    checks.int_at_least("data.max_episodes_per_task", self.max_episodes_per_task, 1, optional=True)
    checks.in_range("data.val_fraction", self.val_fraction, 0, 1, hi_open=True)
    checks.in_range("data.crop_fraction", self.crop_fraction, 0, 1, lo_open=True)
    checks.in_range("data.state_dropout", self.state_dropout, 0, 1)
    checks.int_at_least("data.max_text_len", self.max_text_len, 1)
    checks.int_at_least("data.first_steps", self.first_steps, 0)
    checks.int_at_least("data.first_steps_repeat", self.first_steps_repeat, 1)
    checks.int_at_least("data.frame_size", self.frame_size, 8, optional=True)
    if self.source == "lerobot" and not self.path:
      raise UserError("data.source='lerobot' needs --config.data.path=DIR (a local LeRobot dataset folder)")
    checks.int_at_least("data.num_episodes", self.num_episodes, 1)
    checks.int_at_least("data.image_size", self.image_size, 1)
    checks.int_at_least("data.num_cameras", self.num_cameras, 1)
    return self

  def names(self, field: str) -> list[str] | None:
    """`cameras` / `tasks` as a list (None: all)."""
    return split_names(getattr(self, field))


def split_names(value: str) -> list[str] | None:
  """A comma-separated config value as a list of names; None when empty (meaning: all)."""
  return [v.strip() for v in value.split(",") if v.strip()] or None
