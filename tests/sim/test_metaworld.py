"""MetaWorld collection and the evaluation harness itself (needs the `sim` extra and a GL library).

The harness is validated by the policies whose success rates are known: the scripted expert must reach
its rate through the same evaluator a trained policy goes through, and uniform noise must get ~nothing.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")  # before mujoco is first imported (headless, no GPU)
pytest.importorskip("metaworld")

from tinyvla_jax.data import sources, store  # noqa: E402
from tinyvla_jax.evaluation import policies, rollout  # noqa: E402
from tinyvla_jax.evaluation.context import dataset_context  # noqa: E402
from tinyvla_jax.sim import collect, metaworld as mw  # noqa: E402

pytestmark = pytest.mark.sim
SHORT_TASK = "button-press-topdown-v3"  # the expert needs ~60 steps


def test_observations_are_the_right_way_up_and_the_state_is_the_hand():
  env = mw.MetaWorldTask(SHORT_TASK, cameras=("corner2", "topview"), image_size=32)
  obs = env.reset(setup_seed=3)
  assert obs.images.shape == (2, 32, 32, 3) and obs.images.dtype == np.uint8
  np.testing.assert_allclose(obs.state, obs.raw[:4], rtol=1e-6)
  # MetaWorld's cameras render upside down (verified by eye: the table below, the arm above); the
  # observation is MuJoCo's frame flipped vertically, and the video view is the same view.
  env._renderer.update_scene(env.env.data, camera="corner2")
  np.testing.assert_array_equal(obs.images[0], env._renderer.render()[::-1])
  np.testing.assert_array_equal(env.render_view("corner2", 32), obs.images[0])
  assert obs.images.std() > 10  # a real picture, not a blank buffer
  env.close()


def test_a_moved_camera_renders_what_moving_the_camera_in_the_model_renders():
  import mujoco
  env = mw.MetaWorldTask(SHORT_TASK, cameras=("corner2", "corner2_near"), image_size=32)
  obs = env.reset(setup_seed=3)
  base, position = mw.MOVED_CAMERAS["corner2_near"]
  camera = mujoco.mj_name2id(env.env.model, mujoco.mjtObj.mjOBJ_CAMERA, base)
  before = env.env.data.cam_xpos[camera].copy()
  obs, _ = env.step(np.zeros(4))  # the simulation itself never sees the moved position
  np.testing.assert_array_equal(env.env.data.cam_xpos[camera], before)
  # The reference: the same camera moved in the model and the frame recomputed by MuJoCo.
  reference = mw.MetaWorldTask(SHORT_TASK, cameras=("corner2",), image_size=32)
  reference.reset(setup_seed=3)
  reference.step(np.zeros(4))
  reference.env.model.cam_pos[camera] = position
  mujoco.mj_forward(reference.env.model, reference.env.data)
  np.testing.assert_array_equal(obs.images[1], reference.render_view("corner2", 32))
  # ... and the unmoved camera in the same observation is still MetaWorld's corner2.
  assert np.abs(obs.images[0].astype(int) - obs.images[1]).mean() > 5
  np.testing.assert_array_equal(env.render_view("corner2_near", 32), obs.images[1])
  env.close()
  reference.close()


def test_the_first_frame_shows_this_episodes_goal_and_objects_not_the_previous_ones(monkeypatch):
  import mujoco
  # MetaWorld moves the goal site and window-open's window in the model after its last kinematics pass:
  # without a fresh pass the reset frame drew the previous episode's goal dot and window.
  reach = mw.MetaWorldTask("reach-v3", cameras=("corner2",), image_size=32)
  goal = mujoco.mj_name2id(reach.env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
  for seed in (1, 2):
    obs = reach.reset(setup_seed=seed)
    np.testing.assert_allclose(reach.env.data.site_xpos[goal], obs.raw[36:39], atol=1e-9)
  reach.close()
  window = mw.MetaWorldTask("window-open-v3", cameras=("corner2",), image_size=72)

  def trajectory():
    frames, raws = [], []
    for seed in (1, 2):
      obs = window.reset(setup_seed=seed)
      frames.append(obs.images)
      raws.append(obs.raw)
      for _ in range(20):
        obs, _ = window.step(window.expert_action())
        raws.append(obs.raw)
    return np.stack(frames), np.stack(raws)

  frames, raws = trajectory()
  mujoco.mj_kinematics(window.env.model, window.env.data)  # the last reset's frame, recomputed once more
  np.testing.assert_array_equal(window._observe(window.reset(setup_seed=2).raw).images, frames[1])
  # Without the pass the first frame differs (the check can fail), and the simulation does not.
  monkeypatch.setattr(mujoco, "mj_kinematics", lambda model, data: None)
  stale_frames, stale_raws = trajectory()
  assert (np.abs(stale_frames[1].astype(int) - frames[1]).max(-1) > 0).sum() > 50
  np.testing.assert_array_equal(stale_raws, raws)
  window.close()


def test_setups_are_a_function_of_the_seed():
  env = mw.MetaWorldTask(SHORT_TASK, cameras=("corner2",), image_size=16)
  a = env.reset(setup_seed=11).raw.copy()
  b = env.reset(setup_seed=12).raw.copy()
  c = env.reset(setup_seed=11).raw.copy()
  env.close()
  np.testing.assert_array_equal(a, c)
  assert not np.allclose(a[4:], b[4:])


def test_collection_is_deterministic_resumable_and_keeps_only_successes(tmp_path):
  kw = dict(tasks=SHORT_TASK, cameras=("corner2",), image_size=24, seed=5, progress=False)
  report = collect.collect(episodes=1, out=str(tmp_path / "a"), **kw)
  assert report[SHORT_TASK]["episodes"] == 1 and report[SHORT_TASK]["successes"] == 1
  collect.collect(episodes=1, out=str(tmp_path / "b"), **kw)
  a, b = (store.EpisodeStore(str(tmp_path / d)).load()[0] for d in "ab")
  for k in ("images", "states", "actions"):
    np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
  assert np.abs(a.actions).max() <= 1.0  # the executed (clipped) actions
  # Resume: asking for 2 adds exactly one more; asking again adds nothing.
  collect.collect(episodes=2, out=str(tmp_path / "a"), **kw)
  collect.collect(episodes=2, out=str(tmp_path / "a"), **kw)
  ds = store.EpisodeStore(str(tmp_path / "a"))
  assert ds.num_episodes == 2
  np.testing.assert_array_equal(ds.load()[0].images, a.images)
  # An expert cut off after 5 steps never succeeds: attempts are counted, nothing is stored.
  failed = collect.collect(episodes=1, out=str(tmp_path / "c"), max_steps=5, max_attempts=2, **kw)
  assert failed[SHORT_TASK] | {"instructions": None} == dict(instructions=None, episodes=0, attempts=2, successes=0)
  with pytest.raises(ValueError, match="unknown MetaWorld task 'button-press'"):
    collect.collect(episodes=1, out=str(tmp_path / "d"), **dict(kw, tasks="button-press"))
  with pytest.raises(ValueError, match="unknown camera"):
    collect.collect(episodes=1, out=str(tmp_path / "d"), **dict(kw, cameras=("front",)))


def test_spread_collection_uses_the_farthest_point_order_and_resumes_only_as_such(tmp_path, monkeypatch):
  monkeypatch.setattr(collect, "SPREAD_POOL", 12)  # the order over 12 draws instead of 500: same code, faster
  kw = dict(tasks=SHORT_TASK, cameras=("corner2",), image_size=16, seed=2, progress=False, out=str(tmp_path / "s"))
  collect.collect(episodes=2, setups="spread", **kw)
  env = mw.MetaWorldTask(SHORT_TASK, image_size=16)
  order = collect.spread_setup_seeds(env, seed=2, task=SHORT_TASK)
  env.close()
  assert sorted(order) == sorted(collect.setup_seed_for(2, SHORT_TASK, j) for j in range(12))
  ds = store.EpisodeStore(str(tmp_path / "s"))
  assert [ds.episode_info(i)["setup_seed"] for i in range(2)] == order[:2]
  assert ds.card["source"]["setups"] == "spread"
  with pytest.raises(ValueError, match="collected with --seed=2 --setups=spread"):
    collect.collect(episodes=3, setups="random", **kw)
  with pytest.raises(ValueError, match="--setups='grid'"):
    collect.collect(episodes=1, setups="grid", **dict(kw, out=str(tmp_path / "g")))


@pytest.mark.parametrize("path,setups", [(sources.SHIPPED_DATASET, "random"),
                                         (sources.SHIPPED_SPREAD_DATASET, "spread")], ids=["random", "spread"])
def test_shipped_dataset_is_real_metaworld_data(path, setups):
  ds = store.EpisodeStore(path)
  assert len(ds.task_names) >= 3 and ds.num_episodes >= 60
  assert ds.card["source"].get("setups", "random") == setups
  for task, entry in ds.card["tasks"].items():
    assert entry["episodes"] >= 15 and len(entry["instructions"]) >= 2
  # Replaying a stored demo's actions from its setup reproduces its states: the data is the simulator's.
  ep = ds.load(tasks=[ds.task_names[0]], max_episodes_per_task=1)[0]
  seed = ds.episode_info(0)["setup_seed"]
  env = mw.MetaWorldTask(ep.task, cameras=ds.cameras, image_size=ds.card["image_size"])
  obs = env.reset(setup_seed=seed)
  states, success = [], False
  for action in ep.actions:
    states.append(obs.state)
    obs, success = env.step(action)
  env.close()
  np.testing.assert_allclose(np.stack(states), ep.states, atol=1e-5)
  assert success


def test_expert_through_the_evaluator_reaches_its_known_rate(tmp_path):
  ctx = dataset_context(None)
  summary = rollout.evaluate(policies.ExpertPolicy(), tasks=ctx["tasks"], episodes=3, seed=1000,
                             cameras=ctx["cameras"], image_size=ctx["image_size"], exclude_seeds=ctx["exclude_seeds"],
                             max_steps=200, out_dir=str(tmp_path), video=False, progress=False)
  assert summary["mean_success_rate"] >= 0.9, summary
  used = {s["setup_seed"] for t in summary["tasks"].values() for s in t["setups"]}
  assert not used & {s for v in ctx["exclude_seeds"].values() for s in v}  # unseen setups only
  assert json.load(open(tmp_path / "summary.json"))["mean_success_rate"] == summary["mean_success_rate"]


def test_random_policy_gets_almost_nothing(tmp_path):
  ctx = dataset_context(None)
  summary = rollout.evaluate(policies.RandomPolicy(seed=0), tasks=ctx["tasks"][:2], episodes=2, seed=1000,
                             cameras=ctx["cameras"], image_size=ctx["image_size"], max_steps=100,
                             out_dir=str(tmp_path), video=True, video_size=32, progress=False)
  assert summary["mean_success_rate"] <= 0.25, summary
  gif = tmp_path / summary["tasks"][ctx["tasks"][0]]["video"]
  assert gif.exists() and gif.stat().st_size > 1000
