"""Speed and memory of the train step and of action sampling, printed as one JSON object.

  python scripts/benchmark.py --config configs/fixed.py:tiny [--steps 10] [--batch N]

Figures: train-step time and examples/s (compile excluded: a warm-up call, then `block_until_ready`
per timed step), compile time, DDIM action-chunk latency at batch 1 (all denoising steps, one jitted
call), peak memory (device allocator stats where the backend has them, else the process's max RSS).
Each time is read against this machine's limits, measured in the same run (tinyvla_jax/roofline.py): the
program's FLOPs and bytes from XLA's cost analysis, the fraction of the memory bandwidth and of the
matmul rate reached, and the roofline time the slower limit allows (the chunk's cost is the condition
encoder's plus `num_inference_steps` denoiser calls: XLA counts a scan's body once).
"""

from __future__ import annotations

import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from tinyvla_jax import cli, roofline

from tinyvla_jax.models.vla import UnifiedTinyVLAModel
from tinyvla_jax.recipes import typed
from tinyvla_jax.run_config import with_backbones
from tinyvla_jax.training import loop
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/fixed.py:tiny")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps.")
_BATCH = flags.DEFINE_integer("batch", None, "Batch size (default: the config's train.batch_size).")


def _time(fn, *args, repeats: int):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return out, times


def chunk_cost(policy: DiffusionPolicy, params, obs) -> dict:
  """FLOPs and bytes of one action chunk: the condition once, then the denoiser num_inference_steps times."""
  model = policy.model
  condition_fn = jax.jit(lambda p, obs: model.apply({"params": p}, **obs, method=model.condition))
  condition = condition_fn(params, obs)
  head = model.config.head
  noisy = jnp.zeros((condition.shape[0], head.horizon, head.action_dim), jnp.float32)
  denoise_fn = jax.jit(lambda p, c, x, t: model.apply({"params": p}, condition=c, noisy_actions=x, timesteps=t,
                                                      method=model.predict_noise))
  once = roofline.cost(condition_fn.lower(params, obs).compile())
  step = roofline.cost(denoise_fn.lower(params, condition, noisy, jnp.zeros((noisy.shape[0],), jnp.int32)).compile())
  return {k: once[k] + policy.num_inference_steps * step[k] for k in once}


def peak_memory_bytes() -> dict:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return {"peak_device_memory_mb": round(stats["peak_bytes_in_use"] / 2**20, 1)}
  rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
  return {"peak_host_rss_mb": round(rss_kb / 1024, 1)}


def main(argv):
  del argv
  if _BATCH.value:
    _CONFIG.value.train.batch_size = _BATCH.value
  config = with_backbones(typed(_CONFIG.value))  # sizes from --config.pretrained.* folders, if given
  train_loader = loop.load_data(config).train
  model = UnifiedTinyVLAModel(config.model)
  state, tx, lr = loop.build_state(config, model, total_steps=1000)
  policy = DiffusionPolicy.from_config(model, config.diffusion)
  step = jax.jit(loop.train_step_for(config, policy, tx, lr), donate_argnums=0)
  batch = jax.device_put(next(train_loader.batches(0)))

  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  step_cost = roofline.cost(compiled)
  state, _ = step(state, batch)  # warm-up
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))

  sampler = policy.jitted_sampler()
  obs = {k: batch[k][:1] for k in ("images", "tokens", "token_mask", "state")}
  t0 = time.perf_counter()
  jax.block_until_ready(sampler(state.params, jax.random.key(0), **obs))
  sample_compile_s = time.perf_counter() - t0
  _, sample_times = _time(lambda r: sampler(state.params, r, **obs), jax.random.key(1), repeats=10)
  sample_s = float(np.median(sample_times))

  limits = roofline.measure_limits()
  result = dict(
      preset=config.preset, backend=jax.default_backend(), device=str(jax.devices()[0]),
      batch_size=config.train.batch_size, train_step_ms=round(step_s * 1e3, 2),
      examples_per_s=round(config.train.batch_size / step_s, 2), train_step_compile_s=round(compile_s, 2),
      ddim_steps=config.diffusion.num_inference_steps,
      action_chunk_latency_ms_b1=round(sample_s * 1e3, 2), sampler_compile_s=round(sample_compile_s, 2),
      memory_gb_per_s=round(limits["memory_gb_per_s"], 1), matmul_gflop_per_s=round(limits["matmul_gflop_per_s"], 1),
      train_step_limits=roofline.fractions(step_s, step_cost, limits),
      action_chunk_limits=roofline.fractions(sample_s, chunk_cost(policy, state.params, obs), limits),
      **peak_memory_bytes())
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  cli.run(main)
