"""Several processes, one run (JAX multi-controller: `jax.distributed`): who writes, and how the processes
agree on what only one of them may know.

Every process runs the same program on its own slice of each batch; the train step's collectives keep
their states identical. What is not in the step must be made to agree by hand:
- files: only process 0 (`is_primary`) writes metrics, TensorBoard, config.json, manifests and videos,
  and only it deletes (`--overwrite`); Orbax saves and restores are collective (every process calls them).
- decisions from the outside world: a SIGTERM may reach one process, a clock-based save may fall due on
  one process a step before another. `any_process` ORs a flag over the processes (a tiny all-gather), so
  all save and stop at the same step; the loop asks at its sync points.
- order: `barrier` waits for every process (e.g. after process 0 cleared a workdir, before the others read it).

With one process all of this is free: no collective is ever issued.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

from tinyvla_jax.errors import UserError

log = logging.getLogger(__name__)


def is_primary() -> bool:
  return jax.process_index() == 0


def multi_process() -> bool:
  return jax.process_count() > 1


def barrier(name: str) -> None:
  if multi_process():
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
  """Whether `flag` is True on any process (every process must call it at the same point)."""
  if not multi_process():
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.array([bool(flag)]))))


# Environment variables that say a launcher started several processes that JAX can find by itself.
_AUTO_DETECTED = {"SLURM_NTASKS": "SLURM", "TPU_WORKER_HOSTNAMES": "a Cloud TPU pod slice",
                  "OMPI_COMM_WORLD_SIZE": "Open MPI"}


def initialize(*, coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> None:
  """Joins the processes of a multi-host run, before any JAX computation. Given all three flags, they are
  used as they are; given none, JAX's cluster auto-detection runs when a launcher (SLURM with more than one
  task, a TPU pod slice, Open MPI) started several processes, and nothing happens otherwise (one process).
  On CPU the collectives go through gloo."""
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise UserError("--coordinator_address, --num_processes and --process_id go together: pass all three "
                    "(or none, to let JAX detect a SLURM / TPU pod / MPI launch)")
  if all(given):
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise UserError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
  else:
    launcher = next((name for var, name in _AUTO_DETECTED.items() if _several(os.environ.get(var))), None)
    if launcher is None:
      return
    log.info("multi-process launch detected (%s): jax.distributed.initialize() with auto-detection", launcher)
    kwargs = {}
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  log.info("process %d of %d, %d local devices of %d", jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())


def _several(value: str | None) -> bool:
  if not value:
    return False
  if "," in value:  # a host list
    return len(value.split(",")) > 1
  return value.isdigit() and int(value) > 1
