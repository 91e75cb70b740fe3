"""Writes diffusers_golden.json: reference outputs of diffusers' DDIM/DDPM schedulers.

Run it in an environment with torch + diffusers (not needed for the default test suite):

  /work/refvenv/bin/python tests/diffusion/make_diffusers_golden.py

Configuration pinned to TinyVLA's: squaredcos_cap_v2, 100 train steps, set_timesteps(10),
prediction_type epsilon, clip_sample True (range 1), DDIM set_alpha_to_one True, DDPM fixed_small.
All arrays are float32 values written as Python floats (exact round trip).
"""

from __future__ import annotations

import json
import pathlib
import unittest.mock

import diffusers
import numpy as np
import torch
from diffusers.schedulers import scheduling_ddpm

OUT = pathlib.Path(__file__).with_name("diffusers_golden.json")
SHAPE = (2, 4, 3)  # [B, T, A]; the schedulers are elementwise, so the layout does not matter
TIMESTEPS = (90, 50, 10, 0)
SCHEDULER_KW = dict(
    num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True, prediction_type="epsilon"
)


def f32(shape, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def tolist(x) -> list:
  return np.asarray(x, dtype=np.float32).astype(np.float64).tolist()


def step_inputs(sched, t: int, kind: str, rng: np.random.Generator):
  """(sample, eps, noise). "in_range": x_t of an x0 in [-0.9, 0.9] with a near-true epsilon, so the x0
  estimate is not clipped; "clipped": unrelated N(0, 1) sample and epsilon, so some entries clip."""
  noise = f32(SHAPE, rng)
  if kind == "clipped":
    return f32(SHAPE, rng), f32(SHAPE, rng), noise
  x0 = rng.uniform(-0.9, 0.9, SHAPE).astype(np.float32)
  true_eps = f32(SHAPE, rng)
  sample = sched.add_noise(torch.from_numpy(x0), torch.from_numpy(true_eps), torch.tensor([t])).numpy()
  return sample, (true_eps + f32(SHAPE, rng, scale=0.01)).astype(np.float32), noise


def ddim_cases(rng: np.random.Generator) -> list[dict]:
  sched = diffusers.DDIMScheduler(**SCHEDULER_KW, set_alpha_to_one=True)
  sched.set_timesteps(10)
  cases = []
  for t in TIMESTEPS:
    for kind, eta in (("in_range", 0.0), ("clipped", 0.0), ("in_range", 1.0), ("clipped", 1.0)):
      sample, eps, noise = step_inputs(sched, t, kind, rng)
      out = sched.step(
          torch.from_numpy(eps), t, torch.from_numpy(sample), eta=eta, variance_noise=torch.from_numpy(noise)
      )
      cases.append(_case(t, sample, eps, noise, out, kind=kind, eta=eta))
  return cases


def ddpm_cases(rng: np.random.Generator) -> list[dict]:
  sched = diffusers.DDPMScheduler(**SCHEDULER_KW, variance_type="fixed_small")
  sched.set_timesteps(10)
  cases = []
  for t in TIMESTEPS:
    for kind in ("in_range", "clipped"):
      cases.append(_ddpm_case(sched, t, kind, rng))
  return cases


def _ddpm_case(sched, t: int, kind: str, rng: np.random.Generator) -> dict:
  sample, eps, noise = step_inputs(sched, t, kind, rng)
  # DDPMScheduler.step draws its own noise; substitute ours so the JAX side can use the same.
  with unittest.mock.patch.object(scheduling_ddpm, "randn_tensor", lambda *a, **k: torch.from_numpy(noise)):
    out = sched.step(torch.from_numpy(eps), t, torch.from_numpy(sample))
  return _case(t, sample, eps, noise, out, kind=kind)


def _case(t, sample, eps, noise, out, **extra) -> dict:
  num_clipped = int(np.sum(np.abs(out.pred_original_sample.numpy()) == 1.0))
  assert (num_clipped > 0) == (extra["kind"] == "clipped"), (t, extra, num_clipped)
  return dict(
      timestep=t,
      sample=tolist(sample),
      model_output=tolist(eps),
      noise=tolist(noise),
      prev_sample=tolist(out.prev_sample.numpy()),
      pred_original_sample=tolist(out.pred_original_sample.numpy()),
      num_clipped=num_clipped,
      **extra,
  )


def fake_epsilon(x: np.ndarray, t: int) -> np.ndarray:
  """A fixed linear 'model' of x and t, shared with test_samplers.py."""
  return (np.float32(0.8) * x + np.float32(t / 100.0) * np.float32(0.3)).astype(np.float32)


def ddim_loop(rng: np.random.Generator) -> dict:
  sched = diffusers.DDIMScheduler(**SCHEDULER_KW, set_alpha_to_one=True)
  sched.set_timesteps(10)
  x_T = f32(SHAPE, rng)
  x = torch.from_numpy(x_T)
  for t in sched.timesteps:
    x = sched.step(torch.from_numpy(fake_epsilon(x.numpy(), int(t))), t, x).prev_sample
  return dict(x_T=tolist(x_T), x0=tolist(x.numpy()))


def schedules() -> dict:
  cos = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
  lin = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
  return dict(
      squaredcos_cap_v2_100=dict(betas=tolist(cos.betas), alphas_cumprod=tolist(cos.alphas_cumprod)),
      linear_1000=dict(betas=tolist(lin.betas), alphas_cumprod=tolist(lin.alphas_cumprod)),
  )


def main() -> None:
  rng = np.random.default_rng(0)
  golden = dict(
      versions=dict(diffusers=diffusers.__version__, torch=torch.__version__),
      config=dict(SCHEDULER_KW, num_inference_steps=10, shape=SHAPE),
      schedules=schedules(),
      ddim_step=ddim_cases(rng),
      ddpm_step=ddpm_cases(rng),
      ddim_loop=ddim_loop(rng),
  )
  OUT.write_text(json.dumps(golden, indent=None, separators=(",", ":")) + "\n")
  print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
  main()
