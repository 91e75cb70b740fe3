"""The training run, as a chain of named phases (see `train`): config -> workdir -> data -> model and state ->
resume -> steps -> checkpoints.

`train(run, workdir=...)` is what `python -m tinyvla_jax.train` calls (run: a run_config.RunConfig);
tests call it directly.
Re-running it on the same workdir resumes from the latest checkpoint, exactly: the data order is a
function of (seed, batches seen) and the step's rng is fold_in(rng, batches seen), both restored.

Devices: the state and every batch live on the run's mesh (`mesh.*`, training/sharding.py); the steps are
jitted with those shardings, so one CPU, eight GPUs and a pod slice run the same loop. Processes (a
multi-host run, training/processes.py): each loads its slice of every batch; only process 0 writes files;
stops and clock-based saves are agreed on at sync points (every `train.log_every` steps), so every process
saves and stops at the same step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any, Callable, NamedTuple, Protocol

import jax
import numpy as np
from tqdm import tqdm

from tinyvla_jax.checkpoints import Checkpointer, SaveInterval
from tinyvla_jax.data import sources
from tinyvla_jax.data.augment import crop_window
from tinyvla_jax.data.episodes import split_episodes
from tinyvla_jax.data.loader import ChunkLoader, compute_stats
from tinyvla_jax.data.normalize import NormStats
from tinyvla_jax.data.preprocess import Preprocessor
from tinyvla_jax.data.tokenizer import make_tokenizer
from tinyvla_jax.errors import UserError
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.pretrained import backbones
from tinyvla_jax.run_config import RunConfig, with_backbones
from tinyvla_jax.training import objectives, processes, sharding, validation
from tinyvla_jax.training.config_checks import check_data_matches_model, check_sizes
from tinyvla_jax.training.metrics import MetricsFlusher, MetricsWriter, NonFiniteTrainingError
from tinyvla_jax.training.optimizer import make_optimizer, partition_of
from tinyvla_jax.training.signals import StopSignal
from tinyvla_jax.training.state import TrainState, create_train_state
from tinyvla_jax.training.step import make_train_step
from tinyvla_jax.training.workdir import WorkdirLock, prepare_workdir

log = logging.getLogger(__name__)

__all__ = ["Data", "EpochHook", "NonFiniteTrainingError", "RunResult", "build_state", "load_data", "store_frozen",
           "train"]


@dataclasses.dataclass
class RunResult:
  state: TrainState
  history: list[dict[str, Any]]  # per-epoch records (train loss mean, val loss, skipped, seconds)
  stopped_early: bool  # by a signal or train.max_steps
  signal: int | None = None  # the signal that stopped it (after saving), if any


# --- phases -------------------------------------------------------------------------------------

class Data(NamedTuple):
  train: ChunkLoader
  val: ChunkLoader | None
  preprocess: Preprocessor  # what the checkpoint's policy preprocesses with (stored in its assets)
  info: dict  # stored in checkpoint assets: the dataset's card and the setups it used (for evaluation)


def load_data(config: RunConfig, *, shard_index: int = 0, num_shards: int = 1, pad_to: int = 1) -> Data:
  """The episodes of `data.*`, split, normalized and batched for the model of `config.model`. `pad_to`: the
  mesh's device count, which the validation's short last batch is padded to (masked out)."""
  model_cfg, d = config.model, config.data
  sizes = sources.peek_sizes(d)
  if sizes is not None:  # known before loading (LeRobot: info.json): a mismatch is reported before decoding
    check_sizes(model_cfg, **sizes)
  loaded = sources.load_data(d, model_image_size=model_cfg.vision.image_size)
  episodes = loaded.episodes
  check_data_matches_model(episodes, model_cfg)
  if config.train.privileged_weight > 0:
    episodes = _with_privileged_targets(episodes, model_cfg.head.privileged_dim)
  train_eps, val_eps = split_episodes(episodes, val_fraction=d.val_fraction, seed=d.split_seed)
  # The training episodes of the selected tasks only: validation episodes and tasks left out by
  # data.tasks must not shape the normalization (one pass over arrays already in memory).
  stats = compute_stats(train_eps)
  tokenizer = make_tokenizer(d.tokenizer, llm_folder=config.pretrained.llm)  # an LLM folder brings its own
  if tokenizer.image_token_id != model_cfg.image_token_id:
    raise UserError(f"model.image_token_id={model_cfg.image_token_id} but the tokenizer's image placeholder is "
                     f"{tokenizer.image_token_id}: leave model.image_token_id to the preset / pretrained.llm")
  crop = crop_window(episodes[0].images.shape[2], d.crop_fraction)
  preprocess = Preprocessor(stats=stats, tokenizer=tokenizer, max_text_len=d.max_text_len, crop_window=crop,
                            obs_steps=model_cfg.obs_steps)
  common = dict(preprocess=preprocess, horizon=model_cfg.head.horizon)
  train_loader = ChunkLoader(train_eps, batch_size=config.train.batch_size, seed=config.train.seed,
                             augment=d.random_crop, state_dropout=d.state_dropout, first_steps=d.first_steps,
                             first_steps_repeat=d.first_steps_repeat, shard_index=shard_index,
                             num_shards=num_shards, **common)
  val_loader = None
  if val_eps:
    # A fixed shuffle (epoch 0 of seed 0): the loss is over every sample all the same, and each batch mixes
    # episodes, which the condition-sensitivity figures need (training/validation.py).
    val_loader = ChunkLoader(val_eps, batch_size=config.train.batch_size, seed=0, shuffle=True, drop_last=False,
                             shard_index=shard_index, num_shards=num_shards, pad_to=pad_to, **common)
  info = dict(source=d.source, card=loaded.card, setup_seeds=loaded.setup_seeds,
              tasks=sorted({e.task for e in episodes}), crop_window=crop, image_size=int(episodes[0].images.shape[2]))
  return Data(train_loader, val_loader, preprocess, info)


def _with_privileged_targets(episodes, dim: int):
  """The episodes with their replayed object and goal positions (sim/privileged.py) standardized per task: the
  auxiliary loss then asks for where things are within a task's range, which only the image can tell (a task's
  mean position the instruction already gives)."""
  from tinyvla_jax.sim import privileged  # the MetaWorld extra, only for this loss

  if dim != privileged.POSE_DIM:  # before the replay (~0.1 s per demo)
    raise UserError(f"model.head.privileged_dim={dim} but MetaWorld's replay gives {privileged.POSE_DIM} "
                     f"coordinates ({', '.join(privileged.POSE_NAMES)}): set it to {privileged.POSE_DIM}")
  episodes = privileged.episodes_with_poses(episodes)
  out = list(episodes)
  for task in {e.task for e in episodes}:
    # Every loaded episode of the task, validation's too: these are loss scales, never seen at inference.
    values = np.concatenate([e.privileged for e in episodes if e.task == task])
    mean, std = values.mean(0), np.maximum(values.std(0), privileged.MIN_STD_M)
    for i, e in enumerate(episodes):
      if e.task == task:
        out[i] = e.with_privileged(((e.privileged - mean) / std).astype(np.float32))
  return out


def build_state(config: RunConfig, model: UnifiedTinyVLAModel, *, total_steps: int, pretrained: bool = True):
  """Initialized (and pretrained) params, the optimizer and the train state. `pretrained=False` skips reading
  the pretrained folders (a resumed run restores its own weights)."""
  rng = jax.random.key(config.train.seed)
  init_rng, train_rng = jax.random.split(rng)
  params = init_params(model, init_rng, text_len=config.data.max_text_len)
  if pretrained:
    params = backbones.load_pretrained(params, model.config, llm=config.pretrained.llm,
                                       vision=config.pretrained.vision)
  tx, lr_schedule = make_optimizer(config.optim, total_steps=total_steps, params=params,
                                   finetune=model.config.finetune)
  params = store_frozen(params, tx, model.config.frozen_dtype)
  state = create_train_state(params=params, tx=tx, rng=train_rng, use_ema=config.train.ema_decay is not None)
  return state, tx, lr_schedule


def store_frozen(params, tx, dtype: str):
  """Weights that never train (`tx.partition`) in `model.frozen_dtype` (bfloat16: half their memory); the
  layers cast them to the compute dtype where used. Trainable weights, their optimizer state and the EMA
  stay float32. Works on arrays and on `jax.eval_shape` trees alike (inside a traced function)."""
  if dtype == "float32":
    return params
  partition = partition_of(tx)
  trainable, frozen = partition.split(params)
  return partition.merge(trainable, jax.tree.map(lambda x: x.astype(dtype), frozen))


# --- the run ------------------------------------------------------------------------------------

class EpochHook(Protocol):
  """Work at epoch ends that the loop does not own, e.g. closed-loop evaluation (evaluation/periodic.py).
  Made by a factory `hook(config, model=, preprocess=, data_info=, workdir=, writer=)` once the run's
  pieces exist (before the first step); the factory returns None when it has nothing to do."""

  def due(self, epoch: int) -> bool: ...

  def run(self, params, *, epoch: int, step: int) -> Any: ...


def train(config: RunConfig, *, workdir: str, overwrite: bool = False, progress: bool = True,
          epoch_hook: Callable[..., EpochHook | None] | None = None) -> RunResult:
  """The run's phases: the resolved config, the workdir (lock, overwrite, a stored run's config), then data,
  model and state, resume, the steps. Start-up runs the checks that need no data first (the config's values
  were checked when it was built; the workdir's lock and writability, a config mismatch with the stored run),
  so a bad input is one line within seconds, not after loading and compiling. A signal during start-up ends
  it at once (training/signals.py). `epoch_hook`: see EpochHook; `python -m tinyvla_jax.train` passes the
  closed-loop evaluation for `eval.every_epochs`."""
  with StopSignal() as stop:
    config = _resolve_config(config, epoch_hook)
    mesh = sharding.make_mesh(config.mesh)
    _check_batch_size(config, mesh)
    # One lock per workdir, held by process 0 (the others share its workdir and write nothing there).
    with WorkdirLock(workdir) if processes.is_primary() else contextlib.nullcontext():
      checkpointer = prepare_workdir(workdir, config.to_dict(), keep=config.train.keep_checkpoints,
                                     overwrite=overwrite)
      with checkpointer:
        return _run(config, workdir, checkpointer, stop, mesh, progress=progress, epoch_hook=epoch_hook)


def _check_batch_size(config: RunConfig, mesh) -> None:
  t = config.train
  sharding.check_batch_size(t.batch_size, mesh)
  if t.grad_accum_steps > 1:
    micro = t.batch_size // t.grad_accum_steps
    if micro % mesh.size:
      raise UserError(f"--config.train.batch_size={t.batch_size} / --config.train.grad_accum_steps="
                      f"{t.grad_accum_steps} = {micro} examples per micro-batch cannot be split over the mesh's "
                      f"{mesh.size} devices: make it a multiple of {mesh.size}")


def _resolve_config(config: RunConfig, epoch_hook) -> RunConfig:
  if not isinstance(config, RunConfig):
    raise TypeError(f"training.loop.train takes a run_config.RunConfig, not {type(config).__name__}: build it with "
                    "RunConfig.from_dict(config.to_dict()) (or tinyvla_jax.recipes.typed(config))")
  every = config.eval.every_epochs
  if every and epoch_hook is None:
    raise UserError(f"eval.every_epochs={every} needs the closed-loop evaluation hook: "
                    "run python -m tinyvla_jax.train, or pass epoch_hook="
                    "tinyvla_jax.evaluation.periodic.PeriodicEvaluation.for_run to training.loop.train")
  # Model sizes from the pretrained folders' config.json; the checkpoint stores this resolved config.
  return with_backbones(config)


class _Resumed(NamedTuple):
  resuming: bool
  state: TrainState
  metrics_offset: int | None  # metrics.jsonl's length at the checkpoint (None: written before it was tracked)
  epoch_losses: list  # the losses of the checkpoint's epoch so far (a mid-epoch resume)


def _resume(checkpointer: Checkpointer, target, data: Data, workdir: str) -> _Resumed:
  """The latest intact checkpoint's state (onto `target`'s shardings, whatever mesh wrote it), checked
  against the data this run loaded."""
  restored = checkpointer.restore(train_state_target=target)
  state = restored.train_state
  log.info("resumed from step %d", restored.step)
  stored_stats = NormStats.from_json(restored.assets["norm_stats"])
  if not np.allclose(stored_stats.action_min, data.preprocess.stats.action_min):
    raise UserError(f"the data under data.* changed since {workdir} was written; use --overwrite")
  if "data_iterator" in restored.assets:
    data.train.check_iterator_state(restored.assets["data_iterator"], int(state.batches_seen))
  return _Resumed(True, state, restored.assets.get("metrics_offset"), restored.assets.get("epoch_losses", []))


class Placement(NamedTuple):
  """Where the run's arrays live (training/sharding.py)."""
  mesh: Any
  state: Any  # a NamedSharding per train-state leaf
  params: Any  # ... per inference-params leaf

  def batch(self, local: dict) -> dict:
    return sharding.global_batch(local, self.mesh)


