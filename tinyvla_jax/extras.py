"""Optional dependencies (the package's pip extras), imported where first needed with a one-line error.

The lowest layer beside errors.py: data/ (the tokenizers library) and pretrained/ (safetensors) both use it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tinyvla_jax.errors import MissingExtraError


def require(module: str, *, extra: str = "pretrained",
            purpose: str = "pretrained weights and tokenizers") -> ModuleType:
  """Imports `module`, or fails with one line saying which extra installs it."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise MissingExtraError(f"{purpose} need the {module.split('.')[0]!r} package: "
                            f"pip install 'tinyvla_jax[{extra}]'") from None
