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
import signal
import time
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from tinyvla_jax.data import sources
from tinyvla_jax.data.episodes import split_episodes
from tinyvla_jax.data.loader import ChunkLoader, compute_stats
from tinyvla_jax.data.normalize import NormStats
from tinyvla_jax.data.tokenizer import ByteTokenizer
from tinyvla_jax.diffusion.schedule import make_schedule
from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params
from tinyvla_jax.training.checkpoints import Checkpointer
from tinyvla_jax.training.metrics import MetricsWriter
from tinyvla_jax.training.optimizer import make_optimizer
from tinyvla_jax.training.state import TrainState, create_train_state
from tinyvla_jax.training.step import make_eval_step, make_train_step

# Keys that may change between a run and its resumption: they set how long/how loud it runs.
RESUMABLE_KEYS = ("train.max_steps", "train.log_every")


@dataclasses.dataclass
class RunResult:
  state: TrainState
  history: list[dict[str, Any]]  # per-epoch records (train loss mean, val loss, skipped, seconds)
  stopped_early: bool  # by a signal or train.max_steps


class NonFiniteTrainingError(RuntimeError):
  pass


# --- phases -------------------------------------------------------------------------------------

def model_config(config) -> VLAConfig:
  return VLAConfig.from_dict(config.model.to_dict())


def load_data(config, model_cfg: VLAConfig):
  episodes = sources.load_episodes(config.data)
  sources.check_matches_model(episodes, model_cfg)
  train_eps, val_eps = split_episodes(episodes, val_fraction=config.data.val_fraction, seed=config.train.seed)
  stats = compute_stats(train_eps)
  tokenizer = ByteTokenizer()
  common = dict(tokenizer=tokenizer, stats=stats, horizon=model_cfg.head.horizon,
                max_text_len=config.data.max_text_len)
  train_loader = ChunkLoader(train_eps, batch_size=config.train.batch_size, seed=config.train.seed, **common)
  val_loader = None
  if val_eps:
    val_loader = ChunkLoader(val_eps, batch_size=config.train.batch_size, seed=0, shuffle=False, drop_last=False,
                             **common)
  return train_loader, val_loader, stats


def build_state(config, model: UnifiedTinyVLAModel, *, total_steps: int):
  rng = jax.random.key(config.train.seed)
  init_rng, train_rng = jax.random.split(rng)
  params = init_params(model, init_rng, text_len=config.data.max_text_len)
  tx, lr_schedule = make_optimizer(config.optim, total_steps=total_steps, params=params)
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
      raise ValueError(f"{workdir} holds a run with another config ({'; '.join(diffs[:5])}"
                       f"{' ...' if len(diffs) > 5 else ''}): pass --overwrite to start over, or another --workdir")
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config_json(config), f, indent=2)
  return checkpointer


class _StopSignal:
  """SIGTERM/SIGINT set a flag; the loop saves a checkpoint after the current step and exits."""

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def evaluate(eval_step, params, loader: ChunkLoader | None, seed: int) -> float | None:
  if loader is None:
    return None
  losses, weights = [], []
  for i, batch in enumerate(loader.batches(0)):
    rng = jax.random.fold_in(jax.random.key(seed + 1), i)
    losses.append(float(eval_step(params, batch, rng)))
    weights.append(float(batch["action_mask"].sum()))
  return float(np.average(losses, weights=weights))


# --- the run ------------------------------------------------------------------------------------

