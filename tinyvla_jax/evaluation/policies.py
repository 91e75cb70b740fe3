"""Policies the evaluator can run: a trained checkpoint, MetaWorld's scripted expert, and uniform noise.

A policy is `start_episode(task, instruction, episode=i)` then `policy(obs) -> chunk [T, A]` of
unnormalized actions (obs is sim.metaworld.Observation). The expert and the random policy return chunks
of one step, so every policy goes through the same execution and rollout code.

Randomness (the diffusion sampler's noise, the random policy's draws) is a function of (seed, task,
episode index, call within the episode) only: evaluating one task alone, or all of them, or during
training, gives each episode the same noise and so the same outcome.
"""

from __future__ import annotations

import os
import zlib

import jax
import numpy as np

from tinyvla_jax.data.normalize import NormStats
from tinyvla_jax.data.preprocess import Preprocessor
from tinyvla_jax.diffusion.config import DiffusionConfig
from tinyvla_jax.errors import MissingFileError, UserError
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.run_config import RunConfig


class VLAPolicy:
  """A trained TinyVLA: one jitted call per chunk (vision + LLM once, then the DDIM/DDPM loop in a scan)."""

  def __init__(self, *, model: UnifiedTinyVLAModel, params, preprocess: Preprocessor, diffusion: DiffusionConfig,
               seed: int = 0):
    if preprocess.obs_steps != model.config.obs_steps:
      raise UserError(f"the preprocessing keeps {preprocess.obs_steps} observation steps, the model takes "
                       f"model.obs_steps={model.config.obs_steps}")
    self.model, self.params, self.preprocess = model, params, preprocess
    self._sample = DiffusionPolicy.from_config(model, diffusion).jitted_sampler()
    self.seed = seed
    self._rng = None
    self._calls = 0
    self._prompt = None
    self._history: list = []  # the episode's last obs_steps observations, oldest first

  @property
  def stats(self) -> NormStats:
    return self.preprocess.stats

  @classmethod
  def from_workdir(cls, workdir: str, *, step: int | None = None, seed: int = 0) -> tuple["VLAPolicy", dict]:
    """The checkpoint's inference params (EMA if trained with it) and preprocessing (statistics, tokenizer,
    crop, history), from the workdir alone. Returns (policy, info) with info = dict(step, config (a
    RunConfig), assets)."""
    from tinyvla_jax.checkpoints import Checkpointer
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
      raise MissingFileError(f"no checkpoints under {workdir!r} (--workdir): train first with "
                              "python -m tinyvla_jax.train --config configs/fixed.py --workdir DIR")
    with Checkpointer(workdir) as checkpointer:
      assets, config = checkpointer.restore_json(step)
      config = RunConfig.from_dict(config)
      model = UnifiedTinyVLAModel(config.model)
      target = jax.eval_shape(lambda: init_params(model, jax.random.key(0), text_len=config.data.max_text_len))
      restored = checkpointer.restore(train_state_target=None, params_target=target, step=step)
    preprocess = Preprocessor.from_assets(restored.assets, max_text_len=config.data.max_text_len,
                                          obs_steps=config.model.obs_steps)
    policy = cls(model=model, params=restored.params, preprocess=preprocess, diffusion=config.diffusion, seed=seed)
    return policy, dict(step=restored.step, config=config, assets=restored.assets)

  def start_episode(self, task: str, instruction: str, *, episode: int = 0) -> None:
    self._prompt = self.preprocess.encode_prompt(instruction)
    self._rng = jax.random.key(episode_seed(self.seed, task, episode))
    self._calls = 0
    self._history = []

  def observe(self, obs) -> None:
    """Records an observation of every environment step (the execution calls it, also on steps where no
    chunk is predicted), so that a model with obs_steps > 1 sees the frames just before the current one."""
    if self._history and self._history[-1] is obs:
      return
    self._history = (self._history + [obs])[-self.preprocess.obs_steps:]

  def __call__(self, obs) -> np.ndarray:
    if self._prompt is None:
      raise RuntimeError("call start_episode(task, instruction, episode=i) first")
    self.observe(obs)
    inputs = self.preprocess.observation([o.images for o in self._history], [o.state for o in self._history],
                                         self._prompt)
    rng = jax.random.fold_in(self._rng, self._calls)
    self._calls += 1
    chunk = self._sample(self.params, rng, **inputs)
    return self.preprocess.unnormalize_actions(np.asarray(chunk[0]))


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
