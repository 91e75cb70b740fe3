"""Does a gradient barrier between transformer layers speed up the ViT's backward on this backend?

  python scripts/benchmark_vit_barrier.py --layers 12 --batch 1

CLIP ViT-L/14 at 336 px (the s/b/h presets' vision tower; 577 tokens), `--layers` encoder layers, the
gradient of a scalar loss with respect to the parameters and the input, jitted: once as the model runs it,
once with an identity between layers whose backward is `lax.optimization_barrier` (no XLA fusion can then
span two layers' gradients). Prints the compile time and the median of --repeats timed calls of each, in
turns (plain, barrier, plain, ...), as JSON. On XLA:CPU (2 cores) the barrier was not faster: README,
"Performance".
"""

from __future__ import annotations

import json
import time

from absl import app, flags

_LAYERS = flags.DEFINE_integer("layers", 12, "Encoder layers (ViT-L has 24; TinyVLA runs 23).")
_BATCH = flags.DEFINE_integer("batch", 1, "Images per call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per variant.")


def main(argv):
  del argv
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  from tinyvla_jax import presets
  from tinyvla_jax.models.config import VisionConfig
  from tinyvla_jax.models.vision import EncoderLayer

  @jax.custom_vjp
  def barrier(x):
    return x

  barrier.defvjp(lambda x: (x, None), lambda _, g: (jax.lax.optimization_barrier(g),))
  cfg = VisionConfig(**dict(presets.CLIP_VIT_L14_336, stem="patch"))
  tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1

  class Encoder(nn.Module):
    with_barrier: bool

    @nn.compact
    def __call__(self, x):
      for i in range(_LAYERS.value):
        x = EncoderLayer(cfg, name=f"layers_{i}")(x)
        x = barrier(x) if self.with_barrier else x
      return x

  x = jnp.asarray(np.random.default_rng(0).standard_normal((_BATCH.value, tokens, cfg.width)), jnp.float32)
  params = jax.jit(Encoder(False).init)(jax.random.key(0), x)
  results, steps = {}, {}
  for name, flag in (("plain", False), ("barrier", True)):
    model = Encoder(flag)
    steps[name] = jax.jit(jax.grad(lambda p, x, m=model: jnp.mean(m.apply(p, x) ** 2), argnums=(0, 1)))
    t0 = time.perf_counter()
    jax.block_until_ready(steps[name](params, x))
    results[name] = dict(compile_and_first_s=round(time.perf_counter() - t0, 2), times=[])
  for _ in range(_REPEATS.value):
    for name, step in steps.items():
      t0 = time.perf_counter()
      jax.block_until_ready(step(params, x))
      results[name]["times"].append(round(time.perf_counter() - t0, 3))
  for r in results.values():
    r["median_s"] = float(np.median(r["times"]))
  print(json.dumps(dict(layers=_LAYERS.value, batch=_BATCH.value, tokens=tokens, **results,
                        barrier_over_plain=round(results["barrier"]["median_s"] / results["plain"]["median_s"], 3))))


if __name__ == "__main__":
  app.run(main)
