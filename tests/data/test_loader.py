"""The training batches: crop augmentation, host sharding and the checkpointable iterator state."""

from __future__ import annotations

import numpy as np
import pytest

from tinyvla_jax.data import augment
from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.data.loader import ChunkLoader, compute_stats
from tinyvla_jax.data.byte_tokenizer import ByteTokenizer
from tinyvla_jax.data.preprocess import Preprocessor
from tinyvla_jax.errors import UserError


def episodes(n=3, t=7, size=10):
  rng = np.random.default_rng(0)
  return [Episode(images=rng.integers(0, 256, (t + i, 2, size, size, 3), dtype=np.uint8),
                  states=rng.normal(size=(t + i, 4)).astype(np.float32),
                  actions=rng.uniform(-1, 1, (t + i, 4)).astype(np.float32), instruction=f"task {i}", task=f"t{i}")
          for i in range(n)]


def preprocessor(eps, *, crop_size=None, obs_steps=1):
  return Preprocessor(stats=compute_stats(eps), tokenizer=ByteTokenizer(), max_text_len=32, crop_window=crop_size,
                      obs_steps=obs_steps)


def loader(eps, *, crop_size=None, obs_steps=1, **kw):
  args = dict(preprocess=preprocessor(eps, crop_size=crop_size, obs_steps=obs_steps), horizon=4, batch_size=4,
              seed=3)
  args.update(kw)
  return ChunkLoader(eps, **args)


