"""Trains the micro config (tests/training/micro.py) on a mesh and writes what tests/training/test_sharding.py
compares. Run in its own process, since the device count is fixed when JAX starts:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/training/multidevice.py train \
      --workdir W --mesh 8,1 --mesh 4,2 --steps 3 --out D    (W/8x1, W/4x2; D/8x1.npz + .json, ...)
      [--scan_layers]                                        (three scanned layers per backbone)
  ... restore --workdir W/4x2 --mesh 8,1 --expect D/4x2.npz    (bit-identical restore onto another mesh)
  several processes: add --coordinator 127.0.0.1:PORT --num_processes 2 --process_id I
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from tests.training.micro import micro_config  # noqa: E402
from tinyvla_jax import recipes  # noqa: E402
from tinyvla_jax.checkpoints import Checkpointer  # noqa: E402
from tinyvla_jax.run_config import MeshConfig  # noqa: E402
from tinyvla_jax.training import loop, processes, sharding  # noqa: E402

BATCH = 8


def config(mesh: tuple[int, int], steps: int, epochs: int | None = None, scan_layers: bool | None = None):
  """The micro run at a global batch every mesh divides, for `steps` steps (0: one whole epoch, which ends
  with validation); fsdp_min_mib=0 so that even its small arrays are split over `fsdp` (the rule is the
  same; the size threshold is the only thing left out). `scan_layers` (True or False): three ViT and three
  decoder layers instead of one, scanned or unrolled (model.scan_layers)."""
  c = micro_config(batch_size=BATCH, max_steps=steps or None, epochs=epochs or (1 if steps == 0 else 2),
                   checkpoint_every_minutes=0.0)
  c.mesh.data, c.mesh.fsdp = mesh
  c.mesh.fsdp_min_mib = 0.0
  if scan_layers is not None:
    c.model.vision.depth = 4  # select_layer -2: three run
    c.model.language.num_hidden_layers = 3
    c.model.scan_layers = scan_layers
  return recipes.typed(c)


def flat(tree) -> dict[str, np.ndarray]:
  return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def name(mesh) -> str:
  return "x".join(map(str, mesh))


def train(args, mesh):
  result = loop.train(config(mesh, args.steps, args.epochs, args.scan_layers), workdir=os.path.join(args.workdir, name(mesh)),
                      progress=False)
  print(f"process {jax.process_index()} stopped at step {int(result.state.step)} (signal {result.signal})",
        flush=True)
  params = sharding.to_host(result.state.params)  # every process takes part in the gather
  if processes.is_primary():
    out = os.path.join(args.out, name(mesh) + ".npz")
    np.savez(out, **flat(params))
    # How the largest parameter is laid out: its shape and the shape each device holds.
    leaves = traverse_util.flatten_dict(result.state.params)
    path, largest = max(leaves.items(), key=lambda kv: kv[1].size)
    with open(out + ".json", "w") as f:
      json.dump(dict(name="/".join(path), shape=list(largest.shape),
                     shard_shapes=[list(s.data.shape) for s in largest.addressable_shards],
                     step=int(result.state.step), processes=jax.process_count()), f)


def restore(args, mesh):
  """The newest checkpoint's inference params onto `mesh`, compared bit for bit with --expect."""
  expected = np.load(args.expect)
  devices = sharding.make_mesh(MeshConfig(data=mesh[0], fsdp=mesh[1], fsdp_min_mib=0.0))
  shapes = traverse_util.unflatten_dict({tuple(k.split("/")): jax.ShapeDtypeStruct(v.shape, v.dtype)
                                         for k, v in expected.items()})
  target = sharding.abstract(shapes, sharding.state_shardings(shapes, devices, min_mib=0.0))
  with Checkpointer(args.workdir) as ckpt:
    restored = ckpt.restore(train_state_target=None, params_target=target)
  got = flat(sharding.to_host(restored.params))
  different = [k for k in expected if not np.array_equal(expected[k], got[k])]
  if different:
    raise SystemExit(f"restored params differ from {args.expect}: {different[:5]}")
  print(f"restored step {restored.step} onto mesh {mesh}: bit-identical")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("what", choices=("train", "restore"))
  p.add_argument("--workdir", required=True)
  p.add_argument("--mesh", required=True, action="append", help="data,fsdp (train: repeat for several runs)")
  p.add_argument("--steps", type=int, default=3, help="0: one epoch")
  p.add_argument("--epochs", type=int)
  p.add_argument("--out")
  p.add_argument("--expect")
  p.add_argument("--scan_layers", action="store_true", default=None,  # absent: None, the one-layer micro run
                 help="three scanned layers per backbone (config())")
  p.add_argument("--coordinator")
  p.add_argument("--num_processes", type=int)
  p.add_argument("--process_id", type=int)
  args = p.parse_args()
  processes.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                       process_id=args.process_id)
  for mesh in args.mesh:
    (train if args.what == "train" else restore)(args, tuple(int(x) for x in mesh.split(",")))


if __name__ == "__main__":
  main()
