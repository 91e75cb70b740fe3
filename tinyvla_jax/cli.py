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


def config_value(holder):
  """The value of a config_flags flag. ml_collections reads the file on first access, after parsing, so
  a missing or unreadable --config file surfaces here: one line naming it."""
  from tinyvla_jax.errors import MissingFileError

  try:
    value = holder.value
    if value is not None:
      value.get("preset")  # a failed load returns a stand-in that raises on first use
    return value
  except OSError as error:
    reason = [line.strip() for line in str(error).splitlines() if line.strip()][-1]
    raise MissingFileError(f"cannot load --config: {reason}") from None


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
  # Cache every program (the default skips those compiled in under 1 s): a start-up also compiles dozens
  # of small ones, and reading one back takes milliseconds.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  return where


def quiet_logs() -> None:
  """Warnings and our own lines only, unless --verbosity/-v was given: libraries such as Orbax log every
  save at INFO through absl (hundreds of lines in a run), which would bury the run's progress."""
  import logging

  from absl import logging as absl_logging

  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  # A warning is one line ("warning: ..."), not Python's two (file:line + the source line that warned).
  import warnings
  warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
  # Our modules log under "tinyvla_jax"; their INFO lines (resumed from, saved, success rates) stay.
  ours = logging.getLogger("tinyvla_jax")
  if ours.level == logging.NOTSET or ours.level > logging.INFO:
    ours.setLevel(logging.INFO)


def _drop_late_io_callbacks() -> None:
  """After a failed checkpoint write, tensorstore still completes the other writes of that save and calls
  back into Orbax's already-closed asyncio loop: each callback prints a "RuntimeError: Event loop is
  closed" traceback (through sys.unraisablehook) and asyncio logs "exception was never retrieved" for each
  abandoned write: hundreds of lines after the one line that reports the failure. Both are dropped;
  TINYVLA_TRACEBACK=1 keeps them."""
  import logging
  import os

  if os.environ.get("TINYVLA_TRACEBACK"):
    return
  previous = sys.unraisablehook

  def unraisablehook(unraisable):
    tb, frames = unraisable.exc_traceback, []
    while tb is not None:
      frames.append(tb.tb_frame.f_code.co_name)
      tb = tb.tb_next
    if (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
        and "call_soon_threadsafe" in frames):
      return
    previous(unraisable)

  sys.unraisablehook = unraisablehook

  class _NeverRetrieved(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
      return "exception was never retrieved" not in record.getMessage()

  logging.getLogger("asyncio").addFilter(_NeverRetrieved())


def interruption_in(error: BaseException):
  """The `errors.Interrupted` behind `error`, if any. A signal's exception is raised wherever the process
  is, e.g. inside JAX's backend initialization, which re-raises it as a RuntimeError: the signal, not
  the wrapper, is what happened. Only Interrupted is unwrapped: another user error in a chain may be the
  context of a real bug."""
  from tinyvla_jax.errors import Interrupted

  seen = set()
  while error is not None and id(error) not in seen:
    if isinstance(error, Interrupted):
      return error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return None


def run(main) -> None:
  """absl's app.run with one-line errors: bad flags and every `errors.UserError` (bad input, a missing
  file or extra, a damaged dataset or checkpoint, a busy workdir, an interrupted start-up) end the
  process with `error: <message>` and a non-zero exit. Any other exception is a bug and keeps its
  traceback. TINYVLA_TRACEBACK=1 shows the traceback of user errors too. First, the process restarts
  itself once with huge-page malloc where that helps (huge_pages.py; TINYVLA_HUGE_PAGES=0 turns it off).
  """
  import os

  from absl import app

  from tinyvla_jax import huge_pages

  huge_pages.restart_with_huge_pages()

  from tinyvla_jax.errors import CheckpointError, UserError

  def guarded(argv):
    try:
      try:
        quiet_logs()
        _drop_late_io_callbacks()
        enable_compilation_cache(_COMPILATION_CACHE.value)
        return main(argv)
      except UserError:
        raise
      except Exception as error:  # noqa: BLE001 - re-raised unless a signal is its cause
        interrupted = interruption_in(error)
        if interrupted is None:
          raise
        raise interrupted from None
    except UserError as error:
      if os.environ.get("TINYVLA_TRACEBACK"):
        raise
      print(f"error: {error}", file=sys.stderr, flush=True)
      if isinstance(error, CheckpointError):
        # A failed save leaves Orbax/tensorstore threads that print tracebacks while the interpreter shuts
        # down; our files are closed by now (the loop's finally blocks), so skip the shutdown.
        sys.stdout.flush()
        os._exit(error.exit_code)
      sys.exit(error.exit_code)

  app.run(guarded, flags_parser=parse_flags)
