"""Are a run's closed-loop failures where its demonstrations are sparse? (tinyvla_jax/evaluation/coverage.py)

  python scripts/setup_coverage.py --workdir workdirs/fixed                 # every evaluation under W/eval
  python scripts/setup_coverage.py --workdir workdirs/fixed --summary workdirs/fixed/eval/X/summary.json

For each task: the success rate on the evaluated setups nearest the training demos (nearest-demo distance
at most the median) and on the farthest half, and the median distance of successes and of failures. The
training demos are the run's: its dataset, task selection and validation split (from W/config.json).
--rows also prints every episode (setup vector, nearest distance, outcome) as CSV.
Needs the `sim` extra (the setups are re-drawn from their seeds).
"""

from __future__ import annotations

import glob
import json
import os
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (its config.json names the data and split).")
_SUMMARY = flags.DEFINE_multi_string("summary", None, "Evaluation summary.json (repeatable; default: every "
                                     "<workdir>/eval/*/summary.json). Episodes of several summaries pool.")
_ROWS = flags.DEFINE_bool("rows", False, "Also print one CSV row per episode.")


def main(argv):
  del argv
  from tinyvla_jax.data import sources
  from tinyvla_jax.data.store import EpisodeStore
  from tinyvla_jax.evaluation import coverage
  workdir = _WORKDIR.value
  if not workdir:
    raise app.UsageError("--workdir is required")
  config_path = os.path.join(workdir, "config.json")
  if not os.path.isfile(config_path):
    sys.exit(f"error: {config_path} not found: --workdir must be a training workdir")
  with open(config_path) as f:
    data = json.load(f)["data"]
  if data.get("source") != "metaworld":
    sys.exit(f"error: {workdir} trained on data.source={data.get('source')!r}: setups exist for MetaWorld only")
  summaries = _SUMMARY.value or sorted(glob.glob(os.path.join(workdir, "eval", "*", "summary.json")))
  if not summaries:
    sys.exit(f"error: no evaluation under {workdir}/eval: run python -m tinyvla_jax.evaluate --workdir {workdir} "
             "first, or pass --summary")
  names = [n for n in (data.get("tasks") or "").split(",") if n] or None
  store = EpisodeStore(data.get("path") or sources.SHIPPED_DATASET)
  train = coverage.training_setup_seeds(store, tasks=names, max_episodes_per_task=data.get("max_episodes_per_task"),
                                        val_fraction=data["val_fraction"], split_seed=data["split_seed"])
  episodes: dict[str, list[dict]] = {}
  for path in summaries:
    with open(path) as f:
      for task, result in json.load(f)["tasks"].items():
        episodes.setdefault(task, []).extend(result["setups"])
  print(f"{len(summaries)} evaluation(s): {', '.join(os.path.relpath(p, workdir) for p in summaries)}")
  rows, csv = [], ["task,setup_seed,success,steps,nearest_demo_distance,setup"]
  for task, eps in episodes.items():
    if task not in train:
      print(f"{task}: no training demos in this run's data; skipped")
      continue
    demos = coverage.setup_vectors(task, train[task])
    setups = coverage.setup_vectors(task, [e["setup_seed"] for e in eps])
    distances = coverage.nearest_distances(demos, setups)
    rows.append(coverage.task_coverage(task, distances, [e["success"] for e in eps], demos=len(demos)))
    csv += [f"{task},{e['setup_seed']},{int(e['success'])},{e['steps']},{d:.5f},{' '.join(f'{v:.4f}' for v in s)}"
            for e, d, s in zip(eps, distances, setups)]
  print(coverage.format_table(rows))
  if _ROWS.value:
    print("\n".join(csv))


if __name__ == "__main__":
  os.environ.setdefault("MUJOCO_GL", "osmesa")
  app.run(main)
