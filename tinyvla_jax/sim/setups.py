"""Which MetaWorld setup (object and goal placement) and which paraphrase an attempt uses.

Pure functions of (seed, task, attempt), shared by the collection (sim/collect.py) and the evaluation
(evaluation/rollout.py, which must avoid the setups the data used): they live here, below both.
"""

from __future__ import annotations

import zlib

import numpy as np


def setup_seed_for(seed: int, task: str, attempt: int) -> int:
  """The setup seed of attempt `attempt` of `task` in a run seeded `seed` (a 31-bit integer)."""
  state = np.random.SeedSequence([int(seed), zlib.crc32(task.encode()), int(attempt)]).generate_state(1)
  return int(state[0] >> 1)


def instruction_index_for(seed: int, task: str, attempt: int, count: int) -> int:
  return int(np.random.default_rng([int(seed), zlib.crc32(task.encode()), int(attempt), 1]).integers(count))
