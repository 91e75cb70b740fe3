"""Batches in the training contract, from episodes, in a deterministic order that resumes exactly.

The contract (B batch, V cameras, L prompt tokens, T horizon, S state dim, A action dim):
  images       uint8   [B, To*V, H, W, 3]  the frames of steps t-To+1 .. t (oldest first; cameras in order
                                        within a step). To = obs_steps (Diffusion Policy's n_obs_steps);
                                        steps before the episode's start repeat its first frame, as DP pads
  tokens       int32   [B, L]           the rendered prompt, one IMAGE placeholder, right padded
  token_mask   bool    [B, L]           True on real tokens
  state        float32 [B, To*S]        robot states of the same steps, normalized (mean/std), concatenated
  actions      float32 [B, T, A]        actions t .. t+T-1, normalized to [-1, 1]
  action_mask  bool    [B, T]           False past the episode's end (those steps repeat the last
                                        action, as Diffusion Policy pads, and the loss ignores them)
  privileged   float32 [B, D]           only when the episodes carry privileged targets (train.privileged_weight):
                                        step t's, as given

Order: every (episode, t) pair is one sample (an episode's first `first_steps` steps `first_steps_repeat`
times, if asked); epoch e visits them in the permutation drawn from
`seed` and `e`. The position in the stream is therefore just the number of batches consumed, which the
train state already counts: `iterator_state(batches_seen)` names it (epoch, batch, seed) and the
checkpoint stores it, and `batches(epoch, start=...)` continues from it with the same order and the same
crops (the crop rng is drawn from (seed, epoch, batch) for the whole global batch, each host taking its
rows' draws: a sample's crop and state dropout do not depend on the number of hosts).

Preprocessing (crops, state and action normalization, the prompt) is the run's `Preprocessor`
(data/preprocess.py), the same object the checkpoint's policy uses at inference. Augmentation: a random
crop window per sample and camera when `augment` is on (training), the center window otherwise (validation).

Multi-host: `train.batch_size` is the global batch. Every host draws the same permutation and takes
its `num_shards`-th slice of each global batch (`shard_index`, default jax.process_index()), so the
hosts together see exactly what one host would. `pad_to` (validation on a mesh): a short last batch is
padded to a multiple of it (and of the hosts) with repeated rows whose `action_mask` is all False, so that
it splits evenly over devices and hosts and the padding adds nothing to the masked loss.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np

from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.data.normalize import NormStats
from tinyvla_jax.data.preprocess import Preprocessor
from tinyvla_jax.errors import UserError

BATCH_KEYS = ("images", "tokens", "token_mask", "state", "actions", "action_mask")


def compute_stats(episodes: list[Episode]) -> NormStats:
  return NormStats.compute(actions=np.concatenate([e.actions for e in episodes]),
                           states=np.concatenate([e.states for e in episodes]))


@dataclasses.dataclass
class ChunkLoader:
  episodes: list[Episode]
  preprocess: Preprocessor  # crops, normalization, the prompt, the observation history length
  horizon: int
  batch_size: int
  seed: int = 0
  shuffle: bool = True
  drop_last: bool = True
  augment: bool = False  # random crops (training) instead of center crops
  shard_index: int = 0  # this host's slice of each global batch
  num_shards: int = 1
  pad_to: int = 1  # pad short global batches to a multiple of this (the mesh's devices), masked out
  # Training only: the fraction of examples whose state is replaced by the dataset mean (0 after
  # normalization), so the policy cannot lean on the hand's position alone (see recipes.py, data.state_dropout).
  state_dropout: float = 0.0
  # Training only: each episode's first `first_steps` steps appear `first_steps_repeat` times per epoch.
  # Those are the steps where the action depends most on where the objects are (the hand starts at the
  # same place in every setup, so its state says nothing yet); later steps follow from the hand's motion.
  first_steps: int = 0
  first_steps_repeat: int = 1

  def __post_init__(self):
    if not self.episodes:
      raise UserError("the loader got no episodes: check data.path / data.val_fraction")
    if self.batch_size < 1 or self.horizon < 1:
      raise UserError(f"train.batch_size={self.batch_size} and model.head.horizon={self.horizon} must be >= 1")
    if not 0.0 <= self.state_dropout < 1.0:
      raise UserError(f"data.state_dropout={self.state_dropout} must be in [0, 1)")
    if self.batch_size % self.num_shards or not 0 <= self.shard_index < self.num_shards:
      raise UserError(f"train.batch_size={self.batch_size} must be divisible by the {self.num_shards} hosts "
                       f"(shard {self.shard_index})")
    if self.first_steps < 0 or self.first_steps_repeat < 1:
      raise UserError(f"data.first_steps={self.first_steps} must be >= 0 and data.first_steps_repeat="
                       f"{self.first_steps_repeat} >= 1")
    self._index = np.array([(e, t) for e, ep in enumerate(self.episodes) for t in range(len(ep))
                            for _ in range(self.first_steps_repeat if t < self.first_steps else 1)], np.int64)
    if self.drop_last and len(self._index) < self.batch_size:
      raise UserError(f"only {len(self._index)} samples, fewer than train.batch_size={self.batch_size}")
    prompts = [self.preprocess.encode_prompt(ep.instruction) for ep in self.episodes]
    self._tokens = np.stack([p[0] for p in prompts]).astype(np.int32)
    self._token_mask = np.stack([p[1] for p in prompts]).astype(bool)
    self._states = [self.preprocess.normalize_state(ep.states) for ep in self.episodes]
    self._actions = [self.preprocess.normalize_actions(ep.actions) for ep in self.episodes]
    with_privileged = [ep.privileged is not None for ep in self.episodes]
    if any(with_privileged) and not all(with_privileged):
      raise UserError("some episodes have privileged targets and some do not: all or none (train.privileged_weight)")
    self._privileged = all(with_privileged)

  @property
  def stats(self) -> NormStats:
    return self.preprocess.stats

  @property
  def obs_steps(self) -> int:
    return self.preprocess.obs_steps

  @property
  def num_samples(self) -> int:
    return len(self._index)

  @property
  def steps_per_epoch(self) -> int:
    n = self.num_samples
    return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

  def epoch_order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self.num_samples)
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

  def iterator_state(self, batches_seen: int) -> dict:
    """Where the stream is after `batches_seen` global batches: stored in checkpoints."""
    return dict(epoch=batches_seen // self.steps_per_epoch, batch=batches_seen % self.steps_per_epoch,
                seed=self.seed, steps_per_epoch=self.steps_per_epoch)

  def check_iterator_state(self, state: dict, batches_seen: int) -> None:
    if state != self.iterator_state(batches_seen):
      raise UserError(f"the checkpoint's data iterator state {state} does not match this data "
                       f"({self.iterator_state(batches_seen)}): the dataset or train.batch_size changed; use --overwrite")

  def batches(self, epoch: int, *, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This host's part of the batches of `epoch`, from batch number `start` on (to resume mid-epoch)."""
    order = self.epoch_order(epoch)
    multiple = math.lcm(self.pad_to, self.num_shards)
    for b in range(start, self.steps_per_epoch):
      rows = order[b * self.batch_size:(b + 1) * self.batch_size]
      real = len(rows)
      if real % multiple:  # a short last batch (drop_last=False): pad with other rows, masked out below
        rows = np.concatenate([rows, rows[(1 + np.arange(-real % multiple)) % real]])
      per_host = len(rows) // self.num_shards
      first = self.shard_index * per_host
      random = self.augment or self.state_dropout > 0
      rng = np.random.default_rng([self.seed, epoch, b, 0]) if random else None
      batch = self.make_batch(self._index[rows[first:first + per_host]], rng=rng, rows=(first, len(rows)))
      batch["action_mask"][max(real - first, 0):] = False
      yield batch

  def make_batch(self, pairs: np.ndarray, *, rng: np.random.Generator | None = None,
                 rows: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """The batch of `pairs` ((episode, t) rows). `rows=(first, total)`: they are rows first.. of a global
    batch of `total`, and take those rows' random draws (augment.random_crop)."""
    first, total = rows or (0, len(pairs))
    images, states, actions, masks, privileged = [], [], [], [], []
    history = np.arange(1 - self.obs_steps, 1)  # -To+1 .. 0
    for e, t in pairs:
      ep_actions = self._actions[e]
      steps = np.arange(t, t + self.horizon)
      valid = steps < len(ep_actions)
      actions.append(ep_actions[np.minimum(steps, len(ep_actions) - 1)])
      masks.append(valid)
      observed = np.maximum(t + history, 0)
      frames = self.episodes[e].images[observed]  # [To, V, H, W, 3]
      images.append(frames.reshape((-1,) + frames.shape[2:]))
      states.append(self._states[e][observed].reshape(-1))
      if self._privileged:
        privileged.append(self.episodes[e].privileged[t])
    episode_ids = pairs[:, 0]
    images = self.preprocess.crop(np.stack(images), rng if self.augment else None, rows=(first, total))
    states = np.stack(states)
    if rng is not None and self.state_dropout > 0:
      dropped = rng.random((total, 1))[first:first + len(states)] < self.state_dropout
      states = np.where(dropped, 0.0, states).astype(np.float32)
    batch = dict(images=np.ascontiguousarray(images), tokens=self._tokens[episode_ids],
                 token_mask=self._token_mask[episode_ids], state=states, actions=np.stack(actions),
                 action_mask=np.stack(masks))
    if self._privileged:
      batch["privileged"] = np.stack(privileged).astype(np.float32)
    return batch
