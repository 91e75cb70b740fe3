"""The checkpoint policy's observation history and its per-episode randomness; the interval math."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from tinyvla_jax import presets, recipes
from tinyvla_jax.evaluation import protocol as protocol_lib
from tinyvla_jax.evaluation.execution import make_execution
from tinyvla_jax.evaluation.policies import RandomPolicy, VLAPolicy
from tinyvla_jax.evaluation.rollout import wilson_interval
from tinyvla_jax.recipes import typed

from tiny_policy import make_tiny_inference_policy


@dataclasses.dataclass
class Obs:
  images: np.ndarray
  state: np.ndarray


def make_policy(obs_steps=1, seed=0, image_history=True):
  return VLAPolicy(make_tiny_inference_policy(obs_steps=obs_steps, seed=seed, image_history=image_history), seed=seed)


def observation(i):
  r = np.random.default_rng(i)
  return Obs(images=r.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), state=r.normal(size=4).astype(np.float32))


@pytest.fixture(scope="module")
def policy():
  return make_policy()


def test_sampling_noise_depends_only_on_seed_task_and_episode(policy):
  obs = observation(0)
  policy.start_episode("drawer-open-v3", "open the drawer", episode=3)
  first = policy(obs)
  # Other episodes and tasks in between (as in a full evaluation) do not change episode 3's noise.
  for task, ep in [("window-open-v3", 0), ("drawer-open-v3", 2), ("drawer-open-v3", 4)]:
    policy.start_episode(task, "open", episode=ep)
    policy(obs)
    policy(obs)
  policy.start_episode("drawer-open-v3", "open the drawer", episode=3)
  np.testing.assert_array_equal(policy(obs), first)
  policy.start_episode("drawer-open-v3", "open the drawer", episode=4)
  assert not np.array_equal(policy(obs), first)
  # A second call within the episode draws new noise.
  policy.start_episode("drawer-open-v3", "open the drawer", episode=3)
  policy(obs)
  assert not np.array_equal(policy(obs), first)
  r = RandomPolicy(seed=5)
  r.start_episode("drawer-open-v3", "", episode=1)
  a = r(obs)
  r.start_episode("window-open-v3", "", episode=0)
  r(obs)
  r.start_episode("drawer-open-v3", "", episode=1)
  np.testing.assert_array_equal(r(obs), a)


def test_policy_with_history_sees_the_previous_step_through_receding_execution(monkeypatch):
  policy = make_policy(obs_steps=2)
  seen = []
  monkeypatch.setattr(policy.backend, "_sample", lambda params, rng, **inputs: (seen.append(inputs), np.zeros((1, 16, 4)))[1])
  runner = make_execution("receding", policy, action_steps=3)
  policy.start_episode("drawer-open-v3", "open the drawer", episode=0)
  runner.reset()
  observations = [observation(i) for i in range(5)]
  for o in observations:
    runner.act(o)
  assert len(seen) == 2  # predicted at steps 0 and 3
  # Step 0: no earlier step, the first frame twice. Step 3: steps 2 and 3 (step 2 was never predicted from).
  np.testing.assert_array_equal(seen[0]["images"][0], np.concatenate([observations[0].images] * 2))
  np.testing.assert_array_equal(seen[1]["images"][0],
                                np.concatenate([observations[2].images, observations[3].images]))
  np.testing.assert_allclose(seen[1]["state"][0], np.concatenate([observations[2].state, observations[3].state]))
  # A new episode forgets the old history.
  policy.start_episode("drawer-open-v3", "open the drawer", episode=1)
  runner.reset()
  runner.act(observations[4])
  np.testing.assert_array_equal(seen[2]["images"][0], np.concatenate([observations[4].images] * 2))


def test_policy_without_image_history_acts_on_the_newest_image_and_both_states():
  """The `cpu` default (model.image_history=False) as a whole policy: the episode's previous image changes no
  action, the previous state does, the current image does (same episode, so the same sampling noise)."""
  policy = make_policy(obs_steps=2, image_history=False)
  previous, current = observation(0), observation(1)

  def act(before, now):
    policy.start_episode("drawer-open-v3", "open the drawer", episode=0)
    policy(before)
    return policy(now)

  base = act(previous, current)
  other_image = Obs(images=observation(2).images, state=previous.state)
  np.testing.assert_array_equal(act(other_image, current), base)
  assert np.abs(act(Obs(images=previous.images, state=previous.state + 1.0), current) - base).max() > 1e-4
  assert np.abs(act(previous, Obs(images=observation(3).images, state=current.state)) - base).max() > 1e-4


def test_wilson_interval_known_values():
  np.testing.assert_allclose(wilson_interval(20, 20), [0.8389, 1.0], atol=1e-4)
  np.testing.assert_allclose(wilson_interval(10, 20), [0.2993, 0.7007], atol=1e-4)
  np.testing.assert_allclose(wilson_interval(0, 20), [0.0, 0.1611], atol=1e-4)
  np.testing.assert_allclose(wilson_interval(64, 80), [0.6995, 0.8730], atol=1e-4)  # by hand: 0.78625 -+ 0.08672


def test_training_and_the_cli_share_one_protocol():
  from absl import flags

  import tinyvla_jax.evaluate  # noqa: F401 - defines the CLI's flags
  c = recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny")
  from_config = typed(c).eval.protocol
  assert from_config == protocol_lib.DEFAULT
  for field in dataclasses.fields(protocol_lib.Protocol):
    assert flags.FLAGS[field.name].default == getattr(protocol_lib.DEFAULT, field.name), field.name
  assert protocol_lib.DEFAULT.max_steps == 200 and protocol_lib.DEFAULT.episodes == 20


def test_run_names_tell_protocols_apart():
  p = protocol_lib.DEFAULT
  names = {protocol_lib.run_name("vla", 10, q) for q in [
      p, dataclasses.replace(p, action_steps=8), dataclasses.replace(p, seed=2000),
      dataclasses.replace(p, execution="ensemble")]}
  assert len(names) == 4 and protocol_lib.run_name("vla", 10, p) == "vla-step10-receding4-seed1000"
