"""Where a run's numbers go: a JSONL file and TensorBoard event files in the workdir.

Exactly once across kills: every checkpoint records `offset()`, the file's length when it was taken, and
a resumed run opens the writer with `truncate_to=` that length, so rows written after the checkpoint
(steps the resumed run does again) are cut before they are written a second time; TensorBoard's
`purge_step` does the same for the event files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import jax
import numpy as np

from tinyvla_jax.errors import UserError


def _plain(v: Any):
  v = np.asarray(v)
  v = v.item() if v.ndim == 0 else v.tolist()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/inf; keep them readable ("nan", "inf")
  return v


class MetricsWriter:
  """Appends one JSON object per record to `<workdir>/metrics.jsonl` and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, *, tensorboard: bool = True, truncate_to: int | None = 0,
               purge_step: int | None = None, enabled: bool = True):
    """`truncate_to`: cut metrics.jsonl to this many bytes first (0: a fresh run; None: keep all rows).
    `enabled=False` (every process but 0 of a multi-host run): writes nothing, touches no file."""
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if truncate_to is not None and os.path.exists(self.path):
      size = os.path.getsize(self.path)
      if size < truncate_to:
        logging.getLogger(__name__).warning(
            "%s has %d bytes, fewer than the %d its checkpoint recorded: rows before the resumed step are "
            "missing", self.path, size, truncate_to)
      elif size > truncate_to:
        with open(self.path, "r+b") as f:
          f.truncate(truncate_to)
    self._file = open(self.path, "a", buffering=1)
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: only the writer needs it
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge_step)

  def offset(self) -> int:
    """Bytes written so far (flushed): what a checkpoint records to make a resume exactly-once."""
    if self._file is None:
      return 0
    self._file.flush()
    return self._file.tell()

  def write(self, step: int, metrics: dict[str, Any], *, prefix: str = "train") -> None:
    if self._file is None:
      return
    record = {"step": int(step), "split": prefix, **{k: _plain(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in record.items():
        if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool):
          self._tb.add_scalar(f"{prefix}/{k}", v, int(step))

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


class NonFiniteTrainingError(UserError):
  """Too many consecutive batches were skipped: the run diverged or its inputs are broken."""


class MetricsFlusher:
  """Moves pending step metrics to the host every `train.log_every` steps (one sync, not one per step):
  writes them, advances the progress bar, and fails fast on a run of non-finite batches."""

  def __init__(self, writer: MetricsWriter, bar, *, batch_size: int, max_consecutive_skips: int):
    self.writer, self.bar = writer, bar
    self.batch_size, self.max_consecutive_skips = batch_size, max_consecutive_skips
    self.pending, self.epoch_losses = [], []
    self._clock = time.perf_counter()

  def flush(self, seen: int, epoch: int) -> None:
    if not self.pending:
      return
    records = jax.device_get(self.pending)
    self.pending = []
    first = seen - len(records) + 1
    for i, m in enumerate(records):
      self.writer.write(first + i, {k: v for k, v in m.items() if k != "consecutive_skipped"})
      if m["finite"]:
        self.epoch_losses.append(float(m["loss"]))
    last = records[-1]
    bad = int(last["consecutive_skipped"])
    if bad > self.max_consecutive_skips:
      loss, grad_norm = float(last["loss"]), float(last["grad_norm"])
      if np.isfinite(loss) and np.isfinite(grad_norm):
        cause = ("the loss and gradient were finite but the update or the new parameters were not: check "
                 "optim.learning_rate, optim.eps and optim.weight_decay")
      else:
        cause = (f"last loss {loss}, grad norm {grad_norm}: check the data (data.path, its normalization "
                 "statistics) and optim.learning_rate")
      raise NonFiniteTrainingError(
          f"{bad} consecutive batches were skipped as non-finite (batches {seen - bad + 1}-{seen}, epoch "
          f"{epoch + 1}); {cause}; or raise train.max_consecutive_skips")
    now = time.perf_counter()
    rate = self.batch_size * len(records) / max(now - self._clock, 1e-9)
    self._clock = now
    self.bar.update(len(records))
    self.bar.set_postfix(epoch=epoch + 1, loss=f"{float(last['loss']):.4f}", skipped=int(last["skipped"]),
                         ex_per_s=f"{rate:.1f}")


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