def train(config, *, workdir: str, overwrite: bool = False, progress: bool = True) -> RunResult:
  model_cfg = model_config(config)
  train_loader, val_loader, stats = load_data(config, model_cfg)
  steps_per_epoch = train_loader.steps_per_epoch
  total_steps = config.train.epochs * steps_per_epoch
  model = UnifiedTinyVLAModel(model_cfg)
  state, tx, lr_schedule = build_state(config, model, total_steps=total_steps)
  noise_schedule = make_schedule(num_train_steps=config.diffusion.num_train_steps,
                                 beta_schedule=config.diffusion.beta_schedule)

  checkpointer = prepare_workdir(workdir, config, overwrite=overwrite)
  if checkpointer.latest_step() is not None:
    restored = checkpointer.restore(train_state_target=jax.eval_shape(lambda: state))
    state = restored.train_state
    logging.info("resumed from step %d", restored.step)
    stored_stats = NormStats.from_json(restored.assets["norm_stats"])
    if not np.allclose(stored_stats.action_min, stats.action_min):
      raise ValueError(f"the data under data.* changed since {workdir} was written; use --overwrite")

  step_fn = jax.jit(make_train_step(
      apply_fn=model.apply, tx=tx, lr_schedule=lr_schedule, noise_schedule=noise_schedule,
      ema_decay=config.train.ema_decay, loss_scale_threshold=config.train.loss_scale_threshold,
      loss_scale_factor=config.train.loss_scale_factor, skip_nonfinite=config.train.skip_nonfinite),
      donate_argnums=0)
  eval_fn = jax.jit(make_eval_step(apply_fn=model.apply, noise_schedule=noise_schedule))
  writer = MetricsWriter(workdir, tensorboard=config.train.tensorboard)
  assets = {"norm_stats": stats.to_json(), "tokenizer": "byte"}

  def save(step: int, val_loss: float | None, force: bool = False):
    checkpointer.save(step, train_state=state, params=state.inference_params, assets=assets,
                      config=config_json(config), metrics=None if val_loss is None else {"val_loss": val_loss},
                      force=force)

  max_steps = min(config.train.max_steps or total_steps, total_steps)
  seen = int(state.batches_seen)
  history, stopped = [], False
  bar = tqdm(total=max_steps, initial=min(seen, max_steps), disable=not progress, desc="train", unit="step",
             dynamic_ncols=True)
  log = _Flusher(writer, bar, config)
  try:
    with _StopSignal() as stop:
      for epoch in range(seen // steps_per_epoch, config.train.epochs):
        if seen >= max_steps:
          break
        t0 = time.perf_counter()
        log.epoch_losses = []
        for batch in train_loader.batches(epoch, start=seen - epoch * steps_per_epoch):
          state, metrics = step_fn(state, batch)
          seen += 1
          log.pending.append(metrics)
          if len(log.pending) >= config.train.log_every:
            log.flush(seen, epoch)
          if stop.received or seen >= max_steps:
            break
        log.flush(seen, epoch)
        epoch_done = seen % steps_per_epoch == 0
        if epoch_done:
          val_loss = evaluate(eval_fn, state.inference_params, val_loader, config.train.seed)
          record = dict(epoch=epoch + 1, train_loss=float(np.mean(log.epoch_losses)) if log.epoch_losses else None,
                        val_loss=val_loss, skipped=int(state.skipped), seconds=time.perf_counter() - t0)
          history.append(record)
          writer.write(int(state.step), {k: v for k, v in record.items() if v is not None}, prefix="epoch")
          save(int(state.step), val_loss)
        if stop.received or seen >= max_steps:
          if not epoch_done:
            save(int(state.step), None, force=True)
          stopped = seen < total_steps
          if stop.received:
            logging.warning("received %s: saved step %d to %s", stop.received, int(state.step), workdir)
          break
  finally:
    bar.close()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  return RunResult(state=state, history=history, stopped_early=stopped)


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
      raise NonFiniteTrainingError(
          f"{bad} consecutive batches had a non-finite loss or gradient (batches {seen - bad + 1}-{seen}, "
          f"epoch {epoch + 1}); last loss {float(last['loss'])}, grad norm {float(last['grad_norm'])}. Check the "
          "data and optim.learning_rate, or raise train.max_consecutive_skips")
    now = time.perf_counter()
    rate = self.config.train.batch_size * len(records) / max(now - self._clock, 1e-9)
    self._clock = now
    self.bar.update(len(records))
    self.bar.set_postfix(epoch=epoch + 1, loss=f"{float(last['loss']):.4f}", skipped=int(last["skipped"]),
                         ex_per_s=f"{rate:.1f}")
