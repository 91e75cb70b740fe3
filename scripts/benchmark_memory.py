"""Memory of the compiled train step per device, per preset, precision and mesh: compiled, never run, so the
paper presets (s, b, h: 0.4-1.3B parameters) are measured on a laptop CPU. Prints one JSON object per row
and a Markdown table.

  python scripts/benchmark_memory.py --presets s,h --devices 8 [--variants ...] [--fsdp_variants fp32,remat]

Variants (each adds to the one before): fp32 (float32 compute, weights, optimizer state); bf16
(`model.dtype=bfloat16`: bfloat16 compute, float32 master weights and optimizer state); frozen_bf16
(`model.frozen_dtype=bfloat16`: the frozen backbone weights stored in bfloat16); remat (`model.remat=true`:
transformer layers recomputed in the backward pass); all four with the layers unrolled
(`model.scan_layers=false`). scan and remat_scan: fp32 and remat with `model.scan_layers=true` (the paper
presets' default: the ViT's and the decoder's layers as one lax.scan each, which XLA compiles once).
Meshes: one device, and with `--devices N` (simulated host devices) `mesh.fsdp=N` for the `--fsdp_variants`
(parameters, optimizer state and EMA split N ways) at the same per-device batch. Each row compiles the whole
step (1-5 min each for these presets on 2 CPU cores). The figures are XLA's `compiled.memory_analysis()` for
one device: arguments (the state and the batch; donated, so the outputs alias them) + temporaries
(activations kept for the backward pass, gradients, workspace).
The presets train LoRA adapters on frozen backbones by default, so only the adapters and the head have
gradients and Adam moments (training/step.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _arguments():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--presets", default="s,b,h")
  p.add_argument("--devices", type=int, default=1, help="simulated host devices; > 1 adds the mesh.fsdp=N rows")
  p.add_argument("--batch_per_device", type=int, default=8)
  p.add_argument("--variants", default="fp32,bf16,frozen_bf16,remat")
  p.add_argument("--fsdp_variants", default="fp32,remat", help="the variants also compiled for mesh.fsdp=--devices")
  return p.parse_args()


ARGS = _arguments() if __name__ == "__main__" else None
if ARGS is not None and ARGS.devices > 1:  # before JAX starts: the device count is fixed then
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ARGS.devices}"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tinyvla_jax import presets, recipes  # noqa: E402
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params  # noqa: E402
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy  # noqa: E402
from tinyvla_jax.training import loop, sharding  # noqa: E402
from tinyvla_jax.training.optimizer import make_optimizer  # noqa: E402
from tinyvla_jax.training.state import create_train_state  # noqa: E402

_UNROLLED = dict(scan_layers=False)
VARIANTS = {"fp32": _UNROLLED, "bf16": dict(_UNROLLED, dtype="bfloat16"),
            "frozen_bf16": dict(_UNROLLED, dtype="bfloat16", frozen_dtype="bfloat16"),
            "remat": dict(_UNROLLED, dtype="bfloat16", frozen_dtype="bfloat16", remat=True),
            "scan": dict(scan_layers=True),
            "remat_scan": dict(dtype="bfloat16", frozen_dtype="bfloat16", remat=True, scan_layers=True)}


def abstract_batch(run, batch: int) -> dict:
  m = run.model
  s = m.vision.image_size
  shape = lambda *dims, dtype=jnp.float32: jax.ShapeDtypeStruct(dims, dtype)
  return dict(images=shape(batch, m.num_views, s, s, 3, dtype=jnp.uint8),
              tokens=shape(batch, run.data.max_text_len, dtype=jnp.int32),
              token_mask=shape(batch, run.data.max_text_len, dtype=jnp.bool_),
              state=shape(batch, m.state_width), actions=shape(batch, m.head.horizon, m.head.action_dim),
              action_mask=shape(batch, m.head.horizon, dtype=jnp.bool_))


def step_memory(run, mesh, batch: int) -> dict:
  """The train step of `run` compiled for `mesh` (global `batch`) from shapes only: per-device bytes."""
  model = UnifiedTinyVLAModel(run.model)
  params = jax.eval_shape(lambda: init_params(model, jax.random.key(0), text_len=run.data.max_text_len))
  tx, lr = make_optimizer(run.optim, total_steps=1000, params=params, finetune=run.model.finetune)
  state = jax.eval_shape(lambda: create_train_state(
      params=loop.store_frozen(init_params(model, jax.random.key(0), text_len=run.data.max_text_len), tx,
                               run.model.frozen_dtype),
      tx=tx, rng=jax.random.key(0), use_ema=run.train.ema_decay is not None))
  state_sh = sharding.state_shardings(state, mesh, min_mib=run.mesh.fsdp_min_mib)
  policy = DiffusionPolicy.from_config(model, run.diffusion)
  step = jax.jit(loop.train_step_for(run, policy, tx, lr),
                 in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step.lower(sharding.abstract(state, state_sh), abstract_batch(run, batch)).compile()
  seconds = time.perf_counter() - t0
  m = compiled.memory_analysis()
  gib = lambda b: round(b / 2**30, 3)
  params_total = sum(x.size for x in jax.tree.leaves(params))
  return dict(params_m=round(params_total / 1e6, 1), arguments_gib=gib(m.argument_size_in_bytes),
              temp_gib=gib(m.temp_size_in_bytes),
              total_gib=gib(m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes
                            - m.alias_size_in_bytes), compile_s=round(seconds, 1))


def main():
  rows = []
  for preset in ARGS.presets.split(","):
    for variant in ARGS.variants.split(","):
      fsdp_too = ARGS.devices > 1 and variant in ARGS.fsdp_variants.split(",")
      for data, fsdp in [(1, 1)] + ([(1, ARGS.devices)] if fsdp_too else []):
        c = recipes.fixed_recipe(presets.model_preset(preset), preset=preset)
        c.model.update(VARIANTS[variant])
        c.mesh.data, c.mesh.fsdp = data, fsdp
        run = recipes.typed(c)
        devices = jax.devices()[:data * fsdp]
        mesh = sharding.make_mesh(dataclasses.replace(run.mesh, data=data, fsdp=fsdp), devices)
        row = dict(preset=preset, variant=variant, mesh=f"{data}x{fsdp}", batch_per_device=ARGS.batch_per_device,
                   **step_memory(run, mesh, ARGS.batch_per_device * data * fsdp))
        print(json.dumps(row), flush=True)
        rows.append(row)
  print("\n| preset | params (M) | variant | mesh (data x fsdp) | arguments GiB/device | temporaries GiB/device | "
        "total GiB/device | compile s |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['preset']} | {r['params_m']} | {r['variant']} | {r['mesh']} | {r['arguments_gib']} | "
          f"{r['temp_gib']} | {r['total_gib']} | {r['compile_s']} |")


if __name__ == "__main__":
  main()