def train_step_for(config: RunConfig, policy: DiffusionPolicy, tx, lr_schedule):
  """The (unjitted) train step the config asks for: its recipe's objective, EMA, non-finite skipping and
  gradient accumulation. The benchmark and profiling scripts time this same step."""
  t = config.train
  return make_train_step(objective=objectives.for_recipe(policy, t), tx=tx, lr_schedule=lr_schedule,
                         ema_decay=t.ema_decay, ema_power=t.ema_power, skip_nonfinite=t.skip_nonfinite,
                         grad_accum_steps=t.grad_accum_steps)


def _compile(config: RunConfig, model: UnifiedTinyVLAModel, tx, lr_schedule, placement: Placement):
  """The jitted train step (state donated) and validation step, both around the run's diffusion policy, with
  explicit shardings: the state as placed, the batch split over every device, metrics replicated."""
  policy = DiffusionPolicy.from_config(model, config.diffusion)
  batch, rep = sharding.batch_sharding(placement.mesh), sharding.replicated(placement.mesh)
  step_fn = jax.jit(train_step_for(config, policy, tx, lr_schedule),
                    in_shardings=(placement.state, batch), out_shardings=(placement.state, rep), donate_argnums=0)
  validation_fn = jax.jit(validation.make_validation_step(policy), in_shardings=(placement.params, batch, rep),
                          out_shardings=rep)
  return step_fn, validation_fn


