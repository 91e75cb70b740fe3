"""Are two training runs the same, bit for bit? Compares their metrics.jsonl row by row (wall-time fields aside).

  python scripts/compare_runs.py WORKDIR_A WORKDIR_B

How a refactor is checked to change no numerics: train the same config with the code before and after
(e.g. `--config.train.epochs=12` in a worktree of the old commit), then compare the workdirs. Every step's
loss, gradient norm, learning rate and update norm and every validation's loss and condition sensitivities
must be equal. Exits 0 when they are, 1 (naming the first differing row and keys) when not.
"""

from __future__ import annotations

import json
import os
import sys

TIMING = ("seconds", "ex_per_s", "wall_s")  # wall-clock fields: differ between any two runs


def rows(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise SystemExit(f"error: {path} not found: pass a training workdir")
  with open(path) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f if line.strip()]


def differences(a: list[dict], b: list[dict]) -> list[str]:
  out = []
  for i, (x, y) in enumerate(zip(a, b)):
    if x != y:
      keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
      out.append(f"row {i} (step {x.get('step')}, {x.get('split')}): " +
                 ", ".join(f"{k} {x.get(k)!r} vs {y.get(k)!r}" for k in keys[:4]))
  if len(a) != len(b):
    out.append(f"{len(a)} rows vs {len(b)} rows")
  return out


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    raise SystemExit(__doc__.strip().splitlines()[2].strip())
  a, b = rows(argv[1]), rows(argv[2])
  diffs = differences(a, b)
  if diffs:
    print(f"DIFFERENT: {len(diffs)} difference(s); first: {diffs[0]}")
    return 1
  print(f"IDENTICAL: {len(a)} rows")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