def test_center_and_random_crops():
  x = np.arange(2 * 6 * 6 * 3, dtype=np.uint8).reshape(2, 6, 6, 3)
  np.testing.assert_array_equal(augment.center_crop(x, 4), x[:, 1:5, 1:5])
  rng = np.random.default_rng(0)
  crops = augment.random_crop(np.repeat(x[:1], 200, 0), 4, rng)
  # Every crop is a window of the frame, and over many draws every offset appears.
  offsets = {(int(c[0, 0, 0]) // 3 // 6, int(c[0, 0, 0]) // 3 % 6) for c in crops}
  assert offsets == {(i, j) for i in range(3) for j in range(3)}
  for c in crops[:5]:
    i, j = int(c[0, 0, 0]) // 3 // 6, int(c[0, 0, 0]) // 3 % 6
    np.testing.assert_array_equal(c, x[0, i:i + 4, j:j + 4])
  with pytest.raises(ValueError, match="cannot crop a 7 px window"):
    augment.center_crop(x, 7)


def test_augmented_batches_resume_with_the_same_crops():
  eps = episodes()
  full = loader(eps, crop_size=8, augment=True)
  all_batches = list(full.batches(1))
  resumed = list(loader(eps, crop_size=8, augment=True).batches(1, start=2))
  assert all_batches[0]["images"].shape == (4, 2, 8, 8, 3)
  for a, b in zip(all_batches[2:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Augmentation off: the center window, the same every time.
  plain = next(loader(eps, crop_size=8).batches(0))
  np.testing.assert_array_equal(plain["images"], next(loader(eps, crop_size=8).batches(0))["images"])


def test_hosts_together_see_exactly_the_global_batch():
  eps = episodes()
  whole = list(loader(eps, batch_size=4).batches(0))
  shards = [list(loader(eps, batch_size=4, shard_index=h, num_shards=2).batches(0)) for h in range(2)]
  assert len(shards[0]) == len(whole)
  for b, (s0, s1) in enumerate(zip(*shards)):
    for k in whole[b]:
      np.testing.assert_array_equal(np.concatenate([s0[k], s1[k]]), whole[b][k])
  with pytest.raises(ValueError, match="divisible by the 3 hosts"):
    loader(eps, batch_size=4, num_shards=3)


def test_iterator_state_names_the_position_and_rejects_other_data():
  ld = loader(episodes())
  spe = ld.steps_per_epoch
  state = ld.iterator_state(spe + 2)
  assert state == dict(epoch=1, batch=2, seed=3, steps_per_epoch=spe)
  ld.check_iterator_state(state, spe + 2)
  with pytest.raises(ValueError, match="data iterator state .* --overwrite"):
    loader(episodes(n=2)).check_iterator_state(state, spe + 2)


def test_observation_history_stacks_previous_frames_and_states_oldest_first():
  eps = episodes(n=2, t=6)
  ld = loader(eps, obs_steps=3, shuffle=False, batch_size=1)
  stats = ld.stats
  for e, t in [(0, 0), (0, 1), (0, 4), (1, 6)]:
    batch = ld.make_batch(np.array([[e, t]]))
    ep = eps[e]
    steps = [max(t - 2, 0), max(t - 1, 0), t]  # before the start: the first frame again (DP's padding)
    want_images = np.concatenate([ep.images[s] for s in steps])  # [3 steps * 2 cameras, H, W, 3]
    np.testing.assert_array_equal(batch["images"][0], want_images)
    want_state = np.concatenate([stats.normalize_state(ep.states[s]) for s in steps])
    np.testing.assert_allclose(batch["state"][0], want_state, rtol=1e-6)
    np.testing.assert_allclose(batch["actions"][0, 0], stats.normalize_actions(ep.actions[t]), rtol=1e-6)
  full = next(ld.batches(0))
  assert full["images"].shape == (1, 6, 10, 10, 3) and full["state"].shape == (1, 12)
  # One step of history is exactly the loader without history.
  a, b = next(loader(eps).batches(0)), next(loader(eps, obs_steps=1).batches(0))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  with pytest.raises(ValueError, match="model.obs_steps=0"):
    loader(eps, obs_steps=0)


def test_inference_preprocesses_exactly_as_the_loader():
  """One pipeline: the policy's observation from an episode's frames equals the validation batch's example."""
  eps = episodes(n=2, t=6, size=10)
  ld = loader(eps, crop_size=8, obs_steps=3, shuffle=False, batch_size=1)
  pre = ld.preprocess
  for e, t in [(0, 0), (0, 1), (1, 5)]:
    ep = eps[e]
    batch = ld.make_batch(np.array([[e, t]]))  # no rng: the center window, as at inference
    seen = range(max(t - 2, 0), t + 1)  # what a policy has observed so far in the episode (up to 3 steps)
    obs = pre.observation([ep.images[s] for s in seen], [ep.states[s] for s in seen], pre.encode_prompt(ep.instruction))
    for key in ("images", "state", "tokens", "token_mask"):
      np.testing.assert_array_equal(obs[key], batch[key], err_msg=f"{key} at ({e}, {t})")
  np.testing.assert_allclose(pre.unnormalize_actions(pre.normalize_actions(eps[0].actions)), eps[0].actions, atol=1e-6)


def test_the_pipeline_round_trips_through_checkpoint_assets():
  import json
  pre = preprocessor(episodes(), crop_size=8, obs_steps=2)
  assets = json.loads(json.dumps(pre.to_assets()))
  again = Preprocessor.from_assets(assets, max_text_len=1, obs_steps=1)  # the stored values win
  assert (again.crop_window, again.obs_steps, again.max_text_len) == (8, 2, 32)
  np.testing.assert_array_equal(again.stats.action_min, pre.stats.action_min)
  assert again.encode_prompt("open")[0].tolist() == pre.encode_prompt("open")[0].tolist()
  # A checkpoint from before the pipeline was stored: its crop window is in the data info, the rest in the config.
  old = dict(norm_stats=assets["norm_stats"], tokenizer=assets["tokenizer"], data=dict(crop_window=8))
  legacy = Preprocessor.from_assets(old, max_text_len=32, obs_steps=2)
  assert (legacy.crop_window, legacy.obs_steps, legacy.max_text_len) == (8, 2, 32)


def test_first_steps_are_repeated_and_every_other_step_seen_once():
  eps = episodes(n=3, t=7)
  plain = loader(eps)
  weighted = loader(eps, first_steps=2, first_steps_repeat=3)
  assert weighted.num_samples == plain.num_samples + 3 * 2 * 2  # 3 episodes, 2 steps, 2 extra copies each
  # Over one epoch (every sample, no batch dropped) each (episode, t) comes as often as asked.
  order = weighted._index[weighted.epoch_order(0)]
  counts = {}
  for e, t in order:
    counts[(int(e), int(t))] = counts.get((int(e), int(t)), 0) + 1
  assert all(counts[(e, t)] == (3 if t < 2 else 1) for e, ep in enumerate(eps) for t in range(len(ep)))
  with pytest.raises(UserError, match="data.first_steps_repeat"):
    loader(eps, first_steps=2, first_steps_repeat=0)


def test_privileged_targets_are_the_examples_own_step_and_all_or_none():
  eps = [e.with_privileged(np.arange(len(e) * 2, dtype=np.float32).reshape(-1, 2) + 100 * i)
         for i, e in enumerate(episodes())]
  batch = loader(eps).make_batch(np.array([[0, 3], [2, 0], [1, 5]]))
  np.testing.assert_array_equal(batch["privileged"], [[6, 7], [200, 201], [110, 111]])
  assert "privileged" not in loader(episodes()).make_batch(np.array([[0, 3]]))
  with pytest.raises(UserError, match="all or none"):
    loader(eps[:1] + episodes()[1:])
