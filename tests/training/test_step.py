"""The train step: the loss it computes, its non-finite masking, and that it compiles once.

Most tests use a small linear "model" with the VLA's call signature: the step's logic does not
depend on the network, and a tiny network compiles in a fraction of a second.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.diffusion.schedule import make_schedule, q_sample
from tinyvla_jax.training.optimizer import make_optimizer
from tinyvla_jax.training.state import create_train_state
from tinyvla_jax.run_config import OptimConfig
from tinyvla_jax.training.step import make_train_step
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.training.objectives import denoising, original_loss_scaling, with_privileged_readout

B, T, A, S, L = 3, 8, 2, 2, 5
SCHEDULE = make_schedule(num_train_steps=100)


class LinearDenoiser(nn.Module):
  """eps_hat = W x_t + (mean image) u + state V: uses every input, so NaNs anywhere reach the loss."""

  @nn.compact
  def __call__(self, *, images, tokens, token_mask, state, noisy_actions, timesteps):
    img = jnp.mean(images.astype(jnp.float32), axis=(1, 2, 3, 4))[:, None, None] / 255.0
    x = nn.Dense(A, name="w")(noisy_actions)
    return x + img * self.param("u", nn.initializers.ones, (A,)) + nn.Dense(A, name="v")(state)[:, None, :]


def make_batch(seed=0, **overrides):
  r = np.random.default_rng(seed)
  batch = dict(images=r.integers(0, 255, (B, 1, 4, 4, 3), dtype=np.uint8), tokens=np.ones((B, L), np.int32),
               token_mask=np.ones((B, L), bool), state=r.standard_normal((B, S)).astype(np.float32),
               actions=r.uniform(-1, 1, (B, T, A)).astype(np.float32), action_mask=np.ones((B, T), bool))
  batch.update(overrides)
  return batch


def optim_config(**kw):
  """The seed's optimizer section (the dataclass defaults) with `kw` changed."""
  return OptimConfig(**kw)


def setup(ema_decay=None, loss_scale_threshold=None, optim=None):
  model = LinearDenoiser()
  params = model.init(jax.random.key(0), **{k: v for k, v in make_batch().items()
                                            if k not in ("actions", "action_mask")},
                      noisy_actions=jnp.zeros((B, T, A)), timesteps=jnp.zeros((B,), jnp.int32))["params"]
  tx, lr = make_optimizer(optim or optim_config(), total_steps=100, params=params)
  state = create_train_state(params=params, tx=tx, rng=jax.random.key(1), use_ema=ema_decay is not None)
  objective = denoising(DiffusionPolicy(model, schedule=SCHEDULE))
  if loss_scale_threshold is not None:
    objective = original_loss_scaling(objective, threshold=loss_scale_threshold, factor=0.1)
  step = make_train_step(objective=objective, tx=tx, lr_schedule=lr, ema_decay=ema_decay)
  return model, state, step


def test_loss_is_the_hand_computed_epsilon_mse():
  model, state, step = setup()
  batch = make_batch(action_mask=np.array([[True] * T, [True] * 5 + [False] * 3, [True] * 2 + [False] * 6]))
  _, metrics = jax.jit(step)(state, batch)
  # Recompute by hand with the same randomness: rng = fold_in(rng, batches seen = 0).
  noise_key, t_key = jax.random.split(jax.random.fold_in(state.rng, 0))
  noise = np.asarray(jax.random.normal(noise_key, (B, T, A)))
  t = np.asarray(jax.random.randint(t_key, (B,), 0, 100))
  abar = np.asarray(SCHEDULE.alphas_cumprod)[t][:, None, None]
  noisy = np.sqrt(abar) * batch["actions"] + np.sqrt(1 - abar) * noise
  np.testing.assert_allclose(noisy, q_sample(SCHEDULE, batch["actions"], noise, t), rtol=1e-5, atol=1e-6)
  pred = np.asarray(model.apply({"params": state.params}, **{k: batch[k] for k in ("images", "tokens", "token_mask",
                                                                                 "state")},
                                noisy_actions=noisy, timesteps=t))
  m = batch["action_mask"]
  expected = ((pred - noise) ** 2 * m[..., None]).sum() / (m.sum() * A)
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)


