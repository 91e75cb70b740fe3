"""Measures the two 1-D conv implementations (XLA conv vs im2col matmul) on this machine's backend.

  python scripts/benchmark_conv.py [--batch 64] [--presets cpu,s] [--repeats 5]

Prints one JSON object per line: single conv layers at the U-Net's shapes, then the whole action head
(forward, and forward+backward) per preset and implementation. Compile time is excluded from the
step times (warm-up call, then `block_until_ready`). `impl="auto"` picks from these numbers: im2col
on CPU; XLA (cuDNN) elsewhere until measured otherwise.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from tinyvla_jax import presets
from tinyvla_jax.models import conv
from tinyvla_jax.models.action_head import ActionHead
from tinyvla_jax.models.config import ActionHeadConfig


def timed(fn, *args, repeats: int):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return compile_s, sorted(times)[len(times) // 2]


def bench_layers(batch: int, repeats: int):
  key = jax.random.key(0)
  # (length, channels, kernel, stride): the U-Net's full-res block, its bottleneck, a downsample.
  for length, ch, k, stride in [(16, 256, 5, 1), (4, 1024, 5, 1), (16, 256, 3, 2)]:
    x = jax.random.normal(key, (batch, length, ch))
    w = jax.random.normal(key, (k, ch, ch)) * 0.01
    for impl in ("xla", "im2col"):
      fwd = jax.jit(lambda x, w, impl=impl: conv.conv1d(x, w, stride=stride, padding=(k // 2, k // 2), impl=impl))
      grad = jax.jit(jax.grad(lambda x, w, impl=impl: jnp.sum(
          conv.conv1d(x, w, stride=stride, padding=(k // 2, k // 2), impl=impl) ** 2), argnums=(0, 1)))
      _, t_fwd = timed(fwd, x, w, repeats=repeats)
      _, t_bwd = timed(grad, x, w, repeats=repeats)
      print(json.dumps(dict(what="conv1d", impl=impl, batch=batch, length=length, channels=ch, kernel=k,
                            stride=stride, fwd_ms=round(t_fwd * 1e3, 3), fwd_bwd_ms=round(t_bwd * 1e3, 3))))


def bench_head(preset: str, batch: int, repeats: int):
  base = presets.model_preset(preset).head.to_dict()
  hidden_width = presets.model_preset(preset).language.hidden_size
  for impl in ("xla", "im2col"):
    cfg = ActionHeadConfig(**{**base, "conv_impl": impl, "down_dims": tuple(base["down_dims"])})
    head = ActionHead(cfg)
    k = jax.random.split(jax.random.key(0), 3)
    inputs = dict(hidden=jax.random.normal(k[0], (batch, 8, hidden_width)), mask=jnp.ones((batch, 8), bool),
                  state=jnp.zeros((batch, cfg.state_dim)),
                  noisy_actions=jax.random.normal(k[1], (batch, cfg.horizon, cfg.action_dim)),
                  timesteps=jnp.zeros((batch,), jnp.int32))
    params = jax.jit(head.init)(k[2], **inputs)
    fwd = jax.jit(lambda p, inp: head.apply(p, **inp))
    loss = lambda p, inp: jnp.mean(head.apply(p, **inp) ** 2)
    step = jax.jit(jax.value_and_grad(loss))
    c_fwd, t_fwd = timed(fwd, params, inputs, repeats=repeats)
    c_step, t_step = timed(step, params, inputs, repeats=repeats)
    print(json.dumps(dict(what="action_head", preset=preset, impl=impl, batch=batch, backend=jax.default_backend(),
                          fwd_ms=round(t_fwd * 1e3, 2), fwd_bwd_ms=round(t_step * 1e3, 2),
                          compile_fwd_s=round(c_fwd, 2), compile_fwd_bwd_s=round(c_step, 2))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--presets", default="cpu,s")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  print(json.dumps(dict(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
                        auto_impl=conv.resolve_impl("auto"))))
  bench_layers(args.batch, args.repeats)
  for preset in args.presets.split(","):
    bench_head(preset, args.batch, args.repeats)


if __name__ == "__main__":
  main()
