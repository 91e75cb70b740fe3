"""The episode dataset on disk: round trip, crash safety, resume, packing, cached stats, and errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tinyvla_jax.data import store
from tinyvla_jax.data.episodes import Episode

zarr = pytest.importorskip("zarr")


def make_episode(rng, t, *, task="reach-v3", size=12, views=1):
  return Episode(images=rng.integers(0, 256, (t, views, size, size, 3), dtype=np.uint8),
                 states=rng.normal(size=(t, 4)).astype(np.float32),
                 actions=rng.uniform(-1, 1, (t, 4)).astype(np.float32), instruction="", task=task)


def writer(path, **kw):
  args = dict(cameras=("corner2",), image_size=12, state_dim=4, action_dim=4)
  args.update(kw)
  return store.EpisodeWriter(str(path), **args)


def fill(path, episodes):
  w = writer(path)
  for task, ep, seed in episodes:
    w.ensure_task(task, ("do a", "do b"))
    w.record(task=task, success=True, episode=ep, setup_seed=seed, instruction_index=seed % 2)
  w.finish()
  return w


def test_round_trip_card_and_cached_stats(tmp_path):
  rng = np.random.default_rng(0)
  eps = [("reach-v3", make_episode(rng, 5), 10), ("push-v3", make_episode(rng, 3, task="push-v3"), 11),
         ("reach-v3", make_episode(rng, 7), 12)]
  fill(tmp_path / "ds", eps)
  ds = store.EpisodeStore(str(tmp_path / "ds"))
  assert ds.num_episodes == 3 and ds.num_steps == 15 and ds.task_names == ("reach-v3", "push-v3")
  loaded = ds.load()
  for (task, ep, seed), got in zip(eps, loaded):
    np.testing.assert_array_equal(got.images, ep.images)
    np.testing.assert_array_equal(got.states, ep.states)
    np.testing.assert_array_equal(got.actions, ep.actions)
    assert got.task == task and got.instruction == ("do a", "do b")[seed % 2]
  assert ds.setup_seeds() == {"reach-v3": {10, 12}, "push-v3": {11}}
  assert [e.task for e in ds.load(tasks=["push-v3"])] == ["push-v3"]
  assert len(ds.load(max_episodes_per_task=1)) == 2
  card = json.load(open(tmp_path / "ds" / store.CARD))
  assert card["tasks"]["reach-v3"]["episodes"] == 2 and card["num_steps"] == 15
  # Stats: every stored step; cached beside the data, recomputed once the dataset grows.
  all_actions = np.concatenate([e.actions for _, e, _ in eps])
  np.testing.assert_allclose(ds.stats().action_max, all_actions.max(0))
  assert json.load(open(tmp_path / "ds" / store.STATS))["num_steps"] == 15
  w = writer(tmp_path / "ds")
  extra = make_episode(rng, 4)
  extra.actions[0, 0] = 5.0
  w.record(task="reach-v3", success=True, episode=extra, setup_seed=13)
  assert store.EpisodeStore(str(tmp_path / "ds")).stats().action_max[0] == 5.0


def test_interrupted_append_leaves_whole_episodes_only(tmp_path):
  rng = np.random.default_rng(1)
  fill(tmp_path / "ds", [("reach-v3", make_episode(rng, 5), 1)])
  # A crash mid-append: steps written, episode_ends (the commit record) not.
  root = zarr.open_group(str(tmp_path / "ds" / store.ZARR_DIR), mode="a")
  root["data/images"].append(np.zeros((3, 1, 12, 12, 3), np.uint8), axis=0)
  root["data/states"].append(np.zeros((3, 4), np.float32), axis=0)
  root["meta/setup_seed"].append(np.asarray([99]), axis=0)
  ds = store.EpisodeStore(str(tmp_path / "ds"))
  assert ds.num_episodes == 1 and ds.num_steps == 5 and len(ds.load()[0]) == 5
  # Resuming truncates the partial data before appending.
  w = writer(tmp_path / "ds")
  assert root["data/images"].shape[0] == 5 and root["meta/setup_seed"].shape[0] == 1
  ep = make_episode(rng, 2)
  w.record(task="reach-v3", success=True, episode=ep, setup_seed=2)
  loaded = store.EpisodeStore(str(tmp_path / "ds")).load()
  assert [len(e) for e in loaded] == [5, 2]
  np.testing.assert_array_equal(loaded[1].images, ep.images)


def test_failed_attempts_count_but_are_not_stored(tmp_path):
  w = writer(tmp_path / "ds")
  w.ensure_task("reach-v3", ("reach",))
  w.record(task="reach-v3", success=False)
  w.record(task="reach-v3", success=True, episode=make_episode(np.random.default_rng(0), 3), setup_seed=5)
  assert w.task_counts("reach-v3") == dict(instructions=["reach"], episodes=1, attempts=2, successes=1)


def test_pack_to_one_zip_reads_the_same(tmp_path):
  rng = np.random.default_rng(2)
  fill(tmp_path / "ds", [("reach-v3", make_episode(rng, 6), 1), ("reach-v3", make_episode(rng, 2), 2)])
  before = store.EpisodeStore(str(tmp_path / "ds")).load()
  store.pack(str(tmp_path / "ds"))
  assert not os.path.exists(tmp_path / "ds" / store.ZARR_DIR)
  after = store.EpisodeStore(str(tmp_path / "ds")).load()
  for a, b in zip(before, after):
    np.testing.assert_array_equal(a.images, b.images)
  with pytest.raises(ValueError, match="packed"):
    writer(tmp_path / "ds")


def test_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no episode dataset at .*data.path"):
    store.EpisodeStore(str(tmp_path / "missing"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="card.json is missing"):
    store.EpisodeStore(str(tmp_path / "empty"))
  (tmp_path / "empty" / "card.json").write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    store.EpisodeStore(str(tmp_path / "empty"))
  (tmp_path / "empty" / "card.json").write_text(json.dumps({"format": "other"}))
  with pytest.raises(ValueError, match="format is 'other'"):
    store.EpisodeStore(str(tmp_path / "empty"))

  rng = np.random.default_rng(3)
  fill(tmp_path / "ds", [("reach-v3", make_episode(rng, 4), 1)])
  ds = store.EpisodeStore(str(tmp_path / "ds"))
  with pytest.raises(ValueError, match="camera 'topview' .*data.cameras.* has corner2"):
    ds.load(cameras=["topview"])
  with pytest.raises(ValueError, match="task 'push-v3' .*data.tasks"):
    ds.load(tasks=["push-v3"])
  with pytest.raises(ValueError, match="collected with .*same --cameras/--size"):
    writer(tmp_path / "ds", image_size=16)
  # An episode end past the stored steps: damaged, named.
  root = zarr.open_group(str(tmp_path / "ds" / store.ZARR_DIR), mode="a")
  for k in ("task_index", "instruction_index", "setup_seed"):
    root[f"meta/{k}"].append(np.asarray([0]), axis=0)
  root["meta/episode_ends"].append(np.asarray([40]), axis=0)
  with pytest.raises(ValueError, match="data/images has 4 steps but meta/episode_ends says 40"):
    store.EpisodeStore(str(tmp_path / "ds"))