def test_loss_decreases_on_a_fixed_batch():
  _, state, step = setup(optim=optim_config(learning_rate=3e-2))
  step = jax.jit(step)
  batch = make_batch()
  losses = []
  for _ in range(30):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


@pytest.mark.parametrize("bad", ["nan_actions", "inf_actions", "nan_images", "inf_loss"])
def test_nonfinite_batch_leaves_everything_bit_identical(bad):
  _, state, step = setup(ema_decay=0.9)
  step = jax.jit(step)
  state, _ = step(state, make_batch(0))  # one good step first: moments and counts are non-trivial
  if bad == "nan_actions":
    batch = make_batch(1, actions=np.full((B, T, A), np.nan, np.float32))
  elif bad == "inf_actions":
    a = make_batch(1)["actions"]
    a[1, 2, 0] = np.inf
    batch = make_batch(1, actions=a)
  elif bad == "nan_images":  # float images (a bad decoder, say) reach the model as NaN pixels
    batch = make_batch(1, images=np.full((B, 1, 4, 4, 3), np.nan, np.float32))
  else:  # finite inputs whose loss overflows float32
    batch = make_batch(1, state=np.full((B, S), 3e38, np.float32))
  before = jax.device_get(state)
  after, m = step(state, batch)
  after = jax.device_get(after)
  assert not bool(m["finite"])
  chex.assert_trees_all_equal(after.params, before.params)
  chex.assert_trees_all_equal(after.ema_params, before.ema_params)
  chex.assert_trees_all_equal(after.opt_state, before.opt_state)  # Adam moments, counts -> the schedule
  assert int(after.step) == int(before.step) == 1
  assert int(after.skipped) == 1 and int(after.consecutive_skipped) == 1
  # The next good batch trains normally, and the run of skips resets.
  final, m2 = step(jax.device_put(after), make_batch(2))
  assert bool(m2["finite"]) and int(final.step) == 2 and int(final.consecutive_skipped) == 0
  assert int(final.skipped) == 1
  assert not np.array_equal(np.asarray(final.params["w"]["kernel"]), np.asarray(after.params["w"]["kernel"]))


@pytest.mark.parametrize("bad", ["nan_learning_rate", "overflowing_update"])
def test_a_nonfinite_update_from_finite_gradients_is_skipped(bad):
  """The loss and gradient are fine, the update is not: a NaN learning rate (config checks refuse it at
  start; this is the step's own guard) or an update that overflows."""
  import optax
  model = LinearDenoiser()
  _, state, _ = setup(ema_decay=0.9)
  lr = (lambda count: jnp.float32(jnp.nan)) if bad == "nan_learning_rate" else (lambda count: jnp.float32(3e38))
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0))
  state = create_train_state(params=state.params, tx=tx, rng=jax.random.key(1), use_ema=True)
  step = jax.jit(make_train_step(objective=denoising(DiffusionPolicy(model, schedule=SCHEDULE)), tx=tx, lr_schedule=lr,
                                 ema_decay=0.9))
  before = jax.device_get(state)
  after, m = step(state, make_batch(0))
  after = jax.device_get(after)
  assert not bool(m["finite"]) and int(after.skipped) == 1 and int(after.step) == 0
  # A step of 3e38 per parameter is finite element by element, but its norm (and the new parameters') is not.
  assert np.isfinite(float(m["loss"])) and np.isfinite(float(m["grad_norm"])) and not np.isfinite(float(m["update_norm"]))
  chex.assert_trees_all_equal(after.params, before.params)
  chex.assert_trees_all_equal(after.opt_state, before.opt_state)
  chex.assert_trees_all_equal(after.ema_params, before.ema_params)


def test_step_compiles_once():
  _, state, step = setup()
  traced = chex.assert_max_traces(step, n=1)
  jitted = jax.jit(traced)
  for seed in range(3):
    state, _ = jitted(state, make_batch(seed))


def test_broken_loss_scaling_really_scales():
  _, state, step = setup(loss_scale_threshold=0.5)
  _, state_plain, step_plain = setup()
  batch = make_batch(3, actions=np.full((B, T, A), 1.0, np.float32))
  _, m = jax.jit(step)(state, batch)
  _, m_plain = jax.jit(step_plain)(state_plain, batch)
  assert float(m["loss"]) > 0.5  # the true loss is above the threshold ...
  np.testing.assert_allclose(float(m["scaled_loss"]), 0.1 * float(m["loss"]), rtol=1e-6)  # ... so it is scaled
  # and so is the gradient the optimizer saw (before clipping)
  np.testing.assert_allclose(float(m["grad_norm"]), 0.1 * float(m_plain["grad_norm"]), rtol=1e-5)


