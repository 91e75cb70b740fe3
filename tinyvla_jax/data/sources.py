"""Where episodes come from, by name (`data.source`): a registry, not an if/else chain.

- "metaworld": an episode dataset on disk (data/store.py), made by scripts/collect_metaworld.py.
  `data.path` names it; unset, the small dataset shipped inside the package (SHIPPED_DATASET).
  `data.cameras` / `data.tasks` (comma-separated, empty = all) pick a subset.
- "lerobot": a local LeRobot dataset folder (codebase v3.0 or v2.1; data/lerobot_format.py), `data.path`.
  `data.cameras` / `data.lerobot_state` / `data.lerobot_action` name its features (LeRobot's conventions by
  default), `data.tasks` picks task strings.
- "synthetic": the procedural two-target reaching task (data/synthetic.py), generated in memory.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from tinyvla_jax.data import synthetic
from tinyvla_jax.data.config import DataConfig
from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.errors import UserError

# 4 MetaWorld tasks x 20 expert demos, corner2 camera at 72 px (see its card.json and the README).
SHIPPED_DATASET = os.path.join(os.path.dirname(__file__), "assets", "metaworld_4tasks")
# The same 4 tasks x 20 demos with spread setups (collect_metaworld.py --setups spread: the placements cover
# each task's range evenly); the long recipe (configs/long.py) trains on it.
SHIPPED_SPREAD_DATASET = os.path.join(os.path.dirname(__file__), "assets", "metaworld_4tasks_spread")


@dataclasses.dataclass
class LoadedData:
  episodes: list[Episode]
  card: dict | None = None  # what the dataset says about itself (tasks, instructions, cameras, sizes)
  setup_seeds: dict[str, list[int]] | None = None  # setups used by the data, so evaluation can avoid them


def _metaworld(data: DataConfig, *, model_image_size: int) -> LoadedData:  # noqa: ARG001 - stored size
  from tinyvla_jax.data.store import EpisodeStore
  store = EpisodeStore(data.path or SHIPPED_DATASET)
  episodes = store.load(cameras=data.names("cameras"), tasks=data.names("tasks"),
                        max_episodes_per_task=data.max_episodes_per_task)
  card = dict(store.card, cameras=data.names("cameras") or list(store.cameras),
              path=os.path.abspath(store.path))
  return LoadedData(episodes=episodes, card=card,
                    setup_seeds={k: sorted(v) for k, v in store.setup_seeds().items()})


def _lerobot_folder(data: DataConfig):
  """The LeRobot folder of `data.path` and the feature mapping of data.cameras / lerobot_state / lerobot_action."""
  from tinyvla_jax.data.lerobot_format import LeRobotFolder, LeRobotMapping
  folder = LeRobotFolder(data.path)
  return folder, folder.resolve(LeRobotMapping(cameras=tuple(data.names("cameras") or ()) or None,
                                               state=data.lerobot_state, action=data.lerobot_action))


def _lerobot(data: DataConfig, *, model_image_size: int) -> LoadedData:
  folder, mapping = _lerobot_folder(data)
  size = data.frame_size or frame_size_for(model_image_size, data.crop_fraction)
  episodes = folder.load(mapping, frame_size=size, tasks=data.names("tasks"),
                         max_episodes_per_task=data.max_episodes_per_task, cache=data.frame_cache)
  tasks: dict[str, dict] = {}
  for e in episodes:
    tasks.setdefault(e.task, dict(instructions=[e.instruction], episodes=0))["episodes"] += 1
  card = dict(format="lerobot", codebase_version=folder.version, fps=folder.fps, cameras=list(mapping.cameras),
              image_size=size, tasks=tasks, state=mapping.state, action=mapping.action,
              path=os.path.abspath(folder.path))
  return LoadedData(episodes=episodes, card=card)


def peek_sizes(data: DataConfig) -> dict[str, int] | None:
  """The action/state sizes and camera count when the metadata alone says them (LeRobot's info.json), so a
  mismatch with the model is one line before any video is decoded; None for the other sources."""
  if data.source != "lerobot":
    return None
  folder, mapping = _lerobot_folder(data)
  return dict(action_dim=int(folder.features[mapping.action]["shape"][0]),
              state_dim=int(folder.features[mapping.state]["shape"][0]), num_cameras=len(mapping.cameras))


def frame_size_for(model_image_size: int, crop_fraction: float) -> int:
  """The stored frame side whose crop window (data.crop_fraction of it) is the model's image size."""
  return max(model_image_size, int(round(model_image_size / crop_fraction)))


def _synthetic(data: DataConfig, *, model_image_size: int) -> LoadedData:  # noqa: ARG001 - data.image_size
  return LoadedData(episodes=synthetic.make_episodes(data.num_episodes, seed=data.seed, image_size=data.image_size,
                                                     num_cameras=data.num_cameras))


SOURCES: dict[str, Callable[..., LoadedData]] = {"metaworld": _metaworld, "lerobot": _lerobot,
                                                  "synthetic": _synthetic}


def load_data(data: DataConfig, *, model_image_size: int = 64) -> LoadedData:
  """`model_image_size`: model.vision.image_size, which sources that resize their frames size them for."""
  if data.source not in SOURCES:
    raise UserError(f"data.source={data.source!r} is not one of {sorted(SOURCES)}")
  loaded = SOURCES[data.source](data, model_image_size=model_image_size)
  if not loaded.episodes:
    raise UserError(f"data.source={data.source!r} gave no episodes (check data.path / data.tasks)")
  return loaded
