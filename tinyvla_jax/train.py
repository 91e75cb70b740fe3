"""Train TinyVLA: `python -m tinyvla_jax.train --config configs/fixed.py[:PRESET] --workdir DIR`.

Re-running the same command resumes from the workdir's latest checkpoint; `--overwrite` starts over.
Config values can be overridden after --config, e.g. `--config.train.epochs=2`. A completed run on
MetaWorld data ends with a closed-loop evaluation of its final checkpoint when the `sim` extra is
installed (the protocol of `python -m tinyvla_jax.evaluate`; `--config.eval.at_end=false` skips it).

Several devices: `--config.mesh.data` / `--config.mesh.fsdp` (training/sharding.py). Several hosts: run
the same command on each with `--coordinator_address HOST:PORT --num_processes N --process_id I`, or with
none of them under SLURM (srun) or on a TPU pod slice, where JAX finds the others (README: Multi-device).
"""

from __future__ import annotations

from tinyvla_jax import huge_pages

if __name__ == "__main__":
  # Before the imports below (a second of JAX, Flax, Orbax): the restart would pay for them twice.
  huge_pages.restart_with_huge_pages()

import sys

from absl import app, flags
from ml_collections import config_flags

from tinyvla_jax import cli, recipes
from tinyvla_jax.evaluation import periodic, protocol
from tinyvla_jax.training import loop, processes

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/fixed.py:cpu", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and TensorBoard files.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the workdir's checkpoints and metrics and start over.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: how many processes take part.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index, 0 .. num_processes-1.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = cli.config_value(_CONFIG)
  if config is None:
    raise app.UsageError("pass --config configs/fixed.py[:PRESET]")
  config = recipes.typed(config)  # the one bridge: typed from here down, values checked
  processes.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                       process_id=_PROCESS_ID.value)
  workdir = _WORKDIR.value or f"workdirs/{config.preset}"
  result = loop.train(config, workdir=workdir, overwrite=_OVERWRITE.value,
                      epoch_hook=periodic.PeriodicEvaluation.for_run)
  if processes.is_primary():
    for record in result.history:
      print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    print(f"workdir: {workdir} (step {int(result.state.step)}, skipped {int(result.state.skipped)})")
  if result.signal is not None:  # saved; a scheduler must not take the run for finished
    sys.exit(128 + result.signal)
  if config.eval.at_end and not result.stopped_early and processes.is_primary():
    if processes.multi_process():  # it reads the checkpoint as one process; the others have exited by then
      print(f"closed-loop evaluation: run python -m tinyvla_jax.evaluate --workdir {workdir} on one host")
    else:
      protocol.evaluate_at_end(config, workdir)


if __name__ == "__main__":
  cli.run(main)
