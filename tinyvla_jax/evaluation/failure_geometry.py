"""Where a policy's reach / push / pick-place episodes go wrong, in metres (scripts/failure_geometry.py).

The protocol's episodes re-run while MetaWorld's privileged poses (hand, object, goal) are recorded each step:
reach's closest approach to the goal is split along and across the camera's ray through the goal (what one
view cannot and can see); push and pick-place get the hand's closest approach to the object, how far the
object moved and was lifted, and its distance to the goal at the start and at the end.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tinyvla_jax.errors import UserError
from tinyvla_jax.evaluation import rollout
from tinyvla_jax.evaluation.context import check_trained_on
from tinyvla_jax.evaluation.execution import make_execution
from tinyvla_jax.run_config import Protocol
from tinyvla_jax.sim import metaworld as mw

TASKS = ("reach-v3", "push-v3", "pick-place-v3")
HAND, OBJECT, GOAL = mw.RAW_HAND, mw.RAW_OBJECT, mw.RAW_GOAL


@dataclasses.dataclass
class Episode:
  success: bool
  raw: np.ndarray  # [T + 1, 39] every step's privileged observation, the reset's first
  camera: np.ndarray  # [3] world position of the camera the policy sees through


def tasks_to_measure(requested: list[str], trained: list[str] | None) -> list[str]:
  """The tasks to roll out: `requested` (each one of TASKS and, once `trained` is known, one the checkpoint was
  trained on), or when none are requested those of TASKS the checkpoint was trained on."""
  bad = [t for t in requested if t not in TASKS]
  if bad:
    raise UserError(f"--tasks: {bad} not supported; choose from {', '.join(TASKS)}")
  if trained is None:
    return requested
  check_trained_on(requested, trained)
  tasks = requested or [t for t in TASKS if t in trained]
  if not tasks:
    raise UserError(f"the checkpoint was trained on none of {', '.join(TASKS)} (it has {', '.join(trained)}); "
                    "this script measures only those")
  return tasks


def split_along_ray(error: np.ndarray, camera: np.ndarray, target: np.ndarray) -> tuple[float, float]:
  """(|component along the camera->target ray|, |component across it|) of a 3-D position error at target."""
  ray = (target - camera) / np.linalg.norm(target - camera)
  along = float(error @ ray)
  return abs(along), float(np.linalg.norm(error - along * ray))


def reach_geometry(ep: Episode) -> dict:
  goal = ep.raw[0, GOAL]
  gaps = ep.raw[:, HAND] - goal
  closest = gaps[np.argmin(np.linalg.norm(gaps, axis=1))]
  along, across = split_along_ray(closest, ep.camera, goal)
  return dict(closest=float(np.linalg.norm(closest)), along_ray=along, across_ray=across)


def object_geometry(ep: Episode) -> dict:
  hand, obj, goal = ep.raw[:, HAND], ep.raw[:, OBJECT], ep.raw[0, GOAL]
  return dict(closest_to_object=float(np.linalg.norm(hand - obj, axis=1).min()),
              object_moved=float(np.linalg.norm(obj[-1] - obj[0])), object_lifted=float(obj[:, 2].max() - obj[0, 2]),
              object_goal_start=float(np.linalg.norm(obj[0] - goal)),
              object_goal_end=float(np.linalg.norm(obj[-1] - goal)))


def camera_position(env) -> np.ndarray:
  import mujoco
  name = env.cameras[0]
  if name in mw.MOVED_CAMERAS:
    return np.asarray(mw.MOVED_CAMERAS[name][1], np.float64)
  camera = mujoco.mj_name2id(env.env.model, mujoco.mjtObj.mjOBJ_CAMERA, name)
  return env.env.data.cam_xpos[camera].copy()


def episodes_for(policy, context: dict, task: str, *, seed: int, episodes: int, setups: str, max_steps: int):
  """The protocol's episodes of `task` (`rollout.evaluate`'s setups, instructions and noise for `seed`, or the
  demos' own setups), each with every step's privileged observation."""
  demos = sorted(context["exclude_seeds"].get(task, ()))
  if setups == "demos":
    seeds = demos[:episodes]
  else:
    seeds = rollout.eval_setup_seeds(seed=seed, task=task, episodes=episodes, exclude=set(demos))
  runner = make_execution("receding", policy, action_steps=min(Protocol().action_steps, policy.horizon))
  env = mw.MetaWorldTask(task, cameras=context["cameras"], image_size=context["image_size"])
  try:
    out = []
    for i, setup_seed in enumerate(seeds):
      policy.start_episode(task, rollout.episode_instruction(task, context["instructions"], i), episode=i)
      result = rollout.run_episode(env, runner, setup_seed=setup_seed, max_steps=max_steps, record_raw=True)
      out.append(Episode(success=result.success, raw=result.raw, camera=camera_position(env)))
    return out
  finally:
    env.close()


def describe(task: str, episodes: list[Episode]) -> str:
  wins = sum(e.success for e in episodes)
  failed = [e for e in episodes if not e.success]
  line = f"{task}: {wins}/{len(episodes)} succeeded"
  if not failed:
    return line
  rows = [reach_geometry(e) if task == "reach-v3" else object_geometry(e) for e in failed]
  medians = {k: np.median([r[k] for r in rows]) for k in rows[0]}
  return line + "; failures' medians (m): " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items())
