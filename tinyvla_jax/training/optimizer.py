"""The optimizer: one optax chain, clip_by_global_norm -> AdamW with a learning-rate schedule.

Masks decide two things per parameter (by its path in the tree):
- trainable or frozen: a top-level component named in `optim.frozen` (e.g. "vision"), a backbone whose
  `model.finetune` mode is "frozen", and everything but the LoRA adapters of a "lora" backbone are
  frozen. The optimizer knows its `Partition` (`tx.partition`): the train step differentiates the
  trainable parameters only (the frozen ones enter the loss as constants, so XLA never computes their
  weight gradients: the LoRA presets' backward pass skips every frozen CLIP and Pythia matrix), the
  optimizer state and the EMA cover only them, and the logged gradient norm is the one clipping sees.
  `trainable_labels` is also what `summary` counts trainable parameters with;
- weight decay: `optim.decay="kernels"` decays matrices and conv kernels only (not biases, norm
  scales or embeddings), the usual practice; `"all"` decays everything, as torch.optim.AdamW does
  with a single parameter group (the original TinyVLA code).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import optax
from flax import traverse_util

from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import FinetuneConfig
from tinyvla_jax.models.lora import is_adapter
from tinyvla_jax.run_config import DECAY_MODES, SCHEDULES, OptimConfig


def learning_rate_schedule(optim: OptimConfig, *, total_steps: int) -> optax.Schedule:
  """Linear warmup (optional) then cosine decay to 0 over the run, or a constant rate."""
  lr, warmup = optim.learning_rate, optim.warmup_steps
  if optim.schedule not in SCHEDULES:
    raise UserError(f"optim.schedule={optim.schedule!r} must be one of {SCHEDULES}")
  if optim.schedule == "constant":
    return optax.constant_schedule(lr)
  if total_steps < 1 or warmup >= total_steps:
    raise UserError(f"optim.warmup_steps={warmup} must be smaller than the run's {total_steps} steps")
  if warmup == 0:
    return optax.cosine_decay_schedule(lr, decay_steps=total_steps)
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=total_steps)


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", k)) for k in path)


def decay_mask(params, mode: str):
  if mode not in DECAY_MODES:
    raise UserError(f"optim.decay={mode!r} must be one of {DECAY_MODES}")
  if mode == "all":
    return jax.tree.map(lambda _: True, params)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim >= 2 and "embedding" not in _path_names(path)[-1], params)


def trainable_labels(params, frozen: tuple[str, ...], finetune: FinetuneConfig | None = None):
  """{component: tree of "train" / "frozen"} for `optim.frozen` and the backbones' `model.finetune` modes."""
  unknown = set(frozen) - set(params)
  if unknown:
    raise UserError(f"optim.frozen names {sorted(unknown)}, which are not model components; "
                     f"choose from {sorted(params)}")
  finetune = finetune or FinetuneConfig()

  def labels(component, tree):
    mode = "frozen" if component in frozen else finetune.mode(component)
    if mode == "lora":
      return jax.tree_util.tree_map_with_path(lambda path, _: "train" if is_adapter(path) else "frozen", tree)
    return jax.tree.map(lambda _: "frozen" if mode == "frozen" else "train", tree)

  return {k: labels(k, v) for k, v in params.items()}


@dataclasses.dataclass(frozen=True)
class Partition:
  """Which parameters train: `split(params) -> (trainable, frozen)`, two nested dicts holding only their
  own leaves, and `merge` its inverse. With nothing frozen, split returns the tree itself (and an empty
  dict), so a fully trained model's step is exactly what it was without a partition."""

  frozen_paths: frozenset = frozenset()  # of tuples of keys (flax.traverse_util.flatten_dict paths)

  @classmethod
  def from_labels(cls, labels) -> "Partition":
    flat = traverse_util.flatten_dict(labels)
    return cls(frozenset(path for path, label in flat.items() if label == "frozen"))

  @property
  def freezes_something(self) -> bool:
    return bool(self.frozen_paths)

  def split(self, params) -> tuple[Any, Any]:
    if not self.frozen_paths:
      return params, {}
    flat = traverse_util.flatten_dict(params)
    trainable = {k: v for k, v in flat.items() if k not in self.frozen_paths}
    frozen = {k: v for k, v in flat.items() if k in self.frozen_paths}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)

  def merge(self, trainable, frozen) -> Any:
    if not self.frozen_paths:
      return trainable
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen),
                                         **traverse_util.flatten_dict(trainable)})


class TrainableOptimizer(NamedTuple):
  """An optax transformation of the trainable parameters (`partition.split(params)[0]`) that carries its
  partition, so the state and the step built from it know what to differentiate."""

  init: Any
  update: Any
  partition: Partition


def make_optimizer(optim: OptimConfig, *, total_steps: int, params,
                   finetune: FinetuneConfig | None = None) -> tuple[TrainableOptimizer, optax.Schedule]:
  """-> (the transformation of the trainable parameters, its learning-rate schedule) for the `optim` config
  section and the model's `finetune` modes (None: every backbone trains fully)."""
  schedule = learning_rate_schedule(optim, total_steps=total_steps)
  partition = Partition.from_labels(trainable_labels(params, optim.frozen, finetune))
  trainable, _ = partition.split(params)
  parts = []
  if optim.grad_clip_norm is not None:
    parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                           weight_decay=optim.weight_decay,  # optax's default is 1e-4, torch's 0.01: explicit
                           mask=decay_mask(trainable, optim.decay)))
  tx = optax.chain(*parts)
  return TrainableOptimizer(tx.init, tx.update, partition), schedule


def partition_of(tx) -> Partition:
  """The partition a transformation trains (everything, for a plain optax transformation)."""
  return getattr(tx, "partition", None) or Partition()
