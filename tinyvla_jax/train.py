"""Train TinyVLA: `python -m tinyvla_jax.train --config configs/fixed.py[:PRESET] --workdir DIR`.

Re-running the same command resumes from the workdir's latest checkpoint; `--overwrite` starts over.
Config values can be overridden after --config, e.g. `--config.train.epochs=2`. A completed run on
MetaWorld data ends with a closed-loop evaluation of its final checkpoint when the `sim` extra is
installed (the protocol of `python -m tinyvla_jax.evaluate`; `--config.eval.at_end=false` skips it).
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from tinyvla_jax import cli, recipes
from tinyvla_jax.evaluation import periodic, protocol
from tinyvla_jax.training import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/fixed.py:cpu", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and TensorBoard files.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the workdir's checkpoints and metrics and start over.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  config = cli.config_value(_CONFIG)
  if config is None:
    raise app.UsageError("pass --config configs/fixed.py[:PRESET]")
  config = recipes.typed(config)  # the one bridge: typed from here down, values checked
  workdir = _WORKDIR.value or f"workdirs/{config.preset}"
  result = loop.train(config, workdir=workdir, overwrite=_OVERWRITE.value,
                      epoch_hook=periodic.PeriodicEvaluation.for_run)
  for record in result.history:
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
  print(f"workdir: {workdir} (step {int(result.state.step)}, skipped {int(result.state.skipped)})")
  if result.signal is not None:  # saved; a scheduler must not take the run for finished
    sys.exit(128 + result.signal)
  if config.eval.at_end and not result.stopped_early:
    protocol.evaluate_at_end(config, workdir)


if __name__ == "__main__":
  cli.run(main)
