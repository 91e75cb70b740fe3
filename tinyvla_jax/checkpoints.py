"""Checkpoints: one Orbax CheckpointManager per workdir, wrapped so a run saves and resumes in one call,
and every step it wrote is verified before it is read back.

Layout on disk (one folder per saved step, written atomically by Orbax):

  <workdir>/checkpoints/<step>/
    train_state/   the whole train state (params, optax state, typed PRNG key, counters), OCDBT arrays
    params/        inference parameters (e.g. the EMA), usable without the optimizer
    assets/        JSON: normalization statistics and anything else the policy needs to act
    config/        JSON: the run's config, readable without touching arrays
    metrics/       JSON: the step's metrics, only when it had a finite val_loss
    manifest.json  size and SHA-256 of every file above, written after Orbax finished the step
  <workdir>/checkpoints/<step>.orbax-checkpoint-tmp*/   an unfinished save; ignored, removed on open
  <workdir>/checkpoints/damaged/<step>[.N]/            steps whose files no longer match their manifest

Integrity. Orbax's atomic rename protects against a writer that dies mid-save, not against bytes that
change later (a bad disk, a partial copy, a stray write): those load without an error. So each finished
step gets a manifest, and a restore first checks the files against it. A mismatch is damage: the step is
moved to `damaged/` (never deleted) with a one-line warning naming the file, and the previous verified
step is read instead. Any other restore failure (a tree that no longer matches the code, out of memory,
an I/O error) is an error that says so and touches nothing. A step without a manifest (its writer was
killed between Orbax's commit and the manifest) is read unverified, and sealed once it read back.

Retention: keep the newest `max_to_keep` steps AND (with `keep_best`) the one step with the lowest
finite `metrics["val_loss"]`. Steps without a val_loss count only toward the newest. (Orbax's own
`max_to_keep` + `best_fn` would keep the best `max_to_keep` and delete the newest, so we give it an
explicit preservation policy instead.)

A failed save (full disk, read-only directory) raises `CheckpointError` at the next `save`, `wait` or
`check_for_errors`; the steps already written stay as they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pathlib
import shutil
import time
import warnings
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from tinyvla_jax.errors import CheckpointError, UserError

ITEMS = ("train_state", "params", "assets", "config")
MANIFEST = "manifest.json"
DAMAGED = "damaged"
_IO_WORDS = ("No space left", "Read-only file system", "Permission denied", "Disk quota", "Input/output error",
             "RESOURCE_EXHAUSTED", "File too large")


class _QuietOrbaxNotices(logging.Filter):
  """Orbax logs through absl. Two kinds of its records are dropped: the warning on every save without
  metrics (our mid-epoch and final saves have none on purpose: they count toward the newest steps only),
  and the ERROR tracebacks its background threads log when a save fails for lack of space or permission
  (one per thread, ~300 lines): `Checkpointer` reports that failure itself, as one CheckpointError line.
  TINYVLA_TRACEBACK=1 keeps the tracebacks."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if "did not provide metrics" in message:
      return False
    if record.levelno >= logging.ERROR and "orbax" in record.pathname and not os.environ.get("TINYVLA_TRACEBACK"):
      error = record.exc_info[1] if record.exc_info else None
      if (error is not None and _is_io_failure(error)) or any(w in message for w in _IO_WORDS):
        return False
      if "cannot schedule new futures after" in message:  # a failed save's thread, at interpreter exit
        return False
    return True


class Restored(NamedTuple):
  step: int
  train_state: Any  # None when not asked for
  params: Any  # None when not asked for
  assets: dict
  config: dict


def _val_loss(metrics) -> float:
  return metrics["val_loss"]


def _brief(error: Exception) -> str:
  # Tensorstore appends its whole JSON spec to every message; the path and reason come before it. Long
  # messages keep their start (what failed) and their end (the OS's reason, e.g. "No space left on device").
  text = " ".join(str(error).split(" [tensorstore_spec=")[0].split()) if str(error) else ""
  if len(text) > 400:
    text = text[:200] + " ... " + text[-200:]
  return f"{type(error).__name__}: {text}"


def _checkpoint_dir(workdir) -> pathlib.Path:
  # Orbax wants absolute paths; resolving also makes the warnings below name a findable folder.
  return pathlib.Path(workdir).resolve() / "checkpoints"


