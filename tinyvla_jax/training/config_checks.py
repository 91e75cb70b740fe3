"""The data against the model config at the start of a run: action/state sizes, cameras and image size
must agree, or one line names the config key to change. (The config's own values are checked when the
typed config is built: run_config.RunConfig.from_dict.)"""

from __future__ import annotations

from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import VLAConfig


def check_sizes(model: VLAConfig, *, action_dim: int, state_dim: int, num_cameras: int) -> None:
  """The data's action/state sizes and camera count must be the model's: one line naming the key otherwise."""
  checks = [("model.head.action_dim", model.head.action_dim, action_dim),
            ("model.head.state_dim", model.head.state_dim, state_dim),
            ("model.num_cameras", model.num_cameras, num_cameras)]
  for key, want, got in checks:
    if want != got:
      raise UserError(f"the data has {got} where {key}={want}: set --config.{key}={got}")


def check_data_matches_model(episodes: list[Episode], model: VLAConfig) -> None:
  """The data's sizes must be the model's: one line naming the config key to change otherwise."""
  ep = episodes[0]
  check_sizes(model, action_dim=ep.actions.shape[1], state_dim=ep.states.shape[1], num_cameras=ep.images.shape[1])
  size = ep.images.shape[2]
  if size < model.vision.image_size:
    raise UserError(f"the data's images are {size} px but model.vision.image_size={model.vision.image_size}: "
                     f"collect with --size >= {model.vision.image_size} (LeRobot data: --config.data.frame_size >= "
                     f"{model.vision.image_size})")
