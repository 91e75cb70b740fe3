"""Speed and memory of the train step and of action sampling, printed as one JSON object.

  python scripts/benchmark.py --config configs/fixed.py:tiny [--steps 10] [--batch N]

Figures: train-step time and examples/s (compile excluded: a warm-up call, then `block_until_ready`
per timed step), compile time, DDIM action-chunk latency at batch 1 (all denoising steps, one jitted
call), peak memory (device allocator stats where the backend has them, else the process's max RSS),
the step's FLOPs from XLA's cost analysis, the achieved FLOP/s, and a peak matmul FLOP/s measured on the
same machine in the same run (a large float32 matmul), so the utilization is read against this machine.
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

from tinyvla_jax import cli

from tinyvla_jax.models.vla import UnifiedTinyVLAModel
from tinyvla_jax.recipes import typed
from tinyvla_jax.run_config import with_backbones
from tinyvla_jax.training import loop
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.training.objectives import denoising
from tinyvla_jax.training.step import make_train_step

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


def peak_matmul_flops(n: int = 2048, repeats: int = 5) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  _, times = _time(f, a, repeats=repeats)
  return 2 * n**3 / min(times)


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
  step = jax.jit(make_train_step(objective=denoising(policy), tx=tx, lr_schedule=lr), donate_argnums=0)
  batch = jax.device_put(next(train_loader.batches(0)))

  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  step_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
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

  peak = peak_matmul_flops()
  result = dict(
      preset=config.preset, backend=jax.default_backend(), device=str(jax.devices()[0]),
      batch_size=config.train.batch_size, train_step_ms=round(step_s * 1e3, 2),
      examples_per_s=round(config.train.batch_size / step_s, 2), train_step_compile_s=round(compile_s, 2),
      ddim_steps=config.diffusion.num_inference_steps,
      action_chunk_latency_ms_b1=round(float(np.median(sample_times)) * 1e3, 2),
      sampler_compile_s=round(sample_compile_s, 2), train_step_gflop=round(step_flops / 1e9, 3),
      achieved_gflop_per_s=round(step_flops / step_s / 1e9, 2), peak_matmul_gflop_per_s=round(peak / 1e9, 2),
      utilization=round(step_flops / step_s / peak, 4), **peak_memory_bytes())
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  cli.run(main)
