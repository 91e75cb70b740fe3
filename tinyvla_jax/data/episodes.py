"""Episodes: the unit of robot data (one demonstration), independent of where it was stored."""

from __future__ import annotations

import dataclasses

import numpy as np

from tinyvla_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Episode:
  images: np.ndarray  # uint8 [T, V, H, W, 3]: V camera views per step
  states: np.ndarray  # float32 [T, S]: robot proprioception (not privileged object state)
  actions: np.ndarray  # float32 [T, A]
  instruction: str
  task: str
  # MetaWorld demos: the seed that placed the objects (sim/metaworld.py), and, once replayed
  # (sim/privileged.py), float32 [T, D] privileged scene coordinates per step. Training never needs either,
  # except for the auxiliary loss train.privileged_weight.
  setup_seed: int | None = None
  privileged: np.ndarray | None = None

  def __post_init__(self):
    t = len(self.actions)
    if self.images.ndim != 5 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
      raise UserError(f"episode {self.task!r}: images must be uint8 [T, V, H, W, 3], got "
                       f"{self.images.dtype} {self.images.shape}")
    if self.states.ndim != 2 or self.actions.ndim != 2:
      raise UserError(f"episode {self.task!r}: states [T, S] and actions [T, A] expected, got "
                       f"{self.states.shape} and {self.actions.shape}")
    if not (len(self.images) == len(self.states) == t) or t == 0:
      raise UserError(f"episode {self.task!r}: images/states/actions have {len(self.images)}/"
                       f"{len(self.states)}/{t} steps; they must be equal and non-zero")

    if self.privileged is not None and (self.privileged.ndim != 2 or len(self.privileged) != t):
      raise UserError(f"episode {self.task!r}: privileged must be [T={t}, D], got {self.privileged.shape}")

  def with_privileged(self, privileged: np.ndarray) -> "Episode":
    return dataclasses.replace(self, privileged=privileged)

  def __len__(self) -> int:
    return len(self.actions)


def split_episodes(episodes: list[Episode], *, val_fraction: float, seed: int) -> tuple[list[Episode], list[Episode]]:
  """Held-out episodes for validation (whole episodes, never steps of a training episode)."""
  if not 0 <= val_fraction < 1:
    raise UserError(f"data.val_fraction={val_fraction} must be in [0, 1)")
  order = np.random.default_rng(seed).permutation(len(episodes))
  n_val = int(round(val_fraction * len(episodes)))
  if val_fraction > 0 and len(episodes) > 1:
    n_val = max(n_val, 1)
  val = [episodes[i] for i in sorted(order[:n_val])]
  train = [episodes[i] for i in sorted(order[n_val:])]
  return train, val
