"""DDIM / DDPM steps and loops: pinned diffusers outputs, live parity, exact denoising, no retracing.

The golden JSON comes from `make_diffusers_golden.py` (diffusers 0.42.1, torch 2.13 CPU).
"""

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.diffusion import (
    ddim_sample,
    ddim_sample_from,
    ddim_step,
    ddpm_sample,
    ddpm_step,
    inference_timesteps,
    make_schedule,
)

GOLDEN = json.loads(pathlib.Path(__file__).with_name("diffusers_golden.json").read_text())
SCHEDULE = make_schedule(num_train_steps=100, beta_schedule="squaredcos_cap_v2")
STEPS = {"ddim_step": ddim_step, "ddpm_step": ddpm_step}

# float32 against float32: values up to ~2.5 have an ulp of 2.4e-7, and x0 = (...) / sqrt(abar_t)
# amplifies input rounding by up to 1 / sqrt(abar_90) ~ 7; measured max error is 4.8e-7 (under jit,
# where XLA rewrites a / sqrt(b) as a * rsqrt(b)). 2e-6 keeps a margin without hiding a real slip,
# which would show at 1e-3 or more.
ATOL = 2e-6


@pytest.fixture
def fast_compile():
  """Most XLA passes off for the sampling-loop tests: compiling a 10-step scan drops from ~3 s to
  ~0.5 s on CPU. The single-step golden tests keep the default pipeline, which is what ships."""
  previous = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


def _case_id(case):
  eta = f"-eta{case['eta']:g}" if "eta" in case else ""
  return f"t{case['timestep']}-{case['kind']}{eta}"


def _step_kwargs(case):
  kwargs = dict(
      model_output=jnp.float32(case["model_output"]),
      sample=jnp.float32(case["sample"]),
      noise=jnp.float32(case["noise"]),
      num_inference_steps=GOLDEN["config"]["num_inference_steps"],
  )
  if "eta" in case:
    kwargs["eta"] = case["eta"]
  return kwargs


def _golden_params():
  return [
      pytest.param(name, case, id=f"{name}-{_case_id(case)}") for name in STEPS for case in GOLDEN[name]
  ]


@pytest.mark.parametrize("traced", [False, True], ids=["python_t", "traced_t"])
@pytest.mark.parametrize("name, case", _golden_params())
def test_step_matches_pinned_diffusers(name, case, traced):
  step, kwargs = STEPS[name], _step_kwargs(case)
  if traced:
    out = jax.jit(lambda t: step(SCHEDULE, timestep=t, **kwargs))(jnp.int32(case["timestep"]))
  else:
    out = step(SCHEDULE, timestep=case["timestep"], **kwargs)
  np.testing.assert_allclose(out.prev_sample, np.float32(case["prev_sample"]), rtol=0, atol=ATOL)
  np.testing.assert_allclose(out.pred_original_sample, np.float32(case["pred_original_sample"]), rtol=0, atol=ATOL)


def test_golden_covers_clipping_and_the_last_step():
  for name in STEPS:
    kinds = {(c["timestep"], c["kind"]) for c in GOLDEN[name]}
    assert {(0, "in_range"), (0, "clipped"), (90, "clipped")} <= kinds
    assert all((c["num_clipped"] > 0) == (c["kind"] == "clipped") for c in GOLDEN[name])


def fake_epsilon(x, t):
  """The linear 'model' of make_diffusers_golden.py: t is int32 [B]."""
  return 0.8 * x + (t.astype(jnp.float32) / 100.0)[:, None, None] * 0.3


@pytest.mark.usefixtures("fast_compile")
def test_ddim_loop_matches_pinned_diffusers():
  loop = GOLDEN["ddim_loop"]
  x0 = jax.jit(lambda x: ddim_sample_from(fake_epsilon, x_T=x, schedule=SCHEDULE))(jnp.float32(loop["x_T"]))
  np.testing.assert_allclose(x0, np.float32(loop["x0"]), rtol=0, atol=ATOL)


@pytest.mark.usefixtures("fast_compile")
def test_ddim_sample_draws_x_T_from_rng():
  rng, shape = jax.random.key(3), (2, 8, 4)
  direct = ddim_sample(fake_epsilon, rng=rng, shape=shape, schedule=SCHEDULE)
  via_x_T = ddim_sample_from(fake_epsilon, x_T=jax.random.normal(rng, shape), schedule=SCHEDULE)
  np.testing.assert_array_equal(direct, via_x_T)


