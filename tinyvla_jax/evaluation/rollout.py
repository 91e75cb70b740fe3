"""Closed-loop evaluation: rollouts on setups the training data never used, success rates, videos.

    summary = evaluate(policy, tasks=[...], episodes=20, seed=1000, out_dir="eval/", ...)

Setups: episode i of task X uses `setup_seed_for(seed, X, i)` (sim/setups.py, shared with the collection),
skipping any seed the training dataset used (`exclude_seeds`, from the checkpoint's assets), so every evaluated
setup is unseen. The evaluation seed defaults to 1000; collection uses 0.

Outputs under out_dir: summary.json (per-task success rate, mean steps to success, the setups) and
videos/<task>.gif (the first episode of each task, rendered from the first camera).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
from tqdm import tqdm

from tinyvla_jax.errors import UserError, MissingExtraError
from tinyvla_jax.evaluation.execution import make_execution
from tinyvla_jax.sim import metaworld as mw
from tinyvla_jax.sim.setups import setup_seed_for


@dataclasses.dataclass
class EpisodeResult:
  success: bool
  steps: int  # env steps taken (to success, or max_steps)
  setup_seed: int
  frames: list | None = None
  raw: np.ndarray | None = None  # [steps + 1, 39] MetaWorld's privileged observations, the reset's first


def run_episode(env: mw.MetaWorldTask, execution, *, setup_seed: int, max_steps: int,
                video_size: int | None = None, record_raw: bool = False) -> EpisodeResult:
  """One rollout until success or max_steps; optionally with a video from the first camera and the
  simulator's privileged observation at every step (for analyses such as evaluation/failure_geometry.py)."""
  obs = env.reset(setup_seed=setup_seed)
  execution.reset()
  frames = [] if video_size else None
  raws = [obs.raw.copy()] if record_raw else None
  success, steps = False, 0
  for steps in range(1, max_steps + 1):
    if frames is not None:
      frames.append(env.render_view(env.cameras[0], video_size))
    obs, success = env.step(execution.act(obs))
    if raws is not None:
      raws.append(obs.raw.copy())
    if success:
      break
  if frames is not None:
    frames.append(env.render_view(env.cameras[0], video_size))
  return EpisodeResult(success=success, steps=steps, setup_seed=setup_seed, frames=frames,
                       raw=None if raws is None else np.stack(raws))


def episode_instruction(task: str, instructions: dict | None, episode: int) -> str:
  """The instruction episode `episode` of `task` is given: the training data's phrasings for the task (or
  MetaWorld's defaults) in turn, so a task's episodes cycle through every phrasing the policy was trained on."""
  words = (instructions or {}).get(task) or mw.instructions_for(task)
  return words[episode % len(words)]


def eval_setup_seeds(*, seed: int, task: str, episodes: int, exclude: set[int] = frozenset()) -> list[int]:
  seeds, i = [], 0
  while len(seeds) < episodes:
    s = setup_seed_for(seed, task, i)
    if s not in exclude:
      seeds.append(s)
    i += 1
  return seeds


def write_gif(path: str, frames: list, fps: int = 20) -> None:
  try:
    import imageio.v3 as iio
  except ImportError:
    raise MissingExtraError("writing rollout videos needs imageio: pip install 'tinyvla_jax[sim]'") from None
  iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)


