"""evaluation/failure_geometry.py: the ray split in closed form, and the episode geometry of the scripted expert;
scripts/failure_geometry.py's one-line errors."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")

from tinyvla_jax.evaluation import failure_geometry as fg  # noqa: E402

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "failure_geometry.py"


def test_split_along_ray_is_the_orthogonal_decomposition():
  camera, target = np.zeros(3), np.array([0.0, 0.0, 2.0])  # the ray is +z
  assert fg.split_along_ray(np.array([0.03, 0.04, -0.12]), camera, target) == pytest.approx((0.12, 0.05))
  # Any error: the two parts are orthogonal, so their squares add up to the error's.
  rng = np.random.default_rng(0)
  error, camera, target = rng.normal(size=(3, 3))
  along, across = fg.split_along_ray(error, camera, target)
  assert along ** 2 + across ** 2 == pytest.approx(float(error @ error))


@pytest.mark.sim
def test_the_expert_reaches_the_goal_and_pushes_the_puck_to_it():
  pytest.importorskip("metaworld")
  from tinyvla_jax.evaluation import policies, rollout
  from tinyvla_jax.evaluation.execution import make_execution
  from tinyvla_jax.sim import metaworld as mw
  expert = policies.ExpertPolicy()
  for task in ("reach-v3", "push-v3"):
    env = mw.MetaWorldTask(task, cameras=("corner2_near",), image_size=16)
    expert.start_episode(task, "", episode=0)
    result = rollout.run_episode(env, make_execution("receding", expert, action_steps=1), setup_seed=5,
                                 max_steps=200, record_raw=True)
    ep = fg.Episode(success=result.success, raw=result.raw, camera=fg.camera_position(env))
    env.close()
    assert len(ep.raw) == result.steps + 1
    np.testing.assert_array_equal(ep.camera, mw.MOVED_CAMERAS["corner2_near"][1])
    assert ep.success and len(ep.raw) <= 201
    if task == "reach-v3":
      geometry = fg.reach_geometry(ep)
      assert geometry["closest"] < 0.05  # MetaWorld's reach success radius
      assert geometry["along_ray"] ** 2 + geometry["across_ray"] ** 2 == pytest.approx(geometry["closest"] ** 2)
    else:
      geometry = fg.object_geometry(ep)
      assert geometry["closest_to_object"] < 0.05 and geometry["object_moved"] > 0.05
      assert geometry["object_goal_end"] < 0.05 < geometry["object_goal_start"]
  assert "succeeded" in fg.describe("push-v3", [ep]) and "failures" not in fg.describe("push-v3", [ep])


def test_tasks_default_to_those_of_the_three_the_checkpoint_has():
  from tinyvla_jax.errors import UserError
  assert fg.tasks_to_measure([], trained=["push-v3", "door-open-v3"]) == ["push-v3"]
  assert fg.tasks_to_measure([], trained=list(reversed(fg.TASKS))) == list(fg.TASKS)
  assert fg.tasks_to_measure(["pick-place-v3"], trained=list(fg.TASKS)) == ["pick-place-v3"]
  with pytest.raises(UserError, match=r"not trained on \['reach-v3'\] \(it has push-v3\)"):
    fg.tasks_to_measure(["reach-v3"], trained=["push-v3"])
  with pytest.raises(UserError, match="trained on none of reach-v3, push-v3, pick-place-v3 .it has door-open-v3"):
    fg.tasks_to_measure([], trained=["door-open-v3"])
  with pytest.raises(UserError, match=r"--tasks: \['door-open-v3'\] not supported"):
    fg.tasks_to_measure(["door-open-v3"], trained=None)


def test_the_script_names_what_to_fix(tmp_path):
  def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
  out = run()
  assert out.returncode != 0 and "pass --workdir DIR" in out.stderr
  out = run("--workdir", str(tmp_path), "--tasks", "door-open-v3")
  assert out.returncode != 0 and "--tasks: ['door-open-v3'] not supported" in out.stderr
