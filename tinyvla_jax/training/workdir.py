"""A run's workdir: one run at a time (an exclusive OS lock, taken before anything is loaded or compiled),
and its preparation (--overwrite, a stored run's config against this one, config.json).

`fcntl.flock` on `<workdir>/.lock`: the kernel releases it when its holder exits in any way (also
`kill -9`), so a stale lock cannot block the next run, while a live one refuses a second run (a requeued
job, a second terminal) before it writes anything. The file records who holds it (pid, host, start
time) for the message. Readers (evaluate, export) take no lock. Note: flock is per host; on a network
file system shared by several machines it may not exclude a run on another host.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket

from tinyvla_jax.checkpoints import Checkpointer
from tinyvla_jax.data.store import write_json_atomic
from tinyvla_jax.errors import UserError, WorkdirBusyError
from tinyvla_jax.run_config import RunConfig
from tinyvla_jax.training import processes

LOCK_FILE = ".lock"

# Keys that may change between a run and its resumption: they set how long/how loud it runs.
# The mesh too: a checkpoint restores onto any mesh (training/sharding.py), so a run may continue on
# other devices.
RESUMABLE_KEYS = ("train.max_steps", "train.log_every", "train.checkpoint_every_steps",
                  "train.checkpoint_every_minutes", "mesh.data", "mesh.fsdp", "mesh.fsdp_min_mib")


class WorkdirLock:
  """`with WorkdirLock(workdir):` creates the workdir, proves it writable and holds its lock."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  def __enter__(self) -> WorkdirLock:
    try:
      os.makedirs(self.workdir, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
      raise UserError(f"cannot write to --workdir {self.workdir} ({error.strerror}): pass a directory you can "
                      "write to") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      holder = _read_holder(fd)
      os.close(fd)
      if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise WorkdirBusyError(f"--workdir {self.workdir} is in use by another run ({holder}): wait for it to "
                               "finish, stop it, or pass another --workdir") from None
      raise UserError(f"cannot lock --workdir {self.workdir} ({error.strerror})") from None
    self._fd = fd
    record = dict(pid=os.getpid(), host=socket.gethostname(),
                  started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    try:  # a workdir that cannot take these few bytes cannot take a checkpoint either
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
      os.fsync(fd)
    except OSError as error:
      self.__exit__()
      raise UserError(f"cannot write to --workdir {self.workdir} ({error.strerror}): free space or pass "
                      "another directory") from None
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def _read_holder(fd: int) -> str:
  try:
    record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return f"pid {record['pid']} on {record['host']}, started {record['started']}"
  except (OSError, ValueError, KeyError):
    return "holder unknown"


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
  return out


def config_differences(stored: dict, current: dict) -> list[str]:
  """`key: stored -> current` for every config value that differs (RESUMABLE_KEYS may). The stored config
  is read as this version reads it first, so a key added to the code since it was written (with its
  default) is not a difference: a run started before an upgrade resumes after it."""
  try:
    stored = RunConfig.from_dict(stored).to_dict()
  except UserError:  # a key this version no longer knows: compare as written, the difference is real
    pass
  a, b = _flatten(stored), _flatten(current)
  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
          if k not in RESUMABLE_KEYS and a.get(k) != b.get(k)]


def prepare_workdir(workdir: str, config: dict, *, keep: int, overwrite: bool) -> Checkpointer:
  """The workdir's checkpointer (keeping `keep` steps), after `--overwrite` removed the last run's checkpoints
  and metrics, or after checking that a stored run has this `config` (a run config's to_dict()) but for
  RESUMABLE_KEYS; then <workdir>/config.json is this config."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  primary = processes.is_primary()  # only process 0 of a multi-host run deletes or writes here
  if overwrite and primary:
    for path in (ckpt_dir, os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "tensorboard")):
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.exists(path):
        os.remove(path)
  processes.barrier("tinyvla_workdir_prepared")  # the others read the workdir only once it is cleared
  checkpointer = Checkpointer(workdir, max_to_keep=keep)  # under <workdir>/checkpoints
  if checkpointer.latest_step() is not None:
    _, stored = checkpointer.restore_json()
    diffs = config_differences(stored, config)
    if diffs:
      checkpointer.close()
      raise UserError(f"{workdir} holds a run with another config ({'; '.join(diffs[:5])}"
                       f"{' ...' if len(diffs) > 5 else ''}): pass --overwrite to start over, or another --workdir")
  if primary:
    write_json_atomic(os.path.join(workdir, "config.json"), config)
  return checkpointer
