"""Does the condition the action head reads carry where the objects are? (scripts/condition_probe.py)

At an episode's first step the robot's state is the same in every setup (MetaWorld starts the hand at one
pose), so everything that differs between the conditions of two setups comes from the image. A linear
probe, ridge regression cross-validated over setups, predicts the object's and the goal's positions (from
MetaWorld's privileged observation) from the condition vector; its held-out R^2 says how much of each
coordinate the head could read linearly. The same probe on the model at its random initialization is the
reference: random convolutional features already carry position, so a trained model below its own
initialization has learned to drop what it needed.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from tinyvla_jax.errors import UserError
from tinyvla_jax.evaluation import rollout
from tinyvla_jax.sim import metaworld as mw

# Indices into MetaWorld's 39-D observation.
TARGETS = {f"{name}_{axis}": part.start + i for name, part in (("object", mw.RAW_OBJECT), ("goal", mw.RAW_GOAL))
           for i, axis in enumerate("xyz")}
MIN_SPREAD_M = 1e-3  # a coordinate that varies less than this across setups is not probed
MIN_FIRST_MOVE_SPREAD_DEG = 5.0  # the first move is compared only where the expert's varies at least this much


@dataclasses.dataclass
class FirstSteps:
  observations: list  # sim.metaworld.Observation at each setup's reset
  targets: dict[str, np.ndarray]  # name -> [N] metres, only coordinates that vary across the setups


def first_steps(task: str, setup_seeds: list[int], *, cameras, image_size: int) -> FirstSteps:
  env = mw.MetaWorldTask(task, cameras=cameras, image_size=image_size)
  try:
    observations = [env.reset(setup_seed=s) for s in setup_seeds]
  finally:
    env.close()
  raw = np.stack([o.raw for o in observations])
  targets = {name: raw[:, i] for name, i in TARGETS.items() if np.ptp(raw[:, i]) > MIN_SPREAD_M}
  return FirstSteps(observations=observations, targets=targets)


def conditions(policy, task: str, instruction: str, observations: list, params=None) -> np.ndarray:
  """[N, C] the condition vectors of a VLAPolicy over an InferencePolicy for each observation (as the first
  step of an episode); `params` replaces the checkpoint's (e.g. a fresh initialization)."""
  backend = policy.backend
  apply = _condition_fn(backend.model)
  out = []
  for i, obs in enumerate(observations):
    policy.start_episode(task, instruction, episode=i)
    inputs = backend.prepare(policy.request(obs)).inputs
    out.append(np.asarray(apply(backend.params if params is None else params, inputs))[0])
  return np.stack(out)


@functools.lru_cache(maxsize=4)
def _condition_fn(model):
  """One jitted condition function per model (flax modules hash by their config): the trained and the
  initial parameters of every task share one compilation."""
  return jax.jit(lambda p, inputs: model.apply({"params": p}, **inputs, method=model.condition))


def first_move_angles(policy, task: str, instruction: str, observations: list) -> tuple[np.ndarray, np.ndarray]:
  """([N] the policy's, [N] the scripted expert's) direction in the table plane (radians, atan2 of the y and
  x actions) of the first move of each setup: the mean of the policy's first predicted chunk, the expert's
  first action. Where the state is the same in every setup, a policy that ignores the image moves the same
  way in all of them."""
  from tinyvla_jax.evaluation.policies import ExpertPolicy
  expert = ExpertPolicy()
  ours, theirs = [], []
  for i, obs in enumerate(observations):
    policy.start_episode(task, instruction, episode=i)
    expert.start_episode(task, instruction, episode=i)
    ours.append(np.asarray(policy(obs))[:, :2].mean(0))
    theirs.append(np.asarray(expert(obs))[0, :2])
  angle = lambda v: np.arctan2(np.stack(v)[:, 1], np.stack(v)[:, 0])  # noqa: E731
  return angle(ours), angle(theirs)


def angle_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """|a - b| wrapped to [0, 180] degrees."""
  return np.degrees(np.abs((np.asarray(a) - np.asarray(b) + np.pi) % (2 * np.pi) - np.pi))


def ridge_cv_r2(features: np.ndarray, target: np.ndarray, *, folds: int = 5, alpha: float = 1.0) -> float:
  """Held-out R^2 of ridge regression (standardized features, penalty `alpha` per example) over `folds`
  contiguous folds: 1 - sum of squared held-out errors / sum of squares about the training folds' means."""
  n = len(target)
  if n < 2 * folds:
    raise UserError(f"{n} setups are too few for a {folds}-fold probe: pass --setups of at least {2 * folds}")
  x, y = np.asarray(features, np.float64), np.asarray(target, np.float64)
  edges = np.linspace(0, n, folds + 1).astype(int)
  sse = sst = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    train = np.r_[0:lo, hi:n]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-8
    xt, xv = (x[train] - mean) / std, (x[lo:hi] - mean) / std
    y_mean = y[train].mean()
    w = np.linalg.solve(xt.T @ xt + alpha * len(train) * np.eye(x.shape[1]), xt.T @ (y[train] - y_mean))
    sse += float(np.sum((xv @ w + y_mean - y[lo:hi]) ** 2))
    sst += float(np.sum((y[lo:hi] - y_mean) ** 2))
  return 1.0 - sse / sst


def probe(policy, context: dict, task: str, *, seed: int, setups: int, init_params=None, alpha: float = 1.0) -> dict:
  """{model name: {target: held-out R^2}} on `setups` unseen first steps of `task` (evaluate's setups for
  `seed`); "init" as well when `init_params` are given; and "first move": the median angle (degrees) between
  the policy's and the expert's first move in the table plane, against that of one direction for every setup
  (the expert's mean), where the expert's first moves differ between setups (MIN_FIRST_MOVE_SPREAD_DEG)."""
  seeds = rollout.eval_setup_seeds(seed=seed, task=task, episodes=setups,
                                   exclude=set(context["exclude_seeds"].get(task, ())))
  steps = first_steps(task, seeds, cameras=context["cameras"], image_size=context["image_size"])
  instruction = rollout.episode_instruction(task, context["instructions"], 0)
  models = {"trained": None} | ({"init": init_params} if init_params is not None else {})
  out = {}
  for name, params in models.items():
    feats = conditions(policy, task, instruction, steps.observations, params=params)
    out[name] = {t: ridge_cv_r2(feats, y, alpha=alpha) for t, y in steps.targets.items()}
  ours, expert = first_move_angles(policy, task, instruction, steps.observations)
  mean_expert = np.arctan2(np.sin(expert).mean(), np.cos(expert).mean())
  fixed = float(np.median(angle_error_deg(mean_expert, expert)))
  # Where the expert starts the same way in every setup (drawer-close), the comparison says nothing about
  # the image, and the angle of a policy's small first move in the plane is mostly noise.
  if fixed >= MIN_FIRST_MOVE_SPREAD_DEG:
    out["first move"] = {"policy_vs_expert_deg": float(np.median(angle_error_deg(ours, expert))),
                         "one_direction_vs_expert_deg": fixed}
  return out
