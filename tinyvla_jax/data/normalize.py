"""Normalization statistics: actions min-max to [-1, 1], robot state mean/std (std floored).

Computed once from the training episodes and stored with every checkpoint (as JSON), so a policy
always acts with the statistics it was trained with.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tinyvla_jax.errors import UserError

STATE_STD_FLOOR = 0.01  # TinyVLA's floor: a constant state dimension must not blow up to inf
ACTION_RANGE_FLOOR = 1e-4  # a constant action dimension maps to 0 instead of dividing by zero


@dataclasses.dataclass(frozen=True)
class NormStats:
  action_min: np.ndarray  # [A]
  action_max: np.ndarray  # [A]
  state_mean: np.ndarray  # [S]
  state_std: np.ndarray  # [S], already floored

  def __post_init__(self):
    # A NaN or inverted range would normalize every batch to NaN: refuse it here, where it is read
    # (a dataset's stats.json, a checkpoint's assets), not as a non-finite loss minutes later.
    for name in ("action_min", "action_max", "state_mean", "state_std"):
      value = np.asarray(getattr(self, name))
      if not np.all(np.isfinite(value)):
        raise UserError(f"normalization statistics: {name} has non-finite values {value.tolist()} "
                        "(recompute them from the data: delete the stale stats file, or re-collect the dataset)")
    if np.any(np.asarray(self.action_max) < np.asarray(self.action_min)):
      raise UserError("normalization statistics: action_max < action_min in some dimension")
    if np.any(np.asarray(self.state_std) <= 0):
      raise UserError("normalization statistics: state_std must be positive")

  @classmethod
  def compute(cls, *, actions: np.ndarray, states: np.ndarray) -> "NormStats":
    """actions [N, A] and states [N, S]: every step of every training episode."""
    if actions.ndim != 2 or states.ndim != 2 or len(actions) == 0:
      raise UserError(f"NormStats.compute needs actions [N, A] and states [N, S] with N > 0; "
                       f"got {actions.shape} and {states.shape}")
    return cls(action_min=actions.min(0).astype(np.float32), action_max=actions.max(0).astype(np.float32),
               state_mean=states.mean(0).astype(np.float32),
               state_std=np.maximum(states.std(0), STATE_STD_FLOOR).astype(np.float32))

  def normalize_actions(self, a):
    span = np.maximum(self.action_max - self.action_min, ACTION_RANGE_FLOOR)
    return (2 * (a - self.action_min) / span - 1).astype(np.float32)

  def unnormalize_actions(self, a):
    span = np.maximum(self.action_max - self.action_min, ACTION_RANGE_FLOOR)
    out = (np.asarray(a) + 1) / 2 * span + self.action_min
    # A dimension the training data never varied (e.g. the gripper in a single task) acts at its constant:
    # the floored span would otherwise let it drift up to ACTION_RANGE_FLOOR above the data's range.
    constant = self.action_max - self.action_min < ACTION_RANGE_FLOOR
    return np.where(constant, (self.action_min + self.action_max) / 2, out).astype(np.float32)

  def normalize_state(self, s):
    return ((s - self.state_mean) / self.state_std).astype(np.float32)

  def to_json(self) -> dict:
    return {k: np.asarray(v).tolist() for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, d: dict) -> "NormStats":
    missing = {f.name for f in dataclasses.fields(cls)} - set(d)
    if missing:
      raise UserError(f"normalization statistics are missing {sorted(missing)}")
    return cls(**{k: np.asarray(d[k], np.float32) for k in d if k in {f.name for f in dataclasses.fields(cls)}})
