"""The optimizer: one optax chain, clip_by_global_norm -> AdamW with a learning-rate schedule.

Masks decide two things per parameter (by its path in the tree):
- trainable or frozen: a top-level component named in `optim.frozen` (e.g. "vision"), a backbone whose
  `model.finetune` mode is "frozen", and everything but the LoRA adapters of a "lora" backbone are
  frozen. Frozen parameters get exactly zero updates (optax.set_to_zero) and no optimizer state, and
  their gradients do not count toward the clipping norm. `trainable_labels` is also what `summary`
  counts trainable parameters with;
- weight decay: `optim.decay="kernels"` decays matrices and conv kernels only (not biases, norm
  scales or embeddings), the usual practice; `"all"` decays everything, as torch.optim.AdamW does
  with a single parameter group (the original TinyVLA code).
"""

from __future__ import annotations

import jax
import optax

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


def make_optimizer(optim: OptimConfig, *, total_steps: int, params,
                   finetune: FinetuneConfig | None = None) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """-> (the transformation, its learning-rate schedule) for the `optim` config section and the model's
  `finetune` modes (None: every backbone trains fully)."""
  schedule = learning_rate_schedule(optim, total_steps=total_steps)
  parts = []
  if optim.grad_clip_norm is not None:
    parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                           weight_decay=optim.weight_decay,  # optax's default is 1e-4, torch's 0.01: explicit
                           mask=decay_mask(params, optim.decay)))
  tx = optax.chain(*parts)
  labels = trainable_labels(params, optim.frozen, finetune)
  # Only wrap when something is frozen: a fully trained model keeps the plain chain (and its state layout).
  if any(label == "frozen" for label in jax.tree.leaves(labels)):
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
