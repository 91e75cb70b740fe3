"""Checks of config values that fail with one line naming the key: `--config.KEY=VALUE must be ...`.

The typed config sections (data/config.py, diffusion/config.py, run_config.py) call these in their
`validate()`, so a NaN learning rate or a batch size of 0 stops a run before any data is loaded or
anything compiled, not as a NaN update minutes later.
"""

from __future__ import annotations

import math

from tinyvla_jax.errors import UserError


def require(key: str, value, ok: bool, want: str) -> None:
  if not ok:
    raise UserError(f"--config.{key}={value!r} must be {want}")


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def in_range(key: str, value, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
             optional: bool = False) -> None:
  """A finite number in [lo, hi] (open ends as asked); None passes when `optional`."""
  if optional and value is None:
    return
  ok = _number(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
  require(key, value, ok, f"a finite number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
          + (" or None" if optional else ""))


def int_at_least(key: str, value, lo: int, *, optional: bool = False) -> None:
  if optional and value is None:
    return
  require(key, value, isinstance(value, int) and not isinstance(value, bool) and value >= lo,
          f"an integer >= {lo}" + (" or None" if optional else ""))


def known_keys(values, valid, prefix: str) -> None:
  """Every key of a config section's mapping names one of its fields (`valid`)."""
  unknown = sorted(set(values) - set(valid))
  if unknown:
    raise UserError(f"unknown config key(s) {', '.join(prefix + '.' + k for k in unknown)}; "
                    f"valid keys: {', '.join(sorted(valid))}")


def one_of(key: str, value, choices) -> None:
  require(key, value, value in choices, f"one of {tuple(choices)}")
