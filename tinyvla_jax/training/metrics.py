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
from typing import Any

import numpy as np


def _plain(v: Any):
  v = np.asarray(v)
  v = v.item() if v.ndim == 0 else v.tolist()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/inf; keep them readable ("nan", "inf")
  return v


class MetricsWriter:
  """Appends one JSON object per record to `<workdir>/metrics.jsonl` and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, *, tensorboard: bool = True, truncate_to: int | None = 0,
               purge_step: int | None = None):
    """`truncate_to`: cut metrics.jsonl to this many bytes first (0: a fresh run; None: keep all rows)."""
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
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
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: only the writer needs it
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge_step)

  def offset(self) -> int:
    """Bytes written so far (flushed): what a checkpoint records to make a resume exactly-once."""
    self._file.flush()
    return self._file.tell()

  def write(self, step: int, metrics: dict[str, Any], *, prefix: str = "train") -> None:
    record = {"step": int(step), "split": prefix, **{k: _plain(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in record.items():
        if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool):
          self._tb.add_scalar(f"{prefix}/{k}", v, int(step))

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