def _run(config: RunConfig, workdir: str, checkpointer: Checkpointer, stop: StopSignal, mesh, *, progress: bool,
         epoch_hook) -> RunResult:
  # Each host loads its slice of every global batch (one host: all of it).
  data = load_data(config, shard_index=jax.process_index(), num_shards=jax.process_count(), pad_to=mesh.size)
  total_steps = config.train.epochs * data.train.steps_per_epoch
  model = UnifiedTinyVLAModel(config.model)
  resuming = checkpointer.latest_step() is not None
  state, tx, lr_schedule = build_state(config, model, total_steps=total_steps, pretrained=not resuming)
  shapes = jax.eval_shape(lambda: state)
  min_mib = config.mesh.fsdp_min_mib
  placement = Placement(mesh, sharding.state_shardings(shapes, mesh, min_mib=min_mib),
                        sharding.state_shardings(jax.eval_shape(lambda: state.inference_params), mesh, min_mib=min_mib))
  if resuming:
    # A fresh run starts metrics.jsonl over: rows of a run killed before its first save go.
    resumed = _resume(checkpointer, sharding.abstract(shapes, placement.state), data, workdir)
  else:
    resumed = _Resumed(False, sharding.place(state, placement.state), 0, [])
  del state  # the host copy; the run goes on with the placed one
  step_fn, validation_fn = _compile(config, model, tx, lr_schedule, placement)
  return _loop(config, workdir, checkpointer, stop, data=data, model=model, state=resumed.state, resumed=resumed,
               step_fn=step_fn, validation_fn=validation_fn, total_steps=total_steps, progress=progress,
               epoch_hook=epoch_hook, placement=placement)


