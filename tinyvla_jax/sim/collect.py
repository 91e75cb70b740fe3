"""Demonstrations from MetaWorld's scripted experts, appended to an episode dataset (data/store.py).

Deterministic: attempt k of task X under --seed S always uses the same setup (`setup_seed_for`, or with
setups="spread" the k-th of a farthest-point order over seeded draws, `spread_setup_seeds`) and the
same paraphrase, and the experts and the simulator are deterministic, so the same command gives the
same dataset. Resumable: an episode is stored only once it is complete; re-running the command on the
same --out continues with the next attempt of each task.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.data.store import EpisodeStore, EpisodeWriter
from tinyvla_jax.errors import UserError
from tinyvla_jax.sim import metaworld as mw
from tinyvla_jax.sim.setups import instruction_index_for, setup_seed_for, spread_order

# How attempt k of a task picks its setup: "random" (the k-th seeded draw) or "spread" (the k-th of a
# farthest-point order over SPREAD_POOL seeded draws: every prefix covers the placements evenly).
SETUPS = ("random", "spread")
SPREAD_POOL = 500


def expert_episode(env: mw.MetaWorldTask, *, setup_seed: int, max_steps: int) -> tuple[Episode, bool]:
  """Run the expert from a fresh setup until success or `max_steps`. Step t holds the observation at t
  and the action taken from it."""
  obs = env.reset(setup_seed=setup_seed)
  images, states, actions = [], [], []
  success = False
  for _ in range(max_steps):
    action = env.expert_action()  # clipped to [-1, 1]: what MetaWorld executes
    images.append(obs.images)
    states.append(obs.state)
    actions.append(action)
    obs, success = env.step(action)
    if success:
      break
  episode = Episode(images=np.stack(images), states=np.stack(states).astype(np.float32),
                    actions=np.stack(actions).astype(np.float32), instruction="", task=env.task)
  return episode, success


def collect(*, tasks, episodes: int, cameras=("corner2",), image_size: int = 72, out: str, seed: int = 0,
            keep_failures: bool = False, max_steps: int = mw.MAX_EPISODE_STEPS, max_attempts: int | None = None,
            setups: str = "random", progress: bool = True) -> dict:
  """Collect until each task has `episodes` stored demos (or `max_attempts` expert runs). Returns a
  per-task report: episodes stored, attempts, expert success rate."""
  tasks = mw.expand_tasks(tasks)
  cameras = mw.check_cameras(cameras)
  if episodes < 1:
    raise UserError(f"--episodes={episodes} must be >= 1")
  if not 1 <= max_steps <= mw.MAX_EPISODE_STEPS:
    raise UserError(f"--max-steps={max_steps} must be in [1, {mw.MAX_EPISODE_STEPS}]")
  if setups not in SETUPS:
    raise UserError(f"--setups={setups!r}: choose one of {', '.join(SETUPS)}")
  max_attempts = max_attempts or 3 * episodes
  if setups == "spread" and max_attempts > SPREAD_POOL:
    raise UserError(f"--setups=spread orders {SPREAD_POOL} candidate setups per task: ask for fewer attempts "
                    f"(--max_attempts, default 3 x --episodes) than that")
  source = dict(simulator="metaworld", seed=seed, max_steps=max_steps, setups=setups)
  writer = EpisodeWriter(out, cameras=cameras, image_size=image_size, state_dim=mw.STATE_DIM,
                         action_dim=mw.ACTION_DIM, source=source)
  # Resuming must continue the same sequence of setups (datasets from before `setups` existed are "random").
  have = {k: writer.card["source"].get(k, "random" if k == "setups" else None) for k in ("seed", "setups")}
  if writer.card["num_episodes"] and have != dict(seed=seed, setups=setups):
    raise UserError(f"{out} was collected with --seed={have['seed']} --setups={have['setups']}: resume with "
                    "those, or collect into another --out")
  stored_seeds = EpisodeStore(out).setup_seeds() if writer.card["num_episodes"] else {}
  bar = tqdm(total=episodes * len(tasks), disable=not progress, desc="collect", unit="demo", dynamic_ncols=True)
  try:
    for task in tasks:
      instructions = mw.instructions_for(task)
      writer.ensure_task(task, instructions)
      counts = writer.task_counts(task)
      bar.update(min(counts["episodes"], episodes))
      if counts["episodes"] >= episodes or counts["attempts"] >= max_attempts:
        continue
      env = mw.MetaWorldTask(task, cameras=cameras, image_size=image_size)
      try:
        order = spread_setup_seeds(env, seed=seed, task=task) if setups == "spread" else None
        while counts["episodes"] < episodes and counts["attempts"] < max_attempts:
          attempt = counts["attempts"]
          setup_seed = order[attempt] if order else setup_seed_for(seed, task, attempt)
          if setup_seed in stored_seeds.get(task, ()):  # stored just before an interruption
            writer.record(task=task, success=True)
            continue
          episode, success = expert_episode(env, setup_seed=setup_seed, max_steps=max_steps)
          keep = success or keep_failures
          writer.record(task=task, success=success, episode=episode if keep else None, setup_seed=setup_seed,
                        instruction_index=instruction_index_for(seed, task, attempt, len(instructions)))
          bar.update(int(keep))
          bar.set_postfix(task=task, expert_success=f"{counts['successes']}/{counts['attempts']}")
      finally:
        env.close()
  finally:
    bar.close()
  writer.finish()
  return {task: dict(writer.card["tasks"][task]) for task in tasks}


def spread_setup_seeds(env: mw.MetaWorldTask, *, seed: int, task: str) -> list[int]:
  """SPREAD_POOL seeded setups of `task`, in farthest-point order of their placements (sim/setups.py)."""
  pool = [setup_seed_for(seed, task, j) for j in range(SPREAD_POOL)]
  return [pool[i] for i in spread_order(env.placements(pool))]


def format_report(report: dict) -> str:
  lines = ["| task | demos stored | expert attempts | expert success rate |", "|---|---|---|---|"]
  for task, r in report.items():
    rate = r["successes"] / r["attempts"] if r["attempts"] else float("nan")
    lines.append(f"| {task} | {r['episodes']} | {r['attempts']} | {rate:.0%} |")
  return "\n".join(lines)
