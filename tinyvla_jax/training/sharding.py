"""Where arrays live: one `jax.sharding.Mesh` with axes ("data", "fsdp"), and the rules that place the
batch, the train state and the inference parameters on it.

- **Batch**: the batch dimension is split over both axes (every device holds `global batch / devices`
  examples), so data parallelism and FSDP both shard the examples; what differs is the parameters.
- **Parameters, optimizer state, EMA** (one rule for all, since Adam's moments have the parameters'
  shapes): an array of at least `mesh.fsdp_min_mib` MiB is split along its largest axis that the `fsdp`
  size divides (ties: the first such axis); smaller arrays, scalars and PRNG keys are replicated. With
  fsdp=1 everything is replicated: plain data parallelism. XLA inserts the all-gathers (forward) and
  reduce-scatters (backward) that this implies; the step's code does not change.
- **Multi-host**: the mesh spans every process's devices (`jax.devices()`); each process builds the
  global batch from its own slice (`global_batch`), and places host-identical trees (the initial state,
  pretrained weights) with `place`, which works whether or not the sharding's devices are all local.

The mesh uses `AxisType.Auto` axes (GSPMD propagation): the model code carries no sharding annotations.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tinyvla_jax.errors import UserError
from tinyvla_jax.run_config import MeshConfig

AXES = ("data", "fsdp")
BATCH_AXES = AXES  # the batch dimension is split over both


def make_mesh(config: MeshConfig, devices=None) -> Mesh:
  """The ("data", "fsdp") mesh over `devices` (default: every device of every process)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = config.shape(len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(AXES)
  return jax.make_mesh(shape, AXES, axis_types=auto, devices=devices)


def check_batch_size(batch_size: int, mesh: Mesh, *, key: str = "train.batch_size") -> None:
  """The global batch must split evenly over the mesh's devices and over the processes."""
  devices, processes = mesh.size, jax.process_count()
  if batch_size % devices:
    raise UserError(f"--config.{key}={batch_size} cannot be split over the mesh's {devices} devices "
                    f"(mesh.data x mesh.fsdp = {' x '.join(map(str, mesh.devices.shape))}): use a multiple of {devices}")
  if batch_size % processes:
    raise UserError(f"--config.{key}={batch_size} cannot be split over {processes} processes: use a multiple of "
                    f"{processes}")


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device; the other dimensions whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(shape: tuple[int, ...], nbytes: int, *, fsdp: int, min_bytes: float) -> P:
  """The FSDP rule for one array: its largest axis that `fsdp` divides, if it is big enough to split."""
  if fsdp == 1 or nbytes < min_bytes:
    return P()
  candidates = [i for i, n in enumerate(shape) if n % fsdp == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: (shape[i], -i))
  return P(*([None] * axis + ["fsdp"]))


def _is_key(x) -> bool:
  return jnp.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def state_shardings(tree: Any, mesh: Mesh, *, min_mib: float) -> Any:
  """A NamedSharding per leaf of `tree` (arrays or ShapeDtypeStructs: use `jax.eval_shape`)."""
  fsdp = mesh.shape["fsdp"]

  def rule(x):
    if x is None or _is_key(x) or not getattr(x, "shape", ()):
      return replicated(mesh)
    nbytes = math.prod(x.shape) * np.dtype(x.dtype).itemsize
    return NamedSharding(mesh, fsdp_spec(tuple(x.shape), nbytes, fsdp=fsdp, min_bytes=min_mib * 2 ** 20))

  return jax.tree.map(rule, tree)


def abstract(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying `shardings`: the restore target for a checkpoint (Orbax then reads each
  device's part of every array, whatever mesh wrote it)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def place(tree: Any, shardings: Any) -> Any:
  """Puts a tree whose values are the same on every process (a deterministic init, pretrained weights) on
  the mesh. `jax.device_put` of a host copy works across processes; typed PRNG keys travel as their data."""

  def put(x, sharding):
    if _is_key(x):
      return jax.random.wrap_key_data(jax.device_put(np.asarray(jax.random.key_data(x)), sharding),
                                      impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)

  return jax.tree.map(put, tree, shardings)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """The global batch from this process's rows (one process: all of them), split over the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def to_host(tree: Any) -> Any:
  """Every process gets the full values of a (possibly sharded, possibly multi-process) tree as NumPy: what
  closed-loop evaluation on process 0 needs. A collective: every process must call it."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)