# --- manifests ----------------------------------------------------------------------------------

def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _data_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(step_dir: pathlib.Path) -> None:
  """Records size and SHA-256 of every file of a finished step (atomically: tmp file, fsync, rename)."""
  files = {str(p.relative_to(step_dir)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
           for p in _data_files(step_dir)}
  tmp = step_dir / (MANIFEST + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"format": 1, "files": files}, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, step_dir / MANIFEST)


def check_manifest(step_dir: pathlib.Path) -> str | None:
  """None when every file the manifest lists is there with its size and hash; else the first problem.
  Raises FileNotFoundError when the step has no manifest."""
  with open(step_dir / MANIFEST) as f:
    try:
      files = json.load(f)["files"]
    except (ValueError, KeyError):
      return f"{MANIFEST} itself is unreadable"
  for name, want in files.items():
    path = step_dir / name
    if not path.is_file():
      return f"{name} is missing"
    if path.stat().st_size != want["bytes"]:
      return f"{name} has {path.stat().st_size} bytes, {want['bytes']} were written"
    if _sha256(path) != want["sha256"]:
      return f"{name} differs from its checksum"
  return None


def _is_io_failure(error: BaseException) -> bool:
  """Whether a save failed because of the disk (full, read-only, no permission), not because of a bug."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) or any(w in str(error) for w in _IO_WORDS):
      return True
    error = error.__cause__ or error.__context__
  return False


logging.getLogger("absl").addFilter(_QuietOrbaxNotices())


class Checkpointer:
  """Saves and restores a run's train state, inference params, assets and config under `<workdir>/checkpoints`."""

  def __init__(self, directory, *, max_to_keep: int = 3, keep_best: bool = True, async_save: bool = True):
    if max_to_keep < 1:
      raise UserError(f"max_to_keep={max_to_keep} must be at least 1 (the newest step is what a resume reads)")
    self.directory = _checkpoint_dir(directory)
    keep = [policies.LatestN(n=max_to_keep)]
    if keep_best:
      # reverse=True sorts descending, so the last (kept) one is the lowest val_loss.
      keep.append(policies.BestN(get_metric_fn=_val_loss, reverse=True, n=1,
                                 keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        # best_fn/best_mode are still needed beside the policy: they make Orbax write the metrics
        # and make best_step() rank by them (without them it returns the newest step).
        best_fn=_val_loss, best_mode="min",
        preservation_policy=policies.AnyPreservationPolicy(keep),
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
    self._manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)
    self._unsealed: list[int] = []  # saved by this process, manifest not yet written
    self._verified: set[int] = set()  # checked against their manifest by this process

  @staticmethod
  def exists(directory) -> bool:
    """Whether `<directory>/checkpoints` holds at least one finished step (creates nothing)."""
    path = _checkpoint_dir(directory)
    return path.is_dir() and ocp.utils.any_checkpoint_step(path) is not None

  def save(self, step: int, *, train_state, params, assets: dict, config: dict, metrics: dict | None = None,
           force: bool = False) -> bool:
    """Starts saving `step` (in the background when async); returns whether a save was started.
    Raises CheckpointError when this or the previous save failed for lack of space or permission."""
    self._finish(step)  # the previous save must have landed (and be sealed) before a new one starts
    metrics = dict(metrics or {})
    val_loss = metrics.get("val_loss")
    # Only a finite val_loss may rank a step: a NaN would sort anywhere and could pin a broken step as best.
    ranked = val_loss is not None and math.isfinite(float(val_loss))
    args = ocp.args.Composite(
        train_state=ocp.args.StandardSave(train_state), params=ocp.args.StandardSave(params),
        assets=ocp.args.JsonSave(assets), config=ocp.args.JsonSave(config))
    stored = {k: float(v) for k, v in metrics.items()} if ranked else None
    try:
      started = self._manager.save(step, args=args, metrics=stored, force=force)
    except Exception as error:  # noqa: BLE001 - classified: disk problems become one line, bugs re-raise
      raise self._save_failure(step, error) from error
    if started:
      self._unsealed.append(step)
    return started

  def wait(self) -> None:
    """Blocks until the last save landed and is sealed; raises CheckpointError if it failed."""
    self._finish(None)

  def check_for_errors(self) -> None:
    """Raises CheckpointError now if a background save has already failed, and seals a save that has
    landed (cheap: never waits; a run calls it every few steps)."""
    try:
      self._manager.check_for_errors()
    except Exception as error:  # noqa: BLE001
      raise self._save_failure(self._unsealed[-1] if self._unsealed else None, error) from error
    if self._unsealed and not self._manager.is_saving_in_progress():
      self._finish(None)

  def _finish(self, next_step: int | None) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as error:  # noqa: BLE001
      raise self._save_failure(self._unsealed[-1] if self._unsealed else next_step, error) from error
    for step in self._unsealed:
      step_dir = self.directory / str(step)
      if step_dir.is_dir():  # retention may already have removed it
        if jax.process_index() == 0:  # one writer per file in a multi-host run (Orbax's primary host)
          write_manifest(step_dir)
        self._verified.add(step)
    self._unsealed = []

  def _save_failure(self, step: int | None, error: Exception) -> Exception:
    if not _is_io_failure(error):
      return error  # a bug: the caller re-raises it with its traceback
    intact = [s for s in self._finished_steps() if s != step]
    previous = f"step {intact[-1]} is intact" if intact else "no earlier step exists"
    return CheckpointError(f"saving checkpoint step {step} to {self.directory} failed ({_brief(error)}); "
                           f"{previous}: free space or fix the directory's permissions, then re-run the same "
                           "command to resume")

  def _finished_steps(self) -> list[int]:
    return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir()) \
        if self.directory.is_dir() else []

  def close(self) -> None:
    try:
      self._finish(None)
    finally:
      self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, exc_type, *exc) -> None:
    if exc_type is None:
      self.close()
    else:  # already failing: do not let a second error from the last save hide the first
      try:
        self.close()
      except Exception:  # noqa: BLE001
        pass

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the lowest val_loss; None when no kept step recorded one."""
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, *, train_state_target, params_target=None, step: int | None = None) -> Restored:
    """Restores into the targets' structure, dtypes and shardings (abstract `jax.eval_shape` trees work).

    A None target skips that item. With `step=None` this reads the newest intact step, moving damaged
    ones aside with a warning; an explicit `step` must be intact.
    """
    if train_state_target is None and params_target is None:
      raise UserError("pass train_state_target or params_target (or use restore_json for assets/config only)")
    def items(keys: bool) -> dict:
      out = {"assets": ocp.args.JsonRestore(), "config": ocp.args.JsonRestore()}
      if train_state_target is not None:
        out["train_state"] = ocp.args.StandardRestore(_placed(train_state_target, keys))
      if params_target is not None:
        out["params"] = ocp.args.StandardRestore(_placed(params_target, keys))
      return out

    try:
      step, out = self._restore_newest_intact(step, items(keys=True))
    except CheckpointError as error:
      # Orbax before ~0.12 restores a typed PRNG key (stored as its uint32[2] data) only when its target
      # names no sharding ("Requested shape: () is not compatible with the stored shape: (2,)"); newer ones
      # need the sharding to read a key another topology wrote. Try the second way, then the first.
      if "not compatible with the stored shape" not in str(error):
        raise
      step, out = self._restore_newest_intact(step, items(keys=False))
    return Restored(step=step, train_state=out.get("train_state"), params=out.get("params"),
                    assets=out["assets"], config=out["config"])

  def restore_json(self, step: int | None = None) -> tuple[dict, dict]:
    """(assets, config) of `step` (default: the newest intact), without reading any array."""
    _, out = self._restore_newest_intact(step, {"assets": ocp.args.JsonRestore(),
                                                "config": ocp.args.JsonRestore()})
    return out["assets"], out["config"]

  def _restore_newest_intact(self, step: int | None, items: dict) -> tuple[int, dict]:
    self.wait()  # a save still in flight would otherwise look like a missing step
    if step is not None and step not in self.all_steps():
      raise CheckpointError(f"no checkpoint step {step} in {self.directory} (it has {self.all_steps() or 'none'})")
    for candidate in [step] if step is not None else reversed(self.all_steps()):
      sealed = self._verify(candidate, fall_back=step is None)
      if sealed is None:
        continue  # damaged and moved aside
      try:
        out = dict(self._manager.restore(candidate, args=ocp.args.Composite(**items)).items())
      except Exception as error:  # noqa: BLE001 - not damage (checksums match): say so and keep every file
        what = ("its files match their checksums, so it is not damaged" if sealed else
                "it has no checksum manifest (its writer was killed before sealing it)")
        raise CheckpointError(
            f"could not restore checkpoint step {candidate} from {self.directory} ({_brief(error)}); {what} and "
            "nothing was deleted: if the code or config changed since it was written, pass --overwrite or "
            "another --workdir") from error
      if not sealed and jax.process_index() == 0:  # it read back completely: seal it so later damage is caught
        try:
          write_manifest(self.directory / str(candidate))
          self._verified.add(candidate)
        except OSError:  # a reader without write access (evaluate on a read-only copy): leave it
          pass
      return candidate, out
    raise CheckpointError(f"no intact checkpoint in {self.directory} (damaged steps are in "
                          f"{self.directory / DAMAGED}): pass --overwrite to start over, or another --workdir")

  def _verify(self, step: int, *, fall_back: bool) -> bool | None:
    """True: verified against its manifest; False: has none (read unverified); None: damaged, moved aside."""
    if step in self._verified:
      return True
    step_dir = self.directory / str(step)
    try:
      problem = check_manifest(step_dir)
    except FileNotFoundError:
      warnings.warn(f"checkpoint step {step} in {self.directory} has no {MANIFEST} (its writer was killed "
                    "before sealing it, or wrote it with an older version): reading it unverified", stacklevel=4)
      return False
    if problem is None:
      self._verified.add(step)
      return True
    if not fall_back:
      raise CheckpointError(f"checkpoint step {step} in {self.directory} is damaged: {problem}")
    moved = self._move_aside(step_dir)
    warnings.warn(f"checkpoint step {step} is damaged ({problem}); moved it to {moved} and falling back to "
                  "the previous step", stacklevel=4)
    return None

  def _move_aside(self, step_dir: pathlib.Path) -> pathlib.Path:
    """Moves a damaged step under damaged/ (process 0 of a multi-host run moves it; every process found the
    same damage, since they read the same files, and waits for the move)."""
    target = self.directory / DAMAGED / step_dir.name
    n = 1
    while target.exists():
      target = self.directory / DAMAGED / f"{step_dir.name}.{n}"
      n += 1
    if jax.process_index() == 0:
      target.parent.mkdir(exist_ok=True)
      shutil.move(str(step_dir), str(target))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"tinyvla_damaged_{step_dir.name}")
    self._manager.reload()  # forget the step: the resumed run will write it again
    return target


def _placed(target, keys: bool = True):
  """A restore target whose every leaf names where it goes. Orbax otherwise puts each array back on the
  devices that saved it, which fails for a checkpoint written on 8 GPUs and read on a laptop. A leaf without
  a sharding (a plain `jax.eval_shape` tree) goes to the first device, or, with several processes,
  replicated over all of them. `keys=False`: typed PRNG keys without a sharding (see `restore`)."""
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

  if jax.process_count() == 1:
    default = SingleDeviceSharding(jax.devices()[0])
  else:
    default = NamedSharding(jax.make_mesh((jax.device_count(),), ("all",)), PartitionSpec())

  def leaf(x):
    if jnp.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key) and not keys:
      return jax.ShapeDtypeStruct(x.shape, x.dtype)  # see `restore`: an older Orbax's own key path
    if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None:
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=default)
    if x is not None and not isinstance(x, (jax.ShapeDtypeStruct, jax.Array)) and hasattr(x, "shape"):
      return jax.ShapeDtypeStruct(x.shape, jnp.asarray(x).dtype, sharding=default)  # a NumPy array
    return x

  return jax.tree.map(leaf, target)


class SaveInterval:
  """`train.checkpoint_every_steps` / `train.checkpoint_every_minutes` (0 = off): when a mid-epoch save is due."""

  def __init__(self, every_steps: int, every_minutes: float, seen: int):
    self.every_steps, self.every_seconds = int(every_steps), 60.0 * float(every_minutes)
    self.saved(seen)

  def saved(self, seen: int) -> None:
    self._seen, self._time = seen, time.monotonic()

  def due(self, seen: int) -> bool:
    return bool((self.every_steps and seen - self._seen >= self.every_steps) or
                (self.every_seconds and time.monotonic() - self._time >= self.every_seconds))
