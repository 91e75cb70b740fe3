"""Start-of-run checks: the numbers in a config (a NaN learning rate or a batch size of 0 is one line
naming the key, before any data is loaded or anything compiled, not a NaN update minutes later), then
the data against the model config (action/state sizes, cameras, image size)."""

from __future__ import annotations

import math

from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import VLAConfig


def _check(key: str, value, ok: bool, want: str) -> None:
  if not ok:
    raise UserError(f"--config.{key}={value!r} must be {want}")


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _in(key, value, lo, hi, *, lo_open=False, hi_open=False, optional=False) -> None:
  if optional and value is None:
    return
  ok = _number(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
  _check(key, value, ok, f"a finite number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
         + (" or None" if optional else ""))


def _int_at_least(key, value, lo, *, optional=False) -> None:
  if optional and value is None:
    return
  _check(key, value, isinstance(value, int) and not isinstance(value, bool) and value >= lo,
         f"an integer >= {lo}" + (" or None" if optional else ""))


def check_run_config(config) -> None:
  """Every optimizer, training and data number the loop uses: finite, and in its range."""
  o, t, d = config.optim, config.train, config.data
  inf = math.inf
  _in("optim.learning_rate", o.learning_rate, 0, inf, lo_open=True, hi_open=True)
  _in("optim.b1", o.b1, 0, 1, hi_open=True)
  _in("optim.b2", o.b2, 0, 1, hi_open=True)
  _in("optim.eps", o.eps, 0, inf, lo_open=True, hi_open=True)
  _in("optim.weight_decay", o.weight_decay, 0, inf, hi_open=True)
  _in("optim.grad_clip_norm", o.grad_clip_norm, 0, inf, lo_open=True, hi_open=True, optional=True)
  _int_at_least("optim.warmup_steps", o.warmup_steps, 0)
  _int_at_least("train.batch_size", t.batch_size, 1)
  _int_at_least("train.epochs", t.epochs, 1)
  _int_at_least("train.max_steps", t.max_steps, 1, optional=True)
  _int_at_least("train.log_every", t.log_every, 1)
  _int_at_least("train.keep_checkpoints", t.keep_checkpoints, 1)
  _int_at_least("train.max_consecutive_skips", t.max_consecutive_skips, 0)
  _int_at_least("train.noise_samples", t.noise_samples, 1)
  _int_at_least("train.checkpoint_every_steps", t.checkpoint_every_steps, 0)
  _in("train.checkpoint_every_minutes", t.checkpoint_every_minutes, 0, inf, hi_open=True)
  _in("train.ema_decay", t.ema_decay, 0, 1, hi_open=True, optional=True)
  _in("train.ema_power", t.ema_power, 0, inf, lo_open=True, hi_open=True, optional=True)
  _in("train.loss_scale_threshold", t.loss_scale_threshold, 0, inf, lo_open=True, hi_open=True, optional=True)
  _in("data.val_fraction", d.val_fraction, 0, 1, hi_open=True)
  _in("data.crop_fraction", d.crop_fraction, 0, 1, lo_open=True)
  _in("data.state_dropout", d.state_dropout, 0, 1)
  _int_at_least("data.max_text_len", d.max_text_len, 1)
  ev = config.get("eval")
  if ev is not None and ev.get("execution", "receding") == "receding":
    _int_at_least("eval.action_steps", ev.action_steps, 1)
    horizon = config.model.head.horizon
    # A chunk has `horizon` actions: asking to execute more would silently execute fewer.
    _check("eval.action_steps", ev.action_steps, ev.action_steps <= horizon,
           f"<= model.head.horizon={horizon} (the actions one chunk holds)")


def check_data_matches_model(episodes: list[Episode], model: VLAConfig) -> None:
  """The data's sizes must be the model's: one line naming the config key to change otherwise."""
  ep = episodes[0]
  checks = [("model.head.action_dim", model.head.action_dim, ep.actions.shape[1]),
            ("model.head.state_dim", model.head.state_dim, ep.states.shape[1]),
            ("model.num_cameras", model.num_cameras, ep.images.shape[1])]
  for key, want, got in checks:
    if want != got:
      raise UserError(f"the data has {got} where {key}={want}: set --config.{key}={got}")
  size = ep.images.shape[2]
  if size < model.vision.image_size:
    raise UserError(f"the data's images are {size} px but model.vision.image_size={model.vision.image_size}: "
                     f"collect with --size >= {model.vision.image_size}")
