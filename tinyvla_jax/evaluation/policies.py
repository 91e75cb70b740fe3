"""Policies the evaluator can run: a trained checkpoint, MetaWorld's scripted expert, and uniform noise.

A policy is `start_episode(task, instruction, episode=i)` then `policy(obs) -> chunk [T, A]` of
unnormalized actions (obs is sim.metaworld.Observation). The expert and the random policy return chunks
of one step, so every policy goes through the same execution and rollout code.

Randomness (the diffusion sampler's noise, the random policy's draws) is a function of (seed, task,
episode index, call within the episode) only: evaluating one task alone, or all of them, or during
training, gives each episode the same noise and so the same outcome.
"""

from __future__ import annotations

import zlib

import jax
import numpy as np

from tinyvla_jax.serving.inference import load_policy


class VLAPolicy:
  """A trained TinyVLA in the evaluator: an episode's bookkeeping (its instruction, the observation history,
  the per-episode sampling noise) over an inference backend with `metadata` and `infer(obs)` (serving/):
  the checkpoint in this process (`from_workdir`, serving.inference.InferencePolicy) or a policy server
  (`remote`, serving.client.RemotePolicy). Both get the same request, including the sampler's key, so a
  remote evaluation has the same outcomes as an in-process one."""

  def __init__(self, backend, *, seed: int = 0):
    self.backend, self.seed = backend, seed
    schema = backend.metadata["observation"]
    self.cameras = list(schema["images"])
    self.obs_steps = int(schema["obs_steps"])
    self.horizon = int(backend.metadata["action_horizon"])
    self._rng = None
    self._calls = 0
    self._instruction = None
    self._history: list = []  # the episode's last obs_steps observations, oldest first

  @classmethod
  def from_workdir(cls, workdir: str, *, step: int | None = None, seed: int = 0) -> tuple["VLAPolicy", dict]:
    """The checkpoint's inference params (EMA if trained with it) and preprocessing, from the workdir
    alone. Returns (policy, info) with info = dict(step, config (a RunConfig), assets)."""
    backend = load_policy(workdir, step, seed=seed)
    return cls(backend, seed=seed), dict(step=backend.step, config=backend.run_config, assets=backend.assets)

  @classmethod
  def remote(cls, url: str, *, seed: int = 0, api_key: str | None = None,
             connect_timeout_s: float = 60.0) -> "VLAPolicy":
    """The policy a server at `url` serves (python -m tinyvla_jax.serve)."""
    from tinyvla_jax.serving.client import RemotePolicy
    return cls(RemotePolicy(url, api_key=api_key, connect_timeout_s=connect_timeout_s), seed=seed)

  def start_episode(self, task: str, instruction: str, *, episode: int = 0) -> None:
    self._instruction = instruction
    self._rng = jax.random.key(episode_seed(self.seed, task, episode))
    self._calls = 0
    self._history = []

  def observe(self, obs) -> None:
    """Records an observation of every environment step (the execution calls it, also on steps where no
    chunk is predicted), so that a model with obs_steps > 1 sees the frames just before the current one."""
    if self._history and self._history[-1] is obs:
      return
    self._history = (self._history + [obs])[-self.obs_steps:]

  def request(self, obs) -> dict:
    """The served observation (serving/schema.py) for the current step: history, instruction, key."""
    self.observe(obs)
    key = jax.random.fold_in(self._rng, self._calls)
    return {"images": {name: np.stack([o.images[i] for o in self._history]) for i, name in enumerate(self.cameras)},
            "state": np.stack([np.asarray(o.state, np.float32) for o in self._history]),
            "prompt": self._instruction, "noise_key": np.asarray(jax.random.key_data(key), np.uint32)}

  def __call__(self, obs) -> np.ndarray:
    if self._instruction is None:
      raise RuntimeError("call start_episode(task, instruction, episode=i) first")
    request = self.request(obs)
    self._calls += 1
    return np.asarray(self.backend.infer(request)["actions"])


class ExpertPolicy:
  """MetaWorld's scripted expert (reads the privileged observation); chunks of one step."""

  def __init__(self):
    from tinyvla_jax.sim.metaworld import require_metaworld
    require_metaworld()
    from metaworld.policies import ENV_POLICY_MAP
    self._policies = ENV_POLICY_MAP
    self._expert = None

  def start_episode(self, task: str, instruction: str, *, episode: int = 0) -> None:
    self._expert = self._policies[task]()

  def __call__(self, obs) -> np.ndarray:
    from tinyvla_jax.sim.metaworld import expert_action
    return expert_action(self._expert, obs.raw)[None]


class RandomPolicy:
  """Uniform actions in [-1, 1]: the floor a learned policy must beat."""

  def __init__(self, *, action_dim: int = 4, seed: int = 0):
    self.action_dim, self.seed = action_dim, seed
    self._rng = np.random.default_rng(seed)

  def start_episode(self, task: str, instruction: str, *, episode: int = 0) -> None:
    self._rng = np.random.default_rng(episode_seed(self.seed, task, episode))

  def __call__(self, obs) -> np.ndarray:
    return self._rng.uniform(-1, 1, size=(1, self.action_dim)).astype(np.float32)


def episode_seed(seed: int, task: str, episode: int) -> int:
  """The 31-bit seed of episode `episode` of `task` under evaluation seed `seed`."""
  state = np.random.SeedSequence([int(seed), zlib.crc32(task.encode()), int(episode), 2]).generate_state(1)
  return int(state[0] >> 1)
