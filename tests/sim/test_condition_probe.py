"""evaluation/condition_probe.py: the cross-validated ridge R^2 against closed-form cases, the probe's targets
on MetaWorld's first steps, the condition vectors of a (tiny) served policy; scripts/condition_probe.py's errors."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")

from tinyvla_jax.errors import UserError  # noqa: E402
from tinyvla_jax.evaluation import condition_probe as cp  # noqa: E402

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "condition_probe.py"


def test_ridge_r2_is_one_for_a_linear_target_and_about_zero_for_noise():
  r = np.random.default_rng(0)
  x = r.normal(size=(200, 8))
  y = x @ r.normal(size=8) + 3.0
  assert cp.ridge_cv_r2(x, y, alpha=1e-8) == pytest.approx(1.0, abs=1e-9)
  # A heavy penalty shrinks the fit toward the training mean: R^2 falls, and stays above the noise's.
  assert 0.0 < cp.ridge_cv_r2(x, y, alpha=10.0) < 0.2
  noise = r.normal(size=200)
  assert -0.2 < cp.ridge_cv_r2(x, noise, alpha=1.0) < 0.05
  # Half the variance explained: y = signal + noise of equal variance.
  s = x[:, 0] / np.std(x[:, 0])
  assert cp.ridge_cv_r2(x, s + r.normal(size=200), alpha=1e-3) == pytest.approx(0.5, abs=0.12)
  with pytest.raises(UserError, match="too few for a 5-fold probe"):
    cp.ridge_cv_r2(x[:9], y[:9])


def test_angle_error_wraps_around():
  np.testing.assert_allclose(cp.angle_error_deg(np.radians([170, -90, 10]), np.radians([-170, 90, 10])), [20, 180, 0],
                             atol=1e-9)


@dataclasses.dataclass
class Obs:
  images: np.ndarray
  state: np.ndarray


def test_conditions_of_a_served_policy_follow_the_image_and_the_params():
  from tiny_policy import make_tiny_inference_policy

  from tinyvla_jax.evaluation.policies import VLAPolicy
  from tinyvla_jax.models.vla import init_params
  policy = VLAPolicy(make_tiny_inference_policy())
  r = np.random.default_rng(0)
  observations = [Obs(images=r.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), state=np.zeros(4, np.float32))
                  for _ in range(3)]
  feats = cp.conditions(policy, "drawer-open-v3", "open the drawer", observations)
  assert feats.shape[0] == 3 and np.isfinite(feats).all()
  assert not np.allclose(feats[0], feats[1])  # the image reaches the condition
  again = cp.conditions(policy, "drawer-open-v3", "open the drawer", observations[:1])
  np.testing.assert_allclose(again[0], feats[0], rtol=1e-6)
  other = init_params(policy.backend.model, jax.random.key(1), text_len=48)
  assert not np.allclose(cp.conditions(policy, "drawer-open-v3", "open the drawer", observations[:1],
                                       params=other)[0], feats[0])


@pytest.mark.sim
def test_first_steps_probe_the_coordinates_that_vary_across_setups():
  pytest.importorskip("metaworld")
  steps = cp.first_steps("push-v3", list(range(6)), cameras=("corner2",), image_size=16)
  assert len(steps.observations) == 6 and steps.observations[0].images.shape == (1, 16, 16, 3)
  # push-v3 draws the puck's and the goal's x and y; both lie on the table (z fixed).
  assert sorted(steps.targets) == ["goal_x", "goal_y", "object_x", "object_y"]
  np.testing.assert_array_equal(steps.targets["object_x"], [o.raw[4] for o in steps.observations])
  states = np.stack([o.state for o in steps.observations])
  np.testing.assert_allclose(states, states[:1].repeat(6, 0), atol=1e-6)  # the hand starts at one pose
  # The expert as the policy agrees with itself; its first moves point different ways in different setups.
  from tinyvla_jax.evaluation.policies import ExpertPolicy
  ours, expert = cp.first_move_angles(ExpertPolicy(), "push-v3", "push", steps.observations)
  np.testing.assert_allclose(ours, expert)
  assert np.ptp(np.degrees(expert)) > 30


@pytest.mark.sim
def test_probe_of_a_served_policy_on_push_and_drawer_close():
  pytest.importorskip("metaworld")
  from tiny_policy import make_tiny_inference_policy

  from tinyvla_jax.evaluation.policies import VLAPolicy
  policy = VLAPolicy(make_tiny_inference_policy())
  context = dict(cameras=("corner2",), image_size=32, exclude_seeds={}, instructions={})
  push = cp.probe(policy, context, "push-v3", seed=3, setups=10)
  assert sorted(push) == ["first move", "trained"]
  assert sorted(push["trained"]) == ["goal_x", "goal_y", "object_x", "object_y"]
  assert all(np.isfinite(v) and v <= 1 for v in push["trained"].values())
  assert push["first move"]["one_direction_vs_expert_deg"] > cp.MIN_FIRST_MOVE_SPREAD_DEG
  # drawer-close's expert starts the same way in every setup: no first-move comparison.
  assert "first move" not in cp.probe(policy, context, "drawer-close-v3", seed=3, setups=10)


def test_the_script_names_what_to_fix(tmp_path):
  def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
  out = run()
  assert out.returncode != 0 and "pass --workdir DIR" in out.stderr
  out = run("--workdir", str(tmp_path), "--setups", "5")
  assert out.returncode != 0 and "--setups=5 must be >= 10" in out.stderr
