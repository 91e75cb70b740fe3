"""The ViT's layer stack three ways: compile time and forward+backward time on this backend.

  python scripts/benchmark_vit_layers.py --layers 12 --batch 1 [--variants plain,barrier,scan]

CLIP ViT-L/14 at 336 px (the s/b/h presets' vision tower; 577 tokens), `--layers` encoder layers, the
gradient of a scalar loss with respect to the parameters and the input, jitted, for each variant:
- plain: the layers unrolled, as the model runs them by default;
- barrier: an identity between layers whose backward is `lax.optimization_barrier` (no XLA fusion can then
  span two layers' gradients);
- scan: the layers as one lax.scan over their stacked weights (`model.scan_layers`, models/layer_stack.py).
Prints, as JSON, each variant's compile time (lowered and compiled, before any call) and the median of
--repeats timed calls, taken in turns (plain, barrier, scan, plain, ...) so a busy machine slows all alike.
Measured on XLA:CPU (2 cores): README, "Performance".
"""

from __future__ import annotations

import json
import time

from absl import app, flags

_LAYERS = flags.DEFINE_integer("layers", 12, "Encoder layers (ViT-L has 24; TinyVLA runs 23).")
_BATCH = flags.DEFINE_integer("batch", 1, "Images per call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per variant.")
_VARIANTS = flags.DEFINE_list("variants", ["plain", "barrier", "scan"], "Which of plain, barrier, scan to time.")


def main(argv):
  del argv
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  from tinyvla_jax import presets
  from tinyvla_jax.models.config import VisionConfig
  from tinyvla_jax.models.layer_stack import run_layers
  from tinyvla_jax.models.vision import EncoderLayer

  @jax.custom_vjp
  def barrier(x):
    return x

  barrier.defvjp(lambda x: (x, None), lambda _, g: (jax.lax.optimization_barrier(g),))
  cfg = VisionConfig(**dict(presets.CLIP_VIT_L14_336, stem="patch"))
  tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1

  class Encoder(nn.Module):
    variant: str

    @nn.compact
    def __call__(self, x):
      layers = [EncoderLayer(cfg, name=f"layers_{i}") for i in range(_LAYERS.value)]
      if self.variant == "scan":
        return run_layers(self, layers, x, scan=True)
      for layer in layers:
        x = layer(x)
        x = barrier(x) if self.variant == "barrier" else x
      return x

  unknown = set(_VARIANTS.value) - {"plain", "barrier", "scan"}
  if unknown:
    raise app.UsageError(f"--variants: unknown {sorted(unknown)}; choose from plain, barrier, scan")

  x = jnp.asarray(np.random.default_rng(0).standard_normal((_BATCH.value, tokens, cfg.width)), jnp.float32)
  params = jax.jit(Encoder("plain").init)(jax.random.key(0), x)
  results, steps = {}, {}
  for name in _VARIANTS.value:
    model = Encoder(name)
    fn = jax.jit(jax.grad(lambda p, x, m=model: jnp.mean(m.apply(p, x) ** 2), argnums=(0, 1)))
    t0 = time.perf_counter()
    steps[name] = fn.lower(params, x).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(steps[name](params, x))  # the first call (allocation) is not timed
    results[name] = dict(compile_s=round(compile_s, 2), times=[])
  for _ in range(_REPEATS.value):
    for name, step in steps.items():
      t0 = time.perf_counter()
      jax.block_until_ready(step(params, x))
      results[name]["times"].append(round(time.perf_counter() - t0, 3))
  for r in results.values():
    r["median_s"] = float(np.median(r["times"]))
  ratios = {f"{name}_over_plain": round(r["median_s"] / results["plain"]["median_s"], 3)
            for name, r in results.items() if name != "plain" and "plain" in results}
  print(json.dumps(dict(layers=_LAYERS.value, batch=_BATCH.value, tokens=tokens, **results, **ratios)))


if __name__ == "__main__":
  app.run(main)
