"""Flag parsing shared by the entry points: a bad --config or override is one line, not a traceback."""

from __future__ import annotations

import sys

from absl import flags

_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", "auto",
    "Where XLA keeps compiled programs between runs, so a second run of the same command skips most of its "
    "compile time: 'auto' ($XDG_CACHE_HOME or ~/.cache, then tinyvla_jax/xla), a directory, or 'off'.")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with ml_collections' override errors (unknown key, bad preset) made one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    lines = [line for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):  # a config file raised: keep its last line
      lines = [lines[0].rstrip(":") + ":", lines[-1]]
    sys.exit("error: " + " ".join(lines))
  except (AttributeError, KeyError, ValueError, TypeError) as error:
    message = " ".join(str(error).replace("\\n", " ").replace("\\'", "'").split())
    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
      message = message[1:-1]  # AttributeError(KeyError) arrives quoted
    sys.exit(f"error: bad --config: {message}")


def enable_compilation_cache(where: str) -> str | None:
  """Turns on JAX's persistent compilation cache; returns its directory (None when 'off')."""
  import os

  if where == "off":
    return None
  if where == "auto":
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    where = os.path.join(root, "tinyvla_jax", "xla")
  import jax

  jax.config.update("jax_compilation_cache_dir", where)
  # Cache every program that took a noticeable time to compile (the default skips those under 1 s).
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  return where


def run(main) -> None:
  """absl's app.run with one-line errors: bad flags, ValueErrors (our input checks raise those), missing
  files and missing optional packages (each of ours says what to install or pass).

  Set TINYVLA_TRACEBACK=1 to see the full traceback of a ValueError.
  """
  import os

  from absl import app

  def guarded(argv):
    try:
      enable_compilation_cache(_COMPILATION_CACHE.value)
      return main(argv)
    except (ValueError, FileNotFoundError, ImportError) as error:  # bad input, a missing file or extra
      if os.environ.get("TINYVLA_TRACEBACK"):
        raise
      sys.exit(f"error: {error}  (TINYVLA_TRACEBACK=1 shows the traceback)")

  app.run(guarded, flags_parser=parse_flags)
