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


def spread_order(vectors: np.ndarray) -> list[int]:
  """A greedy farthest-point (maximin) order of candidate setups [N, D]: first the candidate nearest their
  mean, then each next the candidate farthest from every one chosen so far. Every prefix of the order
  covers the placement space about evenly: N demos drawn independently at random leave gaps (the shipped
  window-open demos had 4 of 18 in the far half of the window's range), and a policy trained on a few
  dozen demos succeeds near a demo and fails in the gaps (evaluation/coverage.py measures this)."""
  vectors = np.asarray(vectors, np.float64)
  if vectors.ndim != 2 or not len(vectors):
    raise ValueError(f"candidate setups must be [N, D] with N >= 1, got {vectors.shape}")
  first = int(np.argmin(((vectors - vectors.mean(0)) ** 2).sum(1)))
  order = [first]
  nearest = ((vectors - vectors[first]) ** 2).sum(1)  # squared distance to the nearest chosen candidate
  nearest[first] = -1.0
  for _ in range(len(vectors) - 1):
    nxt = int(np.argmax(nearest))
    order.append(nxt)
    nearest = np.minimum(nearest, ((vectors - vectors[nxt]) ** 2).sum(1))  # chosen ones stay at -1
    nearest[nxt] = -1.0
  return order
