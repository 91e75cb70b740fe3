"""The user-error classes: what the entry points (train, evaluate, collect, summary, export) print as one
line and a non-zero exit. Anything else is a bug in the project and keeps its traceback.

Each subclass also derives from the built-in exception a caller would naturally catch (ValueError for a bad
value, FileNotFoundError for a missing file, ImportError for a missing extra), so library users can keep
catching those.
"""

from __future__ import annotations


class UserError(ValueError):
  """Bad input a user can fix: the message says what (config key, file, shape) and how."""

  exit_code = 1


class MissingFileError(UserError, FileNotFoundError):
  """A file or directory the user named (or the run needs) is absent."""


class MissingExtraError(UserError, ImportError):
  """An optional dependency is not installed: the message names the pip extra or system package."""


class DataError(UserError):
  """A dataset on disk is unreadable or damaged: the message names the file."""


class CheckpointError(UserError):
  """A checkpoint cannot be written or read back: the message names the step and what to do."""


class WorkdirBusyError(UserError):
  """Another live process holds the workdir's lock."""


class Interrupted(UserError):
  """SIGINT/SIGTERM ended the process where nothing could be saved (start-up, or a second signal)."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum  # the shell's convention for "killed by signal N"
