"""Checkpoints: one Orbax CheckpointManager per workdir, wrapped so a run saves and resumes in one call.

Layout on disk (one folder per saved step, written atomically by Orbax):

  <workdir>/checkpoints/<step>/
    train_state/   the whole train state (params, optax state, typed PRNG key, counters), OCDBT arrays
    params/        inference parameters (e.g. the EMA), usable without the optimizer
    assets/        JSON: normalization statistics and anything else the policy needs to act
    config/        JSON: the run's config, readable without touching arrays
    metrics/       JSON: the step's metrics, only when it had a finite val_loss
  <workdir>/checkpoints/<step>.orbax-checkpoint-tmp*/   an unfinished save; ignored, removed on open

Retention: keep the newest `max_to_keep` steps AND (with `keep_best`) the one step with the lowest
finite `metrics["val_loss"]`. Steps without a val_loss count only toward the newest. (Orbax's own
`max_to_keep` + `best_fn` would keep the best `max_to_keep` and delete the newest, so we give it an
explicit preservation policy instead.)
"""

from __future__ import annotations

import math
import pathlib
import warnings
from typing import Any, NamedTuple

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

ITEMS = ("train_state", "params", "assets", "config")


class Restored(NamedTuple):
  step: int
  train_state: Any  # None when not asked for
  params: Any  # None when not asked for
  assets: dict
  config: dict


def _val_loss(metrics) -> float:
  return metrics["val_loss"]


def _brief(error: Exception) -> str:
  # Tensorstore appends its whole JSON spec to every message; the path and reason come before it.
  text = str(error).split(" [tensorstore_spec=")[0].splitlines()[0] if str(error) else ""
  return f"{type(error).__name__}: {text[:500]}"


def _checkpoint_dir(workdir) -> pathlib.Path:
  # Orbax wants absolute paths; resolving also makes the warnings below name a findable folder.
  return pathlib.Path(workdir).resolve() / "checkpoints"


class Checkpointer:
  """Saves and restores a run's train state, inference params, assets and config under `<workdir>/checkpoints`."""

  def __init__(self, directory, *, max_to_keep: int = 3, keep_best: bool = True, async_save: bool = True):
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep={max_to_keep} must be at least 1 (the newest step is what a resume reads)")
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
    self._unreadable: set[int] = set()

  @staticmethod
  def exists(directory) -> bool:
    """Whether `<directory>/checkpoints` holds at least one finished step (creates nothing)."""
    path = _checkpoint_dir(directory)
    return path.is_dir() and ocp.utils.any_checkpoint_step(path) is not None

  def save(self, step: int, *, train_state, params, assets: dict, config: dict, metrics: dict | None = None,
           force: bool = False) -> bool:
    """Starts saving `step` (in the background when async); returns whether a save was started."""
    if step in self._unreadable:
      # restore() fell back past this torn step, so the resumed run reaches it again: replace it.
      self._manager.delete(step)
      self._unreadable.discard(step)
    metrics = dict(metrics or {})
    val_loss = metrics.get("val_loss")
    # Only a finite val_loss may rank a step: a NaN would sort anywhere and could pin a broken step as best.
    ranked = val_loss is not None and math.isfinite(float(val_loss))
    args = ocp.args.Composite(
        train_state=ocp.args.StandardSave(train_state), params=ocp.args.StandardSave(params),
        assets=ocp.args.JsonSave(assets), config=ocp.args.JsonSave(config))
    stored = {k: float(v) for k, v in metrics.items()} if ranked else None
    return self._manager.save(step, args=args, metrics=stored, force=force)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the lowest val_loss; None when no kept step recorded one."""
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, *, train_state_target, params_target=None, step: int | None = None) -> Restored:
    """Restores into the targets' structure, dtypes and shardings (abstract `jax.eval_shape` trees work).

    A None target skips that item. With `step=None` this reads the newest readable step, warning
    about (and skipping) torn ones; an explicit `step` is read as is.
    """
    if train_state_target is None and params_target is None:
      raise ValueError("pass train_state_target or params_target (or use restore_json for assets/config only)")
    items = {"assets": ocp.args.JsonRestore(), "config": ocp.args.JsonRestore()}
    if train_state_target is not None:
      items["train_state"] = ocp.args.StandardRestore(train_state_target)
    if params_target is not None:
      items["params"] = ocp.args.StandardRestore(params_target)
    step, out = self._restore_first_readable(step, items)
    return Restored(step=step, train_state=out.get("train_state"), params=out.get("params"),
                    assets=out["assets"], config=out["config"])

  def restore_json(self, step: int | None = None) -> tuple[dict, dict]:
    """(assets, config) of `step` (default: the newest readable), without reading any array."""
    _, out = self._restore_first_readable(step, {"assets": ocp.args.JsonRestore(),
                                                 "config": ocp.args.JsonRestore()})
    return out["assets"], out["config"]

  def _restore_first_readable(self, step: int | None, items: dict) -> tuple[int, dict]:
    self.wait()  # a save still in flight would otherwise look like a missing step
    if step is not None:
      return step, dict(self._manager.restore(step, args=ocp.args.Composite(**items)).items())
    for candidate in reversed(self.all_steps()):
      try:
        return candidate, dict(self._manager.restore(candidate, args=ocp.args.Composite(**items)).items())
      except Exception as error:  # noqa: BLE001 - torn files surface as many error types (tensorstore, JSON, OS)
        self._unreadable.add(candidate)
        warnings.warn(f"checkpoint step {candidate} in {self.directory} is unreadable "
                      f"({_brief(error)}); falling back to an older step", stacklevel=3)
    raise FileNotFoundError(f"no readable checkpoint in {self.directory}: train from scratch or pass another workdir")
