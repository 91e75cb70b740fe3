"""Closed-loop evaluation during training (`eval.every_epochs`), as an epoch hook of the training loop.

The training loop knows nothing of simulators: `python -m tinyvla_jax.train` passes
`PeriodicEvaluation.for_run` as `training.loop.train(..., epoch_hook=...)`, and the loop calls `due(epoch)`
and `run(params, epoch=, step=)` at each epoch end, before the save (so the rows are part of what the
checkpoint covers). The rollouts follow the protocol of `python -m tinyvla_jax.evaluate`
(evaluation/protocol.py), so epoch N's numbers equal `evaluate --step N` afterwards.
"""

from __future__ import annotations

import logging
import os

from tinyvla_jax.evaluation import protocol
from tinyvla_jax.evaluation.context import data_context
from tinyvla_jax.evaluation.policies import VLAPolicy
from tinyvla_jax.run_config import RunConfig
from tinyvla_jax.serving.inference import InferencePolicy
from tinyvla_jax.sim.metaworld import require_metaworld

log = logging.getLogger(__name__)


class PeriodicEvaluation:
  """MetaWorld rollouts of the current inference params every `eval.every_epochs` epochs."""

  def __init__(self, config: RunConfig, *, model, preprocess, data_info: dict, workdir: str, writer):
    ev = config.eval
    self.every = ev.every_epochs
    require_metaworld()  # fail at start, not after the first epoch, when MetaWorld is missing
    self.context = data_context(data_info)  # raises for non-MetaWorld data
    self.config, self.workdir, self.writer = config, workdir, writer
    self.inference = InferencePolicy.for_run(model=model, params=None, preprocess=preprocess,
                                             diffusion=config.diffusion, data_info=data_info, seed=ev.seed)
    self.policy = VLAPolicy(self.inference, seed=ev.seed)

  @classmethod
  def for_run(cls, config: RunConfig, **run) -> "PeriodicEvaluation | None":
    """The hook for a run (None when `eval.every_epochs` is 0); `run` is what the loop passes."""
    return cls(config, **run) if config.eval.every_epochs else None

  def due(self, epoch: int) -> bool:
    return epoch % self.every == 0

  def run(self, params, *, epoch: int, step: int) -> dict:
    ev = self.config.eval
    self.inference.params = params
    summary = protocol.run(self.policy, self.context, protocol=ev.protocol, tasks=ev.task_list,
                           out_dir=os.path.join(self.workdir, "eval", f"epoch{epoch}"), video=ev.video,
                           progress=False, label=f"epoch{epoch}")
    values = {f"success/{t}": r["success_rate"] for t, r in summary["tasks"].items()}
    values["success/mean"] = summary["mean_success_rate"]
    self.writer.write(step, values, prefix="eval")
    log.info("epoch %d closed-loop success %.2f", epoch, summary["mean_success_rate"])
    return summary