def evaluate(policy, *, tasks, episodes: int, seed: int = 1000, cameras=("corner2",), image_size: int = 72,
             instructions: dict | None = None, exclude_seeds: dict | None = None, execution: str = "receding",
             action_steps: int = 8, ensemble_k: float = 0.01, max_steps: int = 300, out_dir: str | None = None,
             video: bool = True, video_size: int = 128, progress: bool = True, label: str = "",
             meta: dict | None = None) -> dict:
  """Run `episodes` rollouts per task and return (and write, with out_dir) the summary; `meta` (e.g. the
  workdir and checkpoint step) is recorded in it as is."""
  tasks = mw.expand_tasks(tasks)
  if episodes < 1:
    raise UserError(f"--episodes={episodes} must be >= 1")
  if not 1 <= max_steps <= mw.MAX_EPISODE_STEPS:
    raise UserError(f"--max_steps={max_steps} must be in [1, {mw.MAX_EPISODE_STEPS}]")
  runner = make_execution(execution, policy, action_steps=action_steps, ensemble_k=ensemble_k)
  if out_dir:
    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
  summary = dict(policy=label, execution=execution, action_steps=action_steps if execution == "receding" else None,
                 ensemble_k=ensemble_k if execution == "ensemble" else None, max_steps=max_steps, seed=seed,
                 episodes_per_task=episodes, cameras=list(cameras), image_size=image_size, **(meta or {}), tasks={})
  t_start = time.perf_counter()
  bar = tqdm(total=episodes * len(tasks), disable=not progress, desc="evaluate", unit="episode", dynamic_ncols=True)
  try:
    for task in tasks:
      seeds = eval_setup_seeds(seed=seed, task=task, episodes=episodes,
                               exclude=set((exclude_seeds or {}).get(task, ())))
      env = mw.MetaWorldTask(task, cameras=cameras, image_size=image_size)
      results, calls, policy_s = [], 0, 0.0
      try:
        for i, setup_seed in enumerate(seeds):
          policy.start_episode(task, episode_instruction(task, instructions, i), episode=i)
          t0 = time.perf_counter()
          result = run_episode(env, runner, setup_seed=setup_seed, max_steps=max_steps,
                               video_size=video_size if (video and out_dir and i == 0) else None)
          policy_s += time.perf_counter() - t0
          calls += runner.calls
          if result.frames is not None:
            path = os.path.join(out_dir, "videos", f"{task}.gif")
            write_gif(path, result.frames)
            result.frames = None
          results.append(result)
          bar.update(1)
          bar.set_postfix(task=task, success=f"{sum(r.success for r in results)}/{len(results)}")
      finally:
        env.close()
      wins = [r for r in results if r.success]
      summary["tasks"][task] = dict(
          episodes=len(results), successes=len(wins), success_rate=len(wins) / len(results),
          ci95=wilson_interval(len(wins), len(results)),
          mean_steps_to_success=float(np.mean([r.steps for r in wins])) if wins else None,
          policy_calls=calls, seconds=round(policy_s, 2),
          video=os.path.join("videos", f"{task}.gif") if (video and out_dir) else None,
          setups=[dict(setup_seed=r.setup_seed, success=r.success, steps=r.steps) for r in results])
  finally:
    bar.close()
  rates = [t["success_rate"] for t in summary["tasks"].values()]
  summary["mean_success_rate"] = float(np.mean(rates))
  # Every task has the same number of episodes, so the mean rate is the pooled rate and its interval the
  # pooled episodes' interval.
  summary["mean_ci95"] = wilson_interval(sum(t["successes"] for t in summary["tasks"].values()),
                                         sum(t["episodes"] for t in summary["tasks"].values()))
  summary["wall_s"] = round(time.perf_counter() - t_start, 1)
  if out_dir:
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1)
  return summary


def wilson_interval(successes: int, episodes: int, z: float = 1.959964) -> list[float]:
  """The 95% Wilson score interval [low, high] of a success rate (better than the normal approximation
  at the small counts and extreme rates of robot evaluations: 20/20 gives [0.84, 1], not [1, 1])."""
  if episodes <= 0:
    return [0.0, 1.0]
  p = successes / episodes
  denom = 1 + z * z / episodes
  centre = (p + z * z / (2 * episodes)) / denom
  half = z * np.sqrt(p * (1 - p) / episodes + z * z / (4 * episodes * episodes)) / denom
  return [round(float(max(0.0, centre - half)), 4), round(float(min(1.0, centre + half)), 4)]


def format_table(summaries: dict[str, dict]) -> str:
  """Markdown: one row per task, one column per policy (successes, rate, 95% Wilson interval, mean steps
  to success)."""
  names = list(summaries)
  tasks = list(dict.fromkeys(t for s in summaries.values() for t in s["tasks"]))
  lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for task in tasks:
    cells = []
    for name in names:
      r = summaries[name]["tasks"].get(task)
      if r is None:
        cells.append("-")
        continue
      steps = f", {r['mean_steps_to_success']:.0f} steps" if r["mean_steps_to_success"] else ""
      lo, hi = r.get("ci95") or wilson_interval(r["successes"], r["episodes"])
      cells.append(f"{r['successes']}/{r['episodes']} ({r['success_rate']:.0%} [{lo:.0%}-{hi:.0%}]{steps})")
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  means = []
  for n in names:
    s = summaries[n]
    lo, hi = s.get("mean_ci95") or [float("nan")] * 2
    means.append(f"{s['mean_success_rate']:.0%} [{lo:.0%}-{hi:.0%}]")
  lines.append("| **mean** | " + " | ".join(means) + " |")
  return "\n".join(lines)
