"""Validation loss and condition sensitivity: exact zeros for ignored inputs, positive for used ones."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.data.preprocess import Preprocessor
from tinyvla_jax.data.loader import ChunkLoader, compute_stats
from tinyvla_jax.data.byte_tokenizer import ByteTokenizer
from tinyvla_jax.diffusion.schedule import make_schedule
from tinyvla_jax.training import validation
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy


class StateOnlyDenoiser(nn.Module):
  """Reads the noisy actions and the state; images and prompt never reach the output."""

  @nn.compact
  def __call__(self, *, images, tokens, token_mask, state, noisy_actions, timesteps):
    return nn.Dense(noisy_actions.shape[-1])(noisy_actions) + nn.Dense(noisy_actions.shape[-1])(state)[:, None]


def make_loader(batch_size=4):
  r = np.random.default_rng(0)
  eps = [Episode(images=r.integers(0, 256, (9, 1, 4, 4, 3), dtype=np.uint8),
                 states=r.normal(size=(9, 2)).astype(np.float32) * (i + 1),
                 actions=r.uniform(-1, 1, (9, 2)).astype(np.float32), instruction=f"task {i}", task=f"t{i}")
         for i in range(4)]
  preprocess = Preprocessor(stats=compute_stats(eps), tokenizer=ByteTokenizer(), max_text_len=32)
  return ChunkLoader(eps, preprocess=preprocess, horizon=4, batch_size=batch_size, seed=0, shuffle=True,
                     drop_last=False)


class StateOracle(nn.Module):
  """Knows the chunk is the state repeated: predicts the exact noise when it gets the right state."""

  schedule: object

  @nn.compact
  def __call__(self, *, images, tokens, token_mask, state, noisy_actions, timesteps):
    abar = self.schedule.alphas_cumprod[timesteps][:, None, None]
    return (noisy_actions - jnp.sqrt(abar) * state[:, None, :]) / jnp.sqrt(1 - abar)


class FakeLoader:
  def __init__(self, batches):
    self._batches = batches

  def batches(self, epoch):
    return iter(self._batches)


def test_ignored_inputs_have_zero_sensitivity_and_used_ones_positive():
  schedule = make_schedule(num_train_steps=100)
  r = np.random.default_rng(0)
  batches = []
  for b in (4, 4, 1):  # the last batch has one example: it counts toward the loss only
    state = r.uniform(-1, 1, (b, 2)).astype(np.float32)
    batches.append(dict(images=r.integers(0, 256, (b, 1, 4, 4, 3), dtype=np.uint8),
                        tokens=r.integers(4, 200, (b, 8)).astype(np.int32), token_mask=np.ones((b, 8), bool),
                        state=state, actions=np.repeat(state[:, None], 4, 1), action_mask=np.ones((b, 4), bool)))
  model = StateOracle(schedule)
  step = jax.jit(validation.make_validation_step(DiffusionPolicy(model, schedule=schedule)))
  out = validation.validate(step, {}, FakeLoader(batches), seed=0)
  assert out["val_loss"] < 1e-8  # the oracle is exact
  assert out["sensitivity/images"] == 0.0 and out["sensitivity/instruction"] == 0.0
  assert out["sensitivity/state"] > 10  # another row's state: the loss jumps from ~0


def test_validation_loss_weights_batches_by_real_action_steps():
  loader = make_loader(batch_size=3)
  model = StateOnlyDenoiser()
  batch = next(loader.batches(0))
  params = model.init(jax.random.key(0), **{k: batch[k] for k in ("images", "tokens", "token_mask", "state")},
                      noisy_actions=jnp.asarray(batch["actions"]), timesteps=jnp.zeros((3,), jnp.int32))["params"]
  schedule = make_schedule(num_train_steps=100)
  policy = DiffusionPolicy(model, schedule=schedule)
  step = jax.jit(validation.make_validation_step(policy))
  out = validation.validate(step, params, loader, seed=0)
  assert out["sensitivity/images"] == 0.0 and out["sensitivity/instruction"] == 0.0
  losses, weights = [], []
  for i, b in enumerate(loader.batches(0)):
    losses.append(float(policy.compute_loss(params, b, jax.random.fold_in(jax.random.key(1), i))))
    weights.append(b["action_mask"].sum())
  np.testing.assert_allclose(out["val_loss"], np.average(losses, weights=weights), rtol=1e-5)
  assert validation.validate(step, params, None, seed=0) == {}
