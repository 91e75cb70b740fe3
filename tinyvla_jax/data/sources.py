"""Where episodes come from, by name (`data.source`): a registry, not an if/else chain.

- "metaworld": an episode dataset on disk (data/store.py), made by scripts/collect_metaworld.py.
  `data.path` names it; unset, the small dataset shipped inside the package (SHIPPED_DATASET).
  `data.cameras` / `data.tasks` (comma-separated, empty = all) pick a subset.
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


@dataclasses.dataclass
class LoadedData:
  episodes: list[Episode]
  card: dict | None = None  # what the dataset says about itself (tasks, instructions, cameras, sizes)
  setup_seeds: dict[str, list[int]] | None = None  # setups used by the data, so evaluation can avoid them


def _metaworld(data: DataConfig) -> LoadedData:
  from tinyvla_jax.data.store import EpisodeStore
  store = EpisodeStore(data.path or SHIPPED_DATASET)
  episodes = store.load(cameras=data.names("cameras"), tasks=data.names("tasks"),
                        max_episodes_per_task=data.max_episodes_per_task)
  card = dict(store.card, cameras=data.names("cameras") or list(store.cameras),
              path=os.path.abspath(store.path))
  return LoadedData(episodes=episodes, card=card,
                    setup_seeds={k: sorted(v) for k, v in store.setup_seeds().items()})


def _synthetic(data: DataConfig) -> LoadedData:
  return LoadedData(episodes=synthetic.make_episodes(data.num_episodes, seed=data.seed, image_size=data.image_size,
                                                     num_cameras=data.num_cameras))


SOURCES: dict[str, Callable[..., LoadedData]] = {"metaworld": _metaworld, "synthetic": _synthetic}


def load_data(data: DataConfig) -> LoadedData:
  if data.source not in SOURCES:
    raise UserError(f"data.source={data.source!r} is not one of {sorted(SOURCES)}")
  loaded = SOURCES[data.source](data)
  if not loaded.episodes:
    raise UserError(f"data.source={data.source!r} gave no episodes (check data.path / data.tasks)")
  return loaded