def test_frozen_components_get_no_update():
  model = LinearDenoiser()
  _, state, _ = setup()
  tx, lr = make_optimizer(optim_config(learning_rate=1e-2, frozen=("v",)), total_steps=10, params=state.params)
  state = create_train_state(params=state.params, tx=tx, rng=jax.random.key(0), use_ema=False)
  step = jax.jit(make_train_step(objective=denoising(DiffusionPolicy(model, schedule=SCHEDULE)), tx=tx, lr_schedule=lr))
  new, _ = step(state, make_batch())
  chex.assert_trees_all_equal(new.params["v"], state.params["v"])
  assert not np.array_equal(new.params["w"]["kernel"], state.params["w"]["kernel"])
  with pytest.raises(ValueError, match="optim.frozen"):
    make_optimizer(optim_config(frozen=("nope",)), total_steps=10, params=state.params)


def test_weight_decay_mask_spares_biases_and_norms():
  from tinyvla_jax.training.optimizer import decay_mask
  params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "norm": {"scale": jnp.ones(2)},
            "embed": {"embedding": jnp.ones((3, 2))}}
  mask = decay_mask(params, "kernels")
  assert mask == {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False}, "embed": {"embedding": False}}
  assert all(jax.tree.leaves(decay_mask(params, "all")))


class SplitDenoiser(nn.Module):
  """The VLA's two-stage interface (condition once, then predict_noise) on a linear model."""

  def setup(self):
    self.enc = nn.Dense(3)
    self.w = nn.Dense(A)
    self.c = nn.Dense(A)

  def condition(self, *, images, tokens, token_mask, state):
    img = jnp.mean(images.astype(jnp.float32), axis=(1, 2, 3, 4))[:, None] / 255.0
    return self.enc(jnp.concatenate([state, img], -1))

  def predict_noise(self, *, condition, noisy_actions, timesteps):
    return self.w(noisy_actions) + self.c(condition)[:, None] * (1 + timesteps[:, None, None] / 100)

  def __call__(self, *, images, tokens, token_mask, state, noisy_actions, timesteps):
    cond = self.condition(images=images, tokens=tokens, token_mask=token_mask, state=state)
    return self.predict_noise(condition=cond, noisy_actions=noisy_actions, timesteps=timesteps)


def test_noise_samples_noise_each_chunk_k_times_under_one_encoding():
  model = SplitDenoiser()
  policy = DiffusionPolicy(model, schedule=SCHEDULE)
  batch = make_batch(0)
  obs = {k: batch[k] for k in ("images", "tokens", "token_mask", "state")}
  params = model.init(jax.random.key(0), **obs, noisy_actions=jnp.zeros((B, T, A)),
                      timesteps=jnp.zeros((B,), jnp.int32))["params"]
  rng = jax.random.key(7)
  got = policy.compute_loss(params, batch, rng, noise_samples=3)
  # By hand: the batch repeated 3 times (sample-major), one noise and timestep per copy.
  noise_key, t_key = jax.random.split(rng)
  actions = np.tile(batch["actions"], (3, 1, 1))
  noise = jax.random.normal(noise_key, actions.shape)
  t = jax.random.randint(t_key, (3 * B,), 0, 100)
  noisy = q_sample(SCHEDULE, jnp.asarray(actions), noise, t)
  tiled = {k: np.tile(v, (3,) + (1,) * (v.ndim - 1)) for k, v in obs.items()}
  pred = model.apply({"params": params}, **tiled, noisy_actions=noisy, timesteps=t)
  np.testing.assert_allclose(float(got), float(jnp.mean((pred - noise) ** 2)), rtol=1e-5)
  # One sample is the plain loss, through the model's __call__.
  one = policy.compute_loss(params, batch, rng, noise_samples=1)
  n1 = jax.random.normal(noise_key, batch["actions"].shape)
  t1 = jax.random.randint(t_key, (B,), 0, 100)
  p1 = model.apply({"params": params}, **obs, noisy_actions=q_sample(SCHEDULE, jnp.asarray(batch["actions"]), n1, t1),
                   timesteps=t1)
  np.testing.assert_allclose(float(one), float(jnp.mean((p1 - n1) ** 2)), rtol=1e-5)
  with pytest.raises(ValueError, match="train.noise_samples=0"):
    policy.compute_loss(params, batch, rng, noise_samples=0)


