"""Where episodes come from, by name (`data.source`): a registry, not an if/else chain.

- "synthetic": the procedural two-target reaching task (data/synthetic.py), generated in memory.
"""

from __future__ import annotations

from typing import Callable

from tinyvla_jax.data import synthetic
from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.models.config import VLAConfig


def _synthetic(data) -> list[Episode]:
  return synthetic.make_episodes(data.num_episodes, seed=data.seed, image_size=data.image_size,
                                 num_cameras=data.num_cameras)


SOURCES: dict[str, Callable] = {"synthetic": _synthetic}


def load_episodes(data) -> list[Episode]:
  if data.source not in SOURCES:
    raise ValueError(f"data.source={data.source!r} is not one of {sorted(SOURCES)}")
  episodes = SOURCES[data.source](data)
  if not episodes:
    raise ValueError(f"data.source={data.source!r} gave no episodes")
  return episodes


def check_matches_model(episodes: list[Episode], model: VLAConfig) -> None:
  """The data's sizes must be the model's: one line naming the config key to change otherwise."""
  ep = episodes[0]
  checks = [("model.head.action_dim", model.head.action_dim, ep.actions.shape[1]),
            ("model.head.state_dim", model.head.state_dim, ep.states.shape[1]),
            ("model.num_cameras", model.num_cameras, ep.images.shape[1])]
  for key, want, got in checks:
    if want != got:
      raise ValueError(f"the data has {got} where {key}={want}: set --config.{key}={got}")