@pytest.mark.parametrize("sampler", [ddim_sample, ddpm_sample])
@pytest.mark.usefixtures("fast_compile")
def test_raw_and_typed_keys_agree(sampler):
  kwargs = dict(shape=(2, 8, 4), schedule=SCHEDULE, num_inference_steps=5)
  raw = sampler(fake_epsilon, rng=jax.random.PRNGKey(7), **kwargs)
  typed = sampler(fake_epsilon, rng=jax.random.key(7), **kwargs)
  np.testing.assert_array_equal(raw, typed)


def _oracle_denoiser(x0):
  """Returns the exact epsilon that maps x0 to x_t at step t: (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""

  def denoise(x_t, t):
    abar = SCHEDULE.alphas_cumprod[t][:, None, None]
    return (x_t - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)

  return denoise


@pytest.mark.parametrize("sampler", [ddim_sample, ddpm_sample])
@pytest.mark.parametrize("num_inference_steps", [10, 3])
@pytest.mark.usefixtures("fast_compile")
def test_exact_epsilon_recovers_x0(sampler, num_inference_steps):
  shape = (3, 16, 4)
  x0 = jax.random.uniform(jax.random.key(0), shape, minval=-1.0, maxval=1.0)
  out = sampler(
      _oracle_denoiser(x0),
      rng=jax.random.key(1),
      shape=shape,
      schedule=SCHEDULE,
      num_inference_steps=num_inference_steps,
  )
  np.testing.assert_allclose(out, x0, rtol=0, atol=1e-5)


def _toy_denoiser(x, t):
  """A fixed nonlinear stand-in for the U-Net, loud enough that unclipped x0 estimates leave [-1, 1]."""
  chex.assert_shape(t, (x.shape[0],))
  assert t.dtype == jnp.int32
  w = jnp.linspace(-2.0, 2.0, x.shape[-1] * x.shape[-1]).reshape(x.shape[-1], x.shape[-1])
  return 3.0 * jnp.tanh(x @ w + jnp.sin(t.astype(jnp.float32))[:, None, None])


@pytest.mark.parametrize("sampler", [ddim_sample, ddpm_sample])
@pytest.mark.usefixtures("fast_compile")
def test_jitted_sampler_traces_once_and_stays_in_range(sampler):
  chex.clear_trace_counter()
  shape = (4, 16, 10)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample(rng):
    return sampler(_toy_denoiser, rng=rng, shape=shape, schedule=SCHEDULE, num_inference_steps=10)

  a = sample(jax.random.key(0))
  b = sample(jax.random.key(1))
  for out in (a, b):
    chex.assert_shape(out, shape)
    assert bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.max(jnp.abs(out))) <= 1.0
  assert not np.array_equal(a, b)


@pytest.mark.usefixtures("fast_compile")
def test_ddpm_is_reproducible_given_rng():
  shape = (2, 8, 4)
  a = ddpm_sample(_toy_denoiser, rng=jax.random.key(0), shape=shape, schedule=SCHEDULE)
  b = ddpm_sample(_toy_denoiser, rng=jax.random.key(0), shape=shape, schedule=SCHEDULE)
  np.testing.assert_array_equal(a, b)


def test_argument_errors():
  x = jnp.zeros((2, 8, 4))
  kwargs = dict(sample=x, num_inference_steps=10)
  with pytest.raises(ValueError, match="same shape"):
    ddim_step(SCHEDULE, model_output=x[:, :4], timestep=10, **kwargs)
  with pytest.raises(ValueError, match="scalar"):
    ddim_step(SCHEDULE, model_output=x, timestep=jnp.zeros((2,), jnp.int32), **kwargs)
  with pytest.raises(ValueError, match="needs `noise`"):
    ddim_step(SCHEDULE, model_output=x, timestep=10, eta=1.0, **kwargs)
  with pytest.raises(ValueError, match="num_inference_steps"):
    ddpm_step(SCHEDULE, model_output=x, timestep=10, sample=x, noise=x, num_inference_steps=101)
  with pytest.raises(ValueError, match="shape must be"):
    ddim_sample(fake_epsilon, rng=jax.random.key(0), shape=(8, 4), schedule=SCHEDULE)
  with pytest.raises(ValueError, match="denoise_fn returned"):
    ddim_sample(lambda x, t: x[:, :1], rng=jax.random.key(0), shape=(2, 8, 4), schedule=SCHEDULE)


# ---------------------------------------------------------------------------------------------
# Live parity against diffusers (runs only where torch + diffusers are installed).


def _diffusers():
  diffusers = pytest.importorskip("diffusers")
  torch = pytest.importorskip("torch")
  kw = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True, prediction_type="epsilon")
  return diffusers, torch, kw


@pytest.mark.parity
@pytest.mark.parametrize(
    "num_inference_steps, atol",
    [
        (10, ATOL),
        (4, ATOL),
        # Every timestep, including the ill-conditioned end of the chain: 1 / sqrt(abar_95) ~ 16
        # amplifies the rounding of x0 (measured 1.9e-6), and at t = 99 with eta = 1 the DDIM
        # direction sqrt(1 - abar_prev - sigma^2) takes the root of 1e-3 left after cancelling
        # terms near 1, so their float32 rounding shows ~30x larger (measured 5.9e-6).
        (100, 1e-5),
    ],
)
def test_parity_steps_on_random_inputs(num_inference_steps, atol):
  diffusers, torch, kw = _diffusers()
  from diffusers.schedulers import scheduling_ddpm

  ddim = diffusers.DDIMScheduler(**kw, set_alpha_to_one=True)
  ddpm = diffusers.DDPMScheduler(**kw, variance_type="fixed_small")
  ddim.set_timesteps(num_inference_steps)
  ddpm.set_timesteps(num_inference_steps)
  timesteps = inference_timesteps(100, num_inference_steps)
  assert ddim.timesteps.tolist() == ddpm.timesteps.tolist() == timesteps.tolist()

  rng = np.random.default_rng(num_inference_steps)
  jit_ddim = jax.jit(ddim_step, static_argnames=("num_inference_steps", "eta"))
  jit_ddpm = jax.jit(ddpm_step, static_argnames=("num_inference_steps",))
  worst = 0.0
  for t in timesteps.tolist():
    sample, eps, noise = (rng.standard_normal((3, 16, 10)).astype(np.float32) * s for s in (1.5, 1.0, 1.0))
    common = dict(model_output=jnp.asarray(eps), timestep=jnp.int32(t), sample=jnp.asarray(sample))
    for eta in (0.0, 1.0):
      ref = ddim.step(torch.from_numpy(eps), t, torch.from_numpy(sample), eta=eta, variance_noise=torch.from_numpy(noise))
      out = jit_ddim(SCHEDULE, **common, num_inference_steps=num_inference_steps, eta=eta, noise=jnp.asarray(noise))
      worst = max(worst, _max_err(out, ref))
    patch = pytest.MonkeyPatch.context()
    with patch as mp:
      mp.setattr(scheduling_ddpm, "randn_tensor", lambda *a, **k: torch.from_numpy(noise))
      ref = ddpm.step(torch.from_numpy(eps), t, torch.from_numpy(sample))
    out = jit_ddpm(SCHEDULE, **common, num_inference_steps=num_inference_steps, noise=jnp.asarray(noise))
    worst = max(worst, _max_err(out, ref))
  print(f"max |jax - diffusers| over steps ({num_inference_steps} inference steps): {worst:.3g}")
  assert worst <= atol


def _max_err(out, ref):
  return max(
      float(np.max(np.abs(np.asarray(out.prev_sample) - ref.prev_sample.numpy()))),
      float(np.max(np.abs(np.asarray(out.pred_original_sample) - ref.pred_original_sample.numpy()))),
  )


@pytest.mark.parity
@pytest.mark.usefixtures("fast_compile")
def test_parity_full_ddim_loop():
  diffusers, torch, kw = _diffusers()
  sched = diffusers.DDIMScheduler(**kw, set_alpha_to_one=True)
  sched.set_timesteps(10)
  rng, shape = jax.random.key(11), (4, 16, 10)

  x = torch.from_numpy(np.array(jax.random.normal(rng, shape)))
  for t in sched.timesteps:
    t_batch = jnp.full((shape[0],), int(t), jnp.int32)
    eps = torch.from_numpy(np.array(fake_epsilon(jnp.asarray(x.numpy()), t_batch)))
    x = sched.step(eps, t, x).prev_sample

  ours = jax.jit(lambda r: ddim_sample(fake_epsilon, rng=r, shape=shape, schedule=SCHEDULE))(rng)
  err = float(np.max(np.abs(np.asarray(ours) - x.numpy())))
  print(f"max |jax - diffusers| after a 10-step DDIM loop: {err:.3g}")
  assert err <= ATOL
