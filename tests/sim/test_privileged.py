"""sim/privileged.py: replaying a stored demo gives the object's and goal's positions MetaWorld had at each of
its steps; a demo that does not replay is one clear error."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")
pytest.importorskip("metaworld")

from tinyvla_jax.data.store import EpisodeStore  # noqa: E402
from tinyvla_jax.data.sources import SHIPPED_SPREAD_DATASET  # noqa: E402
from tinyvla_jax.errors import DataError  # noqa: E402
from tinyvla_jax.sim import collect, metaworld as mw, privileged  # noqa: E402

pytestmark = pytest.mark.sim


def expert_demo_with_raw(task: str, setup_seed: int, max_steps: int = 60):
  """An expert demo (as collection stores it) and MetaWorld's 39-D observation at each of its steps."""
  env = mw.MetaWorldTask(task, image_size=8)
  try:
    episode, _ = collect.expert_episode(env, setup_seed=setup_seed, max_steps=max_steps)
    raws = [env.reset(setup_seed=setup_seed).raw]
    for action in episode.actions[:-1]:
      raws.append(env.step(action)[0].raw)
  finally:
    env.close()
  return dataclasses.replace(episode, setup_seed=setup_seed), np.stack(raws)


def test_replay_gives_the_poses_metaworld_had_at_every_step():
  episode, raws = expert_demo_with_raw("push-v3", setup_seed=11)
  env = mw.MetaWorldTask("push-v3", image_size=8)
  try:
    got = privileged.replay_poses(env, episode, 11)
  finally:
    env.close()
  assert got.shape == (len(episode), privileged.POSE_DIM) and got.dtype == np.float32
  np.testing.assert_allclose(got[:, :3], raws[:, 4:7], atol=1e-6)  # the puck
  np.testing.assert_allclose(got[:, 3:], raws[:, 36:39], atol=1e-6)  # the goal
  # The expert pushed the puck: its position changes along the demo, the goal's does not.
  assert np.ptp(got[:, 0:2], axis=0).max() > 0.01 and np.ptp(got[:, 3:], axis=0).max() < 1e-6


def test_a_demo_that_does_not_replay_is_refused():
  episode, _ = expert_demo_with_raw("push-v3", setup_seed=11, max_steps=200)
  # The check reads the hand: a demo replayed in another setup diverges once the hand meets the puck.
  with pytest.raises(DataError, match="another MetaWorld version"):
    privileged.episodes_with_poses([dataclasses.replace(episode, setup_seed=12)])
  with pytest.raises(DataError, match="another MetaWorld version"):
    privileged.episodes_with_poses([dataclasses.replace(episode, actions=episode.actions * 0.9)])
  with pytest.raises(DataError, match="setup seed"):
    privileged.episodes_with_poses([dataclasses.replace(episode, setup_seed=None)])


def test_shipped_demos_replay_in_their_order_across_tasks():
  store = EpisodeStore(SHIPPED_SPREAD_DATASET)
  episodes = store.load(max_episodes_per_task=1)
  assert len({e.task for e in episodes}) > 1
  out = privileged.episodes_with_poses(episodes)
  assert [e.task for e in out] == [e.task for e in episodes]
  for before, after in zip(episodes, out):
    assert after.images is before.images and after.privileged.shape == (len(before), privileged.POSE_DIM)