def test_gradient_accumulation_averages_micro_batch_gradients_into_one_update():
  """k micro-batches of rows i::k, gradients averaged, one update: for a loss that is a mean over rows and
  ignores the rng, exactly the full batch's update (to float32 rounding)."""
  batch = {k: np.concatenate([v, v[::-1]]) for k, v in make_batch().items()}  # 6 rows: 2 or 3 micro-batches

  def objective(params, batch, rng):
    del rng
    pred = batch["state"] @ params["w"]  # [B, S] @ [S, A]
    loss = jnp.mean(jnp.square(pred - batch["actions"][:, 0]))
    return loss, loss

  params = {"w": jnp.arange(S * A, dtype=jnp.float32).reshape(S, A) / 10}
  tx, lr = make_optimizer(optim_config(), total_steps=10, params=params)
  results = {}
  for k in (1, 2, 3):
    state = create_train_state(params=params, tx=tx, rng=jax.random.key(0), use_ema=False)
    step = jax.jit(make_train_step(objective=objective, tx=tx, lr_schedule=lr, grad_accum_steps=k))
    new_state, metrics = step(state, batch)
    results[k] = (np.asarray(new_state.params["w"]), float(metrics["loss"]), float(metrics["grad_norm"]))
  for k in (2, 3):
    np.testing.assert_allclose(results[k][0], results[1][0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(results[k][1:], results[1][1:], rtol=1e-5)
  assert not np.allclose(results[1][0], params["w"])  # it did update


class SplitDenoiserWithReadout(SplitDenoiser):
  """... with the VLA's privileged read-out of the condition (model.head.privileged_dim = 2)."""

  def setup(self):
    super().setup()
    self.readout = nn.Dense(2)

  def predict_privileged(self, *, condition):
    return self.readout(condition)

  def __call__(self, **kw):
    out = super().__call__(**kw)
    if self.is_initializing():
      self.predict_privileged(condition=self.condition(**{k: kw[k] for k in ("images", "tokens", "token_mask", "state")}))
    return out


def test_privileged_readout_adds_its_weighted_mse_and_logs_the_denoising_loss():
  model = SplitDenoiserWithReadout()
  policy = DiffusionPolicy(model, schedule=SCHEDULE)
  target = np.random.default_rng(3).standard_normal((B, 2)).astype(np.float32)
  batch = make_batch(0, privileged=target)
  obs = {k: batch[k] for k in ("images", "tokens", "token_mask", "state")}
  params = model.init(jax.random.key(0), **obs, noisy_actions=jnp.zeros((B, T, A)),
                      timesteps=jnp.zeros((B,), jnp.int32))["params"]
  rng = jax.random.key(5)
  objective = with_privileged_readout(policy, noise_samples=2, weight=0.5)
  value, logged = objective(params, batch, rng)
  denoise = policy.compute_loss(params, batch, rng, train=True, noise_samples=2)
  condition = model.apply({"params": params}, **obs, method="condition")
  readout = model.apply({"params": params}, condition=condition, method="predict_privileged")
  np.testing.assert_allclose(float(logged), float(denoise), rtol=1e-6)
  np.testing.assert_allclose(float(value), float(denoise) + 0.5 * float(jnp.mean((readout - target) ** 2)), rtol=1e-5)
  # The read-out and the encoder learn from it; the denoising loss alone leaves the read-out untouched.
  grads = jax.grad(lambda p: objective(p, batch, rng)[0])(params)
  assert float(jnp.abs(grads["readout"]["kernel"]).sum()) > 0
  plain = jax.grad(lambda p: denoising(policy, noise_samples=2)(p, batch, rng)[0])(params)
  assert float(jnp.abs(plain["readout"]["kernel"]).sum()) == 0
  assert not np.allclose(grads["enc"]["kernel"], plain["enc"]["kernel"])
