"""scripts/compare_runs.py: equal runs are IDENTICAL, a changed value or a missing row is named."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"


def write(path: pathlib.Path, rows):
  path.mkdir()
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def compare(a, b):
  return subprocess.run([sys.executable, str(SCRIPT), str(a), str(b)], capture_output=True, text=True)


def test_compare_runs(tmp_path):
  rows = [dict(step=1, split="train", loss=0.5, grad_norm=1.0), dict(step=1, split="epoch", val_loss=0.4, seconds=3.0)]
  write(tmp_path / "a", rows)
  write(tmp_path / "b", [rows[0], dict(rows[1], seconds=9.0)])  # wall time differs: still the same run
  out = compare(tmp_path / "a", tmp_path / "b")
  assert out.returncode == 0 and out.stdout.startswith("IDENTICAL: 2 rows")
  write(tmp_path / "c", [dict(rows[0], loss=0.5000001), rows[1]])
  out = compare(tmp_path / "a", tmp_path / "c")
  assert out.returncode == 1 and "row 0 (step 1, train): loss 0.5 vs 0.5000001" in out.stdout
  write(tmp_path / "d", rows[:1])
  assert "2 rows vs 1 rows" in compare(tmp_path / "a", tmp_path / "d").stdout
  missing = compare(tmp_path / "a", tmp_path / "nope")
  assert missing.returncode != 0 and "metrics.jsonl not found" in missing.stderr
