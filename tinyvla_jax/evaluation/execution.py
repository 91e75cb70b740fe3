"""How a chunk-predicting policy is executed closed loop: receding horizon or temporal ensembling.

Both take `predict(obs) -> chunk [T, A]` (unnormalized actions for steps t .. t+T-1) and give one
action per environment step. A policy with an observation history also gets every step's observation
through its `observe(obs)`.

- RecedingHorizon (Diffusion Policy): predict a chunk, execute its first `action_steps` actions,
  then predict again from the new observation. One policy call per `action_steps` env steps.
- TemporalEnsemble (ACT; TinyVLA's deployment): predict a chunk at every step; the action for step t
  is the weighted mean of every stored chunk's entry for t, with weights exp(-k i), i = 0 for the
  oldest chunk (k = 0.01 in TinyVLA). One policy call per env step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tinyvla_jax.errors import UserError



class RecedingHorizon:
  def __init__(self, predict: Callable, *, action_steps: int, observe: Callable | None = None):
    if action_steps < 1:
      raise UserError(f"--action_steps={action_steps} must be >= 1")
    self.predict, self.action_steps, self.observe = predict, action_steps, observe
    self._queue: list[np.ndarray] = []
    self.calls = 0

  def reset(self) -> None:
    self._queue, self.calls = [], 0

  def act(self, obs) -> np.ndarray:
    if self.observe is not None:  # every step's observation, for policies with an observation history
      self.observe(obs)
    if not self._queue:
      chunk = np.asarray(self.predict(obs))
      self.calls += 1
      if chunk.ndim != 2:
        raise UserError(f"the policy returned a chunk of shape {chunk.shape}, expected [T, A]")
      self._queue = list(chunk[:self.action_steps])
    return self._queue.pop(0)


class TemporalEnsemble:
  def __init__(self, predict: Callable, *, k: float = 0.01):
    self.predict, self.k = predict, float(k)
    self.reset()

  def reset(self) -> None:
    self._chunks: list[tuple[int, np.ndarray]] = []  # (step the chunk was predicted at, chunk [T, A])
    self._t = 0
    self.calls = 0

  def act(self, obs) -> np.ndarray:
    chunk = np.asarray(self.predict(obs))
    self.calls += 1
    self._chunks.append((self._t, chunk))
    # Keep the chunks that still cover this step (oldest first).
    self._chunks = [(s, c) for s, c in self._chunks if self._t - s < len(c)]
    actions = np.stack([c[self._t - s] for s, c in self._chunks])
    weights = np.exp(-self.k * np.arange(len(actions)))
    self._t += 1
    return (weights[:, None] * actions).sum(0) / weights.sum()


EXECUTIONS = ("receding", "ensemble")


def make_execution(name: str, predict: Callable, *, action_steps: int = 8, ensemble_k: float = 0.01):
  """`predict` may have an `observe(obs)` method (VLAPolicy): receding horizon then shows it every step's
  observation, not only those it predicts from (temporal ensembling predicts at every step anyway)."""
  if name == "receding":
    return RecedingHorizon(predict, action_steps=action_steps, observe=getattr(predict, "observe", None))
  if name == "ensemble":
    return TemporalEnsemble(predict, k=ensemble_k)
  raise UserError(f"--execution={name!r} must be one of {', '.join(EXECUTIONS)}")
