"""Are closed-loop failures where the demonstrations are sparse? (`scripts/setup_coverage.py`)

A MetaWorld setup is a short vector: the object's (and for some tasks the goal's) placement that reset()
draws from the setup seed (`MetaWorldTask.setup`). For every evaluated episode this module finds the
distance from its setup to the nearest setup the policy was trained on. If failures sit far from every
demonstration and successes near one, the policy interpolates poorly between sparse demos, and more or
better-spread demonstrations are what a task lacks; if failures sit as near to demos as successes, the
policy fails where it has seen the answer, and the model or its training is what to change.

Distances are in the setup vector's own units (metres for MetaWorld's placements), so they compare within
a task, not across tasks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tinyvla_jax.errors import UserError


def training_setup_seeds(store, *, tasks=None, max_episodes_per_task: int | None = None, val_fraction: float,
                         split_seed: int) -> dict[str, list[int]]:
  """The setup seeds of the episodes a run trained on: the same selection and validation split as
  training (data.tasks, data.max_episodes_per_task, data.val_fraction, data.split_seed), per task."""
  from tinyvla_jax.data.episodes import split_episodes
  chosen = store.select(tasks=tasks, max_episodes_per_task=max_episodes_per_task)
  train, _ = split_episodes(chosen, val_fraction=val_fraction, seed=split_seed)  # any list splits the same way
  out: dict[str, list[int]] = {}
  for info in train:
    out.setdefault(info["task"], []).append(int(info["setup_seed"]))
  return out


def setup_vectors(task: str, setup_seeds) -> np.ndarray:
  """[N, D] float64: the placement MetaWorld draws for each setup seed of `task` (needs the `sim` extra)."""
  from tinyvla_jax.sim.metaworld import MetaWorldTask
  env = MetaWorldTask(task, image_size=8)
  try:
    return env.placements(setup_seeds)
  finally:
    env.close()


def nearest_distances(demos: np.ndarray, queries: np.ndarray) -> np.ndarray:
  """[N]: the Euclidean distance from each query row to its nearest demo row."""
  demos, queries = np.asarray(demos, np.float64), np.asarray(queries, np.float64)
  if demos.ndim != 2 or queries.ndim != 2 or demos.shape[1] != queries.shape[1] or not len(demos):
    raise UserError(f"setup vectors must be [M, D] demos and [N, D] queries with M >= 1, got {demos.shape} "
                    f"and {queries.shape}")
  return np.sqrt(((queries[:, None, :] - demos[None, :, :]) ** 2).sum(-1)).min(1)


@dataclasses.dataclass(frozen=True)
class TaskCoverage:
  task: str
  demos: int
  episodes: int
  successes: int
  split: float  # the median nearest-demo distance over the evaluated setups: "near" is <= it, "far" > it
  near: tuple[int, int]  # (successes, episodes) among the near setups
  far: tuple[int, int]
  median_success: float | None  # median nearest-demo distance of the successes / the failures
  median_failure: float | None


def task_coverage(task: str, distances: np.ndarray, successes: np.ndarray, *, demos: int) -> TaskCoverage:
  """Success among the evaluated setups nearer and farther than the median nearest-demo distance."""
  distances, successes = np.asarray(distances, np.float64), np.asarray(successes, bool)
  if distances.shape != successes.shape or distances.ndim != 1 or not len(distances):
    raise UserError(f"{task}: one distance per evaluated episode expected, got {distances.shape} distances "
                    f"for {successes.shape} outcomes")
  split = float(np.median(distances))
  near = distances <= split

  def median(x):
    return float(np.median(x)) if len(x) else None

  return TaskCoverage(task=task, demos=int(demos), episodes=len(distances), successes=int(successes.sum()),
                      split=split, near=(int(successes[near].sum()), int(near.sum())),
                      far=(int(successes[~near].sum()), int((~near).sum())),
                      median_success=median(distances[successes]), median_failure=median(distances[~successes]))


def format_table(rows: list[TaskCoverage]) -> str:
  """A Markdown table: one row per task."""

  def rate(pair):
    s, n = pair
    return f"{s}/{n} ({s / n:.0%})" if n else "-"

  def dist(x):
    return "-" if x is None else f"{x:.4f}"

  lines = ["| task | training demos | success | near demos (distance <= median) | far from demos | median distance: "
           "successes / failures |", "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r.task} | {r.demos} | {rate((r.successes, r.episodes))} | {rate(r.near)} (<= {r.split:.4f}) | "
                 f"{rate(r.far)} | {dist(r.median_success)} / {dist(r.median_failure)} |")
  return "\n".join(lines)