def _loop(config: RunConfig, workdir: str, checkpointer: Checkpointer, stop: StopSignal, *, data: Data, model,
          state: TrainState, resumed: _Resumed, step_fn, validation_fn, total_steps: int, progress: bool,
          epoch_hook, placement: Placement) -> RunResult:
  """Epochs of steps from the state's `batches_seen`, with validation, the epoch hook and saves."""
  train_loader, val_loader, preprocess = data.train, data.val, data.preprocess
  steps_per_epoch = train_loader.steps_per_epoch
  resuming = resumed.resuming
  seen = int(state.batches_seen)
  # Exactly once: rows past what the checkpoint recorded (steps after it, before a kill) are cut, and
  # TensorBoard drops its events past the resumed step.
  primary = processes.is_primary()
  writer = MetricsWriter(workdir, tensorboard=config.train.tensorboard, truncate_to=resumed.metrics_offset,
                         purge_step=seen + 1 if resuming else None, enabled=primary)
  assets = {**preprocess.to_assets(), "data": data.info}
  hook = epoch_hook and epoch_hook(config, model=model, preprocess=preprocess, data_info=data.info, workdir=workdir,
                                   writer=writer)
  max_steps = min(config.train.max_steps or total_steps, total_steps)
  history = []
  interval = SaveInterval(config.train.checkpoint_every_steps, config.train.checkpoint_every_minutes, seen)
  config_record = config.to_dict()
  # A signal or a clock may reach one process first: decisions they drive are taken together, at sync points
  # (every step with one process; every log_every steps with several, where the metrics sync anyway).
  every = 1 if not processes.multi_process() else config.train.log_every
  stopping = False

  def agreed_stop() -> bool:
    nonlocal stopping
    stopping = stopping or processes.any_process(stop.received is not None)
    return stopping

  def save(step: int, val_loss: float | None, force: bool = False):
    assets.update(data_iterator=train_loader.iterator_state(int(state.batches_seen)),
                  metrics_offset=writer.offset(), epoch_losses=list(flusher.epoch_losses))
    checkpointer.save(step, train_state=state, params=state.inference_params, assets=assets,
                      config=config_record, metrics=None if val_loss is None else {"val_loss": val_loss},
                      force=force)
    interval.saved(seen)

  stop.training()
  # The progress bar exists only from here: a start-up signal raised before this point must not leave an
  # open bar that tqdm redraws at exit, after the one-line error.
  bar = tqdm(total=max_steps, initial=min(seen, max_steps), disable=not (progress and primary), desc="train",
             unit="step", dynamic_ncols=True)
  flusher = MetricsFlusher(writer, bar, batch_size=config.train.batch_size,
                           max_consecutive_skips=config.train.max_consecutive_skips)
  if seen % steps_per_epoch:  # resumed mid-epoch: the epoch's mean loss covers the part before the kill too
    flusher.epoch_losses = list(resumed.epoch_losses)
  try:
    for epoch in range(seen // steps_per_epoch, config.train.epochs):
      if seen >= max_steps:
        break
      t0 = time.perf_counter()
      if seen % steps_per_epoch == 0:
        flusher.epoch_losses = []
      for batch in train_loader.batches(epoch, start=seen - epoch * steps_per_epoch):
        state, metrics = step_fn(state, placement.batch(batch))
        seen += 1
        flusher.pending.append(metrics)
        if len(flusher.pending) >= config.train.log_every:
          flusher.flush(seen, epoch)
          checkpointer.check_for_errors()  # a failed background save stops the run now, not an epoch later
        if seen >= max_steps or (seen % every == 0 and agreed_stop()):
          break
        if seen % steps_per_epoch and seen % every == 0 and processes.any_process(interval.due(seen)):
          flusher.flush(seen, epoch)
          save(int(state.step), None)
      flusher.flush(seen, epoch)
      epoch_done = seen % steps_per_epoch == 0
      if epoch_done:
        seconds = time.perf_counter() - t0
        val = validation.validate(validation_fn, state.inference_params, val_loader, seed=config.train.seed,
                                  place=lambda b, rng: (placement.batch(b), sharding.place(rng, sharding.replicated(placement.mesh))))
        val_loss = val.get("val_loss")
        if val_loss is not None and not np.isfinite(val_loss):
          log.warning("epoch %d: the validation loss is %s (training loss %s)", epoch + 1, val_loss,
                      np.mean(flusher.epoch_losses) if flusher.epoch_losses else None)
        record = dict(epoch=epoch + 1, train_loss=float(np.mean(flusher.epoch_losses)) if flusher.epoch_losses
                      else None, **val, skipped=int(state.skipped), seconds=seconds)
        history.append(record)
        writer.write(int(state.step), {k: v for k, v in record.items() if v is not None}, prefix="epoch")
        if hook is not None and hook.due(epoch + 1):  # before the save: its rows are then in what it covers
          # With several processes the parameters are gathered (every process takes part) and process 0
          # runs the episodes.
          params = sharding.to_host(state.inference_params) if processes.multi_process() else state.inference_params
          if primary:
            hook.run(params, epoch=epoch + 1, step=int(state.step))
        save(int(state.step), val_loss)
      if seen >= max_steps or agreed_stop():
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
