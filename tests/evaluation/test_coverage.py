"""Setup coverage: nearest-demo distances, the near/far split, the run's training setups, MetaWorld's setup
vectors and the script that puts them together."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyvla_jax.data import sources, store
from tinyvla_jax.data.episodes import Episode, split_episodes
from tinyvla_jax.errors import UserError
from tinyvla_jax.evaluation import coverage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WINDOW = "window-open-v3"


def test_nearest_distances_against_a_worked_example():
  demos = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
  queries = np.array([[0.0, 0.0], [0.6, 0.0], [3.0, 4.0], [0.0, 1.2]])
  # (0,0) is a demo; (0.6,0) is 0.4 from (1,0); (3,4) is sqrt(9+4) from (0,2), sqrt(4+16) from (1,0), 5 from
  # (0,0); (0,1.2) is 0.8 from (0,2).
  np.testing.assert_allclose(coverage.nearest_distances(demos, queries), [0.0, 0.4, np.sqrt(13.0), 0.8])
  with pytest.raises(UserError, match=r"\[M, D\] demos"):
    coverage.nearest_distances(demos, queries[:, :1])
  with pytest.raises(UserError, match="M >= 1"):
    coverage.nearest_distances(np.zeros((0, 2)), queries)


def test_near_and_far_halves_split_at_the_median_distance():
  distances = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
  outcomes = np.array([True, True, False, True, False, False])
  row = coverage.task_coverage("t", distances, outcomes, demos=7)
  assert row.split == pytest.approx(0.035)
  assert (row.near, row.far, row.successes, row.episodes, row.demos) == ((2, 3), (1, 3), 3, 6, 7)
  assert row.median_success == pytest.approx(0.02) and row.median_failure == pytest.approx(0.05)
  everything = coverage.task_coverage("t", distances, np.ones(6, bool), demos=1)
  assert everything.median_failure is None and "- |" in coverage.format_table([everything])
  table = coverage.format_table([row])
  assert "| t | 7 | 3/6 (50%) | 2/3 (67%) (<= 0.0350) | 1/3 (33%) | 0.0200 / 0.0500 |" in table
  with pytest.raises(UserError, match="one distance per evaluated episode"):
    coverage.task_coverage("t", distances, outcomes[:3], demos=1)


def test_training_setups_are_those_of_the_training_split(tmp_path):
  """The seeds match the episodes that training's split_episodes keeps, task selection and cap included."""
  rng = np.random.default_rng(0)
  w = store.EpisodeWriter(str(tmp_path / "d"), cameras=("corner2",), image_size=8, state_dim=4, action_dim=4)
  seeds = {}
  for i in range(12):
    task = ("reach-v3", "push-v3")[i % 2]
    t = 3 + i % 3
    # The actions name the episode's setup seed, so a loaded episode says which setup it came from.
    ep = Episode(images=rng.integers(0, 256, (t, 1, 8, 8, 3), dtype=np.uint8), states=np.zeros((t, 4), np.float32),
                 actions=np.full((t, 4), 100 + i, np.float32), instruction="", task=task)
    w.ensure_task(task, ("do it",))
    w.record(task=task, success=True, episode=ep, setup_seed=100 + i, instruction_index=0)
    seeds.setdefault(task, []).append(100 + i)
  w.finish()
  ds = store.EpisodeStore(str(tmp_path / "d"))
  for tasks, cap in ((None, None), (["push-v3"], 4)):
    loaded = ds.load(tasks=tasks, max_episodes_per_task=cap)
    train, _ = split_episodes(loaded, val_fraction=0.25, seed=3)
    expected: dict[str, list[int]] = {}
    for e in train:
      expected.setdefault(e.task, []).append(int(e.actions[0, 0]))
    got = coverage.training_setup_seeds(ds, tasks=tasks, max_episodes_per_task=cap, val_fraction=0.25, split_seed=3)
    assert got == expected and sum(map(len, got.values())) < sum(len(v) for t, v in seeds.items() if not tasks or t in tasks)


@pytest.mark.sim
def test_setup_vectors_are_metaworlds_placements():
  pytest.importorskip("metaworld")
  from tinyvla_jax.sim.metaworld import MetaWorldTask
  vectors = coverage.setup_vectors(WINDOW, [5, 6, 5])
  env = MetaWorldTask(WINDOW, image_size=8)
  env.reset(setup_seed=6)
  expected = env.setup
  env.close()
  np.testing.assert_array_equal(vectors[1], expected)
  np.testing.assert_array_equal(vectors[0], vectors[2])
  assert not np.allclose(vectors[0], vectors[1])
  # window-open places the window in x [-0.1, 0.1], y [0.7, 0.9] at a fixed height (MetaWorld's obj_low/high).
  assert vectors.shape == (3, 3) and np.all(np.abs(vectors[:, 0]) <= 0.1) and np.all((0.7 <= vectors[:, 1]) & (vectors[:, 1] <= 0.9))


@pytest.mark.sim
def test_the_script_reads_a_workdir_and_its_evaluations(tmp_path):
  """A workdir on the shipped data; an 'evaluation' whose successes are its setups nearest the demos: the
  table must say near 2/2, far 0/2 for that task."""
  pytest.importorskip("metaworld")
  workdir = tmp_path / "run"
  (workdir / "eval" / "x").mkdir(parents=True)
  data = dict(source="metaworld", path=None, tasks="", max_episodes_per_task=None, val_fraction=0.1, split_seed=0)
  (workdir / "config.json").write_text(json.dumps(dict(data=data)))
  ds = store.EpisodeStore(sources.SHIPPED_DATASET)
  train = coverage.training_setup_seeds(ds, val_fraction=0.1, split_seed=0)
  candidates = [1, 2, 3, 4, 5, 6]
  distances = coverage.nearest_distances(coverage.setup_vectors(WINDOW, train[WINDOW]),
                                         coverage.setup_vectors(WINDOW, candidates))
  order = np.argsort(distances)
  near = {candidates[i] for i in order[:2]}
  chosen = [candidates[i] for i in (*order[:2], *order[-2:])]
  setups = [dict(setup_seed=s, success=s in near, steps=50 if s in near else 200) for s in chosen]
  (workdir / "eval" / "x" / "summary.json").write_text(json.dumps(dict(tasks={WINDOW: dict(setups=setups)})))
  out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "setup_coverage.py"), "--workdir", str(workdir),
                        "--rows"], capture_output=True, text=True, check=True, env=dict(os.environ, MUJOCO_GL="osmesa"))
  row = next(line for line in out.stdout.splitlines() if line.startswith(f"| {WINDOW} |"))
  assert f"| {WINDOW} | {len(train[WINDOW])} | 2/4 (50%) | 2/2 (100%)" in row and "| 0/2 (0%) |" in row
  assert sum(line.startswith(f"{WINDOW},") for line in out.stdout.splitlines()) == 4
  bad = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "setup_coverage.py"), "--workdir",
                        str(tmp_path)], capture_output=True, text=True)
  assert bad.returncode != 0 and "config.json not found" in bad.stderr
