"""Where the objects were at every step of a stored MetaWorld demo, recovered by replaying it.

A demo stores images, the hand's state and the actions, not the object's and goal's poses (a policy never
sees them). MetaWorld is deterministic given the setup seed and the actions, so resetting to the episode's
setup and stepping its stored actions reproduces every step exactly (the hand's state agrees with the stored
one to float32 rounding, ~3e-8 m). That gives, per step, the first object's and the goal's positions: the
targets of the auxiliary loss `train.privileged_weight` (training/objectives.py), which asks the condition
the action head reads to say where those are.

The replay steps the MuJoCo environment without rendering: ~0.1 s for a 60-step push demo on one core.
"""

from __future__ import annotations

import warnings

import numpy as np

from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.errors import DataError
from tinyvla_jax.sim import metaworld as mw

# The object's xyz, then the goal's xyz (metres, MetaWorld's world frame).
POSE_NAMES = tuple(f"{name}_{axis}" for name in ("object", "goal") for axis in "xyz")
POSE_DIM = len(POSE_NAMES)
# The replayed hand must agree with the stored state this well, or the dataset came from another simulator
# version (or other actions) and its replayed poses would be wrong. The check sees the hand only: a demo
# replayed in a wrong setup is caught once the hand touches an object, not before.
STATE_TOLERANCE_M = 1e-4
# A coordinate that varies less than this within a task (push's goal height) is standardized by this instead.
MIN_STD_M = 1e-3


def poses(raw: np.ndarray) -> np.ndarray:
  """[..., 39] MetaWorld observations -> [..., 6] the object's and the goal's xyz."""
  return np.concatenate([raw[..., mw.RAW_OBJECT], raw[..., mw.RAW_GOAL]], axis=-1)


def replay_poses(env: mw.MetaWorldTask, episode: Episode, setup_seed: int) -> np.ndarray:
  """float32 [T, 6]: the object's and goal's positions at each of the episode's T steps (the observation each
  stored action was taken from)."""
  first = env.reset(setup_seed=int(setup_seed))
  raws = [first.raw]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for action in episode.actions[:-1]:  # the last action's outcome is not a step of the episode
      raw, *_ = env.env.step(np.asarray(action, np.float64))
      raws.append(raw)
  raws = np.stack(raws)
  drift = float(np.max(np.abs(raws[:, :mw.STATE_DIM] - episode.states)))
  if drift > STATE_TOLERANCE_M:
    raise DataError(f"replaying a {episode.task} demo (setup seed {setup_seed}) puts the hand {drift:.2g} m from its "
                    "stored state: the dataset was collected with another MetaWorld version; collect it again "
                    "to use train.privileged_weight")
  return poses(raws).astype(np.float32)


def episodes_with_poses(episodes: list[Episode]) -> list[Episode]:
  """The episodes with `privileged` set to their replayed poses (each needs its `setup_seed`)."""
  missing = [e.task for e in episodes if e.setup_seed is None]
  if missing:
    raise DataError(f"train.privileged_weight needs each demo's setup seed, which {missing[0]!r} episodes lack: "
                    "only MetaWorld datasets collected by scripts/collect_metaworld.py have them")
  out: list[Episode | None] = [None] * len(episodes)
  for task in dict.fromkeys(e.task for e in episodes):  # one environment per task
    env = mw.MetaWorldTask(task, image_size=8)  # the replay never renders; the renderer is the smallest allowed
    try:
      for i, e in enumerate(episodes):
        if e.task == task:
          out[i] = e.with_privileged(replay_poses(env, e, e.setup_seed))
    finally:
      env.close()
  return out
