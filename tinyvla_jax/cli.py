"""Flag parsing shared by the entry points: a bad --config or override is one line, not a traceback."""

from __future__ import annotations

import sys

from absl import flags


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


def run(main) -> None:
  """absl's app.run with one-line errors: bad flags, ValueErrors (our input checks raise those), missing
  files and missing optional packages (each of ours says what to install or pass).

  Set TINYVLA_TRACEBACK=1 to see the full traceback of a ValueError.
  """
  import os

  from absl import app

  def guarded(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError, ImportError) as error:  # bad input, a missing file or extra
      if os.environ.get("TINYVLA_TRACEBACK"):
        raise
      sys.exit(f"error: {error}  (TINYVLA_TRACEBACK=1 shows the traceback)")

  app.run(guarded, flags_parser=parse_flags)
