"""The training run, as a chain of phases: data -> model and state -> resume -> steps -> checkpoints.

`train(config, workdir=...)` is what `python -m tinyvla_jax.train` calls; tests call it directly.
Re-running it on the same workdir resumes from the latest checkpoint, exactly: the data order is a
function of (seed, batches seen) and the step's rng is fold_in(rng, batches seen), both restored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from typing import Any, Callable, NamedTuple, Protocol

import jax
import numpy as np
from tqdm import tqdm

from tinyvla_jax.data import sources
from tinyvla_jax.data.episodes import split_episodes
from tinyvla_jax.data.loader import ChunkLoader, compute_stats
from tinyvla_jax.data.normalize import NormStats
from tinyvla_jax.data.store import write_json_atomic
from tinyvla_jax.data.tokenizer import make_tokenizer
from tinyvla_jax.diffusion.schedule import make_schedule
from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params
from tinyvla_jax.pretrained import backbones
from tinyvla_jax.checkpoints import Checkpointer
from tinyvla_jax.training.config_checks import check_data_matches_model, check_run_config
from tinyvla_jax.training.metrics import MetricsWriter
from tinyvla_jax.training.optimizer import make_optimizer
from tinyvla_jax.training.signals import StopSignal
from tinyvla_jax.training.state import TrainState, create_train_state
from tinyvla_jax.training import validation
from tinyvla_jax.training.step import make_train_step
from tinyvla_jax.training.workdir import WorkdirLock

log = logging.getLogger(__name__)

# Keys that may change between a run and its resumption: they set how long/how loud it runs.
RESUMABLE_KEYS = ("train.max_steps", "train.log_every", "train.checkpoint_every_steps",
                  "train.checkpoint_every_minutes")


@dataclasses.dataclass
class RunResult:
  state: TrainState
  history: list[dict[str, Any]]  # per-epoch records (train loss mean, val loss, skipped, seconds)
  stopped_early: bool  # by a signal or train.max_steps
  signal: int | None = None  # the signal that stopped it (after saving), if any


class NonFiniteTrainingError(UserError):
  """Too many consecutive batches were skipped: the run diverged or its inputs are broken."""


# --- phases -------------------------------------------------------------------------------------

def model_config(config) -> VLAConfig:
  return VLAConfig.from_dict(config.model.to_dict())


class Data(NamedTuple):
  train: ChunkLoader
  val: ChunkLoader | None
  stats: NormStats
  info: dict  # stored in checkpoint assets: the dataset's card and the setups it used (for evaluation)


def crop_window(image_size: int, crop_fraction: float) -> int | None:
  """The side of the crop window for `data.crop_fraction` of stored `image_size` (None: no crop).
  The model resizes the window to model.vision.image_size (72 px stored x 0.89 = 64 = the cpu preset)."""
  if not 0 < crop_fraction <= 1:
    raise UserError(f"data.crop_fraction={crop_fraction} must be in (0, 1]")
  window = int(round(crop_fraction * image_size))
  return None if window >= image_size else max(window, 1)


def load_data(config, model_cfg: VLAConfig, *, shard_index: int = 0, num_shards: int = 1) -> Data:
  loaded = sources.load_data(config.data)
  episodes = loaded.episodes
  check_data_matches_model(episodes, model_cfg)
  train_eps, val_eps = split_episodes(episodes, val_fraction=config.data.val_fraction, seed=config.data.split_seed)
  # The training episodes of the selected tasks only: validation episodes and tasks left out by
  # data.tasks must not shape the normalization (one pass over arrays already in memory).
  stats = compute_stats(train_eps)
  tokenizer = make_tokenizer(config)  # the pretrained LLM's tokenizer.json, else bytes
  if tokenizer.image_token_id != model_cfg.image_token_id:
    raise UserError(f"model.image_token_id={model_cfg.image_token_id} but the tokenizer's image placeholder is "
                     f"{tokenizer.image_token_id}: leave model.image_token_id to the preset / pretrained.llm")
  crop = crop_window(episodes[0].images.shape[2], config.data.crop_fraction)
  common = dict(tokenizer=tokenizer, stats=stats, horizon=model_cfg.head.horizon,
                max_text_len=config.data.max_text_len, crop_size=crop, obs_steps=model_cfg.obs_steps)
  train_loader = ChunkLoader(train_eps, batch_size=config.train.batch_size, seed=config.train.seed,
                             augment=bool(config.data.random_crop),
                             state_dropout=float(config.data.state_dropout), shard_index=shard_index,
                             num_shards=num_shards, **common)
  val_loader = None
  if val_eps:
    # A fixed shuffle (epoch 0 of seed 0): the loss is over every sample all the same, and each batch mixes
    # episodes, which the condition-sensitivity figures need (training/validation.py).
    val_loader = ChunkLoader(val_eps, batch_size=config.train.batch_size, seed=0, shuffle=True, drop_last=False,
                             shard_index=shard_index, num_shards=num_shards, **common)
  info = dict(source=config.data.source, card=loaded.card, setup_seeds=loaded.setup_seeds,
              tasks=sorted({e.task for e in episodes}), crop_window=crop, image_size=int(episodes[0].images.shape[2]))
  return Data(train_loader, val_loader, stats, info)


def build_state(config, model: UnifiedTinyVLAModel, *, total_steps: int, pretrained: bool = True):
  """`pretrained=False` skips reading the pretrained folders (a resumed run restores its own weights)."""
  rng = jax.random.key(config.train.seed)
  init_rng, train_rng = jax.random.split(rng)
  params = init_params(model, init_rng, text_len=config.data.max_text_len)
  if pretrained:
    params = backbones.load_pretrained(params, config)
  tx, lr_schedule = make_optimizer(config.optim, total_steps=total_steps, params=params,
                                   finetune=model.config.finetune)
  state = create_train_state(params=params, tx=tx, rng=train_rng, use_ema=config.train.ema_decay is not None)
  return state, tx, lr_schedule


def config_json(config) -> dict:
  return json.loads(config.to_json())


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
  return out


def config_differences(stored: dict, current: dict) -> list[str]:
  a, b = _flatten(stored), _flatten(current)
  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
          if k not in RESUMABLE_KEYS and a.get(k) != b.get(k)]


def prepare_workdir(workdir: str, config, *, overwrite: bool) -> Checkpointer:
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if overwrite:
    for path in (ckpt_dir, os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "tensorboard")):
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.exists(path):
        os.remove(path)
  checkpointer = Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)  # under <workdir>/checkpoints
  if checkpointer.latest_step() is not None:
    _, stored = checkpointer.restore_json()
    diffs = config_differences(stored, config_json(config))
    if diffs:
      checkpointer.close()
      raise UserError(f"{workdir} holds a run with another config ({'; '.join(diffs[:5])}"
                       f"{' ...' if len(diffs) > 5 else ''}): pass --overwrite to start over, or another --workdir")
  write_json_atomic(os.path.join(workdir, "config.json"), config_json(config))
  return checkpointer


# --- the run ------------------------------------------------------------------------------------

class EpochHook(Protocol):
  """Work at epoch ends that the loop does not own, e.g. closed-loop evaluation (evaluation/periodic.py).
  Made by a factory `hook(config, model=, stats=, tokenizer=, data_info=, workdir=, writer=)` once the run's
  pieces exist (before the first step); the factory returns None when it has nothing to do."""

  def due(self, epoch: int) -> bool: ...

  def run(self, params, *, epoch: int, step: int) -> Any: ...


def train(config, *, workdir: str, overwrite: bool = False, progress: bool = True,
          epoch_hook: Callable[..., EpochHook | None] | None = None) -> RunResult:
  """Start-up runs the checks that need no data first (config numbers, workdir lock and writability, a
  config mismatch with the stored run), so a bad input is one line within seconds, not after loading
  and compiling. A signal during start-up ends it at once (training/signals.py). `epoch_hook`: see
  EpochHook; `python -m tinyvla_jax.train` passes the closed-loop evaluation for `eval.every_epochs`."""
  with StopSignal() as stop:
    # Model sizes from the pretrained folders' config.json; the checkpoint stores this resolved config.
    config = backbones.resolve_config(config)
    check_run_config(config)
    every = config.eval.every_epochs if config.get("eval") is not None else 0
    if every and epoch_hook is None:
      raise UserError(f"eval.every_epochs={every} needs the closed-loop evaluation hook: "
                      "run python -m tinyvla_jax.train, or pass epoch_hook="
                      "tinyvla_jax.evaluation.periodic.PeriodicEvaluation.for_run to training.loop.train")
    with WorkdirLock(workdir):
      checkpointer = prepare_workdir(workdir, config, overwrite=overwrite)
      with checkpointer:
        return _run(config, workdir, checkpointer, stop, progress=progress, epoch_hook=epoch_hook)


def _run(config, workdir: str, checkpointer: Checkpointer, stop: StopSignal, *, progress: bool,
         epoch_hook) -> RunResult:
  model_cfg = model_config(config)
  # Each host loads its slice of every global batch (one host: all of it).
  data = load_data(config, model_cfg, shard_index=jax.process_index(), num_shards=jax.process_count())
  train_loader, val_loader, stats = data.train, data.val, data.stats
  steps_per_epoch = train_loader.steps_per_epoch
  total_steps = config.train.epochs * steps_per_epoch
  model = UnifiedTinyVLAModel(model_cfg)
  resuming = checkpointer.latest_step() is not None
  state, tx, lr_schedule = build_state(config, model, total_steps=total_steps, pretrained=not resuming)
  noise_schedule = make_schedule(num_train_steps=config.diffusion.num_train_steps,
                                 beta_schedule=config.diffusion.beta_schedule)

  metrics_offset, epoch_losses = 0, []  # a fresh run: rows of a run killed before its first save go
  if resuming:
    restored = checkpointer.restore(train_state_target=jax.eval_shape(lambda: state))
    state = restored.train_state
    log.info("resumed from step %d", restored.step)
    stored_stats = NormStats.from_json(restored.assets["norm_stats"])
    if not np.allclose(stored_stats.action_min, stats.action_min):
      raise UserError(f"the data under data.* changed since {workdir} was written; use --overwrite")
    if "data_iterator" in restored.assets:
      train_loader.check_iterator_state(restored.assets["data_iterator"], int(state.batches_seen))
    metrics_offset = restored.assets.get("metrics_offset")  # None: written before metrics were tracked
    epoch_losses = restored.assets.get("epoch_losses", [])

  step_fn = jax.jit(make_train_step(
      apply_fn=model.apply, tx=tx, lr_schedule=lr_schedule, noise_schedule=noise_schedule,
      ema_decay=config.train.ema_decay, ema_power=config.train.ema_power,
      loss_scale_threshold=config.train.loss_scale_threshold, loss_scale_factor=config.train.loss_scale_factor,
      skip_nonfinite=config.train.skip_nonfinite, noise_samples=config.train.noise_samples),
      donate_argnums=0)
  validation_fn = jax.jit(validation.make_validation_step(apply_fn=model.apply, noise_schedule=noise_schedule))
  seen = int(state.batches_seen)
  # Exactly once: rows past what the checkpoint recorded (steps after it, before a kill) are cut, and
  # TensorBoard drops its events past the resumed step.
  writer = MetricsWriter(workdir, tensorboard=config.train.tensorboard, truncate_to=metrics_offset,
                         purge_step=seen + 1 if resuming else None)
  assets = {"norm_stats": stats.to_json(), "tokenizer": train_loader.tokenizer.to_asset(), "data": data.info}
  hook = epoch_hook and epoch_hook(config, model=model, stats=stats, tokenizer=train_loader.tokenizer,
                                   data_info=data.info, workdir=workdir, writer=writer)
  max_steps = min(config.train.max_steps or total_steps, total_steps)
  history = []
  bar = tqdm(total=max_steps, initial=min(seen, max_steps), disable=not progress, desc="train", unit="step",
             dynamic_ncols=True)
  flusher = _Flusher(writer, bar, config)
  if seen % steps_per_epoch:  # resumed mid-epoch: the epoch's mean loss covers the part before the kill too
    flusher.epoch_losses = list(epoch_losses)
  interval = _CheckpointInterval(config.train.checkpoint_every_steps, config.train.checkpoint_every_minutes, seen)

  def save(step: int, val_loss: float | None, force: bool = False):
    assets.update(data_iterator=train_loader.iterator_state(int(state.batches_seen)),
                  metrics_offset=writer.offset(), epoch_losses=list(flusher.epoch_losses))
    checkpointer.save(step, train_state=state, params=state.inference_params, assets=assets,
                      config=config_json(config), metrics=None if val_loss is None else {"val_loss": val_loss},
                      force=force)
    interval.saved(seen)

  stop.training()
  try:
    for epoch in range(seen // steps_per_epoch, config.train.epochs):
      if seen >= max_steps:
        break
      t0 = time.perf_counter()
      if seen % steps_per_epoch == 0:
        flusher.epoch_losses = []
      for batch in train_loader.batches(epoch, start=seen - epoch * steps_per_epoch):
        state, metrics = step_fn(state, batch)
        seen += 1
        flusher.pending.append(metrics)
        if len(flusher.pending) >= config.train.log_every:
          flusher.flush(seen, epoch)
          checkpointer.check_for_errors()  # a failed background save stops the run now, not an epoch later
        if stop.received or seen >= max_steps:
          break
        if seen % steps_per_epoch and interval.due(seen):
          flusher.flush(seen, epoch)
          save(int(state.step), None)
      flusher.flush(seen, epoch)
      epoch_done = seen % steps_per_epoch == 0
      if epoch_done:
        seconds = time.perf_counter() - t0
        val = validation.validate(validation_fn, state.inference_params, val_loader, seed=config.train.seed)
        val_loss = val.get("val_loss")
        if val_loss is not None and not np.isfinite(val_loss):
          log.warning("epoch %d: the validation loss is %s (training loss %s)", epoch + 1, val_loss,
                      np.mean(flusher.epoch_losses) if flusher.epoch_losses else None)
        record = dict(epoch=epoch + 1, train_loss=float(np.mean(flusher.epoch_losses)) if flusher.epoch_losses
                      else None, **val, skipped=int(state.skipped), seconds=seconds)
        history.append(record)
        writer.write(int(state.step), {k: v for k, v in record.items() if v is not None}, prefix="epoch")
        if hook is not None and hook.due(epoch + 1):  # before the save: its rows are then in what it covers
          hook.run(state.inference_params, epoch=epoch + 1, step=int(state.step))
        save(int(state.step), val_loss)
      if stop.received or seen >= max_steps:
        if not epoch_done:
          save(int(state.step), None, force=True)
        if stop.received:
          checkpointer.wait()  # the save must land before the process reports that it did
          log.warning("received %s: saved step %d to %s; re-run the same command to resume", stop.received,
                      int(state.step), workdir)
        break
    checkpointer.wait()
  finally:
    bar.close()
    writer.close()
  return RunResult(state=state, history=history, stopped_early=seen < total_steps, signal=stop.signum)


class _CheckpointInterval:
  """`train.checkpoint_every_steps` / `train.checkpoint_every_minutes` (0 = off): when a mid-epoch save is due."""

  def __init__(self, every_steps: int, every_minutes: float, seen: int):
    self.every_steps, self.every_seconds = int(every_steps), 60.0 * float(every_minutes)
    self.saved(seen)

  def saved(self, seen: int) -> None:
    self._seen, self._time = seen, time.monotonic()

  def due(self, seen: int) -> bool:
    return bool((self.every_steps and seen - self._seen >= self.every_steps) or
                (self.every_seconds and time.monotonic() - self._time >= self.every_seconds))


class _Flusher:
  """Moves pending step metrics to the host every `train.log_every` steps (one sync, not one per step):
  writes them, advances the progress bar, and fails fast on a run of non-finite batches."""

  def __init__(self, writer: MetricsWriter, bar, config):
    self.writer, self.bar, self.config = writer, bar, config
    self.pending, self.epoch_losses = [], []
    self._clock = time.perf_counter()

  def flush(self, seen: int, epoch: int) -> None:
    if not self.pending:
      return
    records = jax.device_get(self.pending)
    self.pending = []
    first = seen - len(records) + 1
    for i, m in enumerate(records):
      self.writer.write(first + i, {k: v for k, v in m.items() if k != "consecutive_skipped"})
      if m["finite"]:
        self.epoch_losses.append(float(m["loss"]))
    last = records[-1]
    bad = int(last["consecutive_skipped"])
    if bad > self.config.train.max_consecutive_skips:
      loss, grad_norm = float(last["loss"]), float(last["grad_norm"])
      if np.isfinite(loss) and np.isfinite(grad_norm):
        cause = ("the loss and gradient were finite but the update or the new parameters were not: check "
                 "optim.learning_rate, optim.eps and optim.weight_decay")
      else:
        cause = (f"last loss {loss}, grad norm {grad_norm}: check the data (data.path, its normalization "
                 "statistics) and optim.learning_rate")
      raise NonFiniteTrainingError(
          f"{bad} consecutive batches were skipped as non-finite (batches {seen - bad + 1}-{seen}, epoch "
          f"{epoch + 1}); {cause}; or raise train.max_consecutive_skips")
    now = time.perf_counter()
    rate = self.config.train.batch_size * len(records) / max(now - self._clock, 1e-9)
    self._clock = now
    self.bar.update(len(records))
    self.bar.set_postfix(epoch=epoch + 1, loss=f"{float(last['loss']):.4f}", skipped=int(last["skipped"]),
                         ex_per_s=f"{rate:.1f}")
