"""Parameter counts per component, from shapes only (`jax.eval_shape`: no weights are allocated).

  python -m tinyvla_jax.summary --config configs/fixed.py:s
  python -m tinyvla_jax.summary --config configs/fixed.py:s --config.model.head.action_dim=10 \
      --config.model.head.state_dim=7      # the paper's head: 72.83M

Each row counts all of a component's parameters (LoRA adapters included) and the trainable ones under
`model.finetune` and `optim.frozen`, with the optimizer's own masks (training/optimizer.py). With
--config.pretrained.llm/vision the backbone sizes come from the folders' config.json, as in training.
"""

from __future__ import annotations

import math

import jax
from absl import app
from ml_collections import config_flags

from tinyvla_jax import cli, recipes

from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params
from tinyvla_jax.run_config import with_backbones
from tinyvla_jax.training.optimizer import trainable_labels

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/fixed.py:s", lock_config=True)

# Display order and names of the model's top-level parameter groups.
COMPONENTS = (("vision", "vision"), ("projector", "projector"), ("language", "language"),
              ("head", "action head"))


def count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def param_shapes(config: VLAConfig):
  model = UnifiedTinyVLAModel(config)
  return jax.eval_shape(lambda: init_params(model, jax.random.key(0)))


def component_counts(config: VLAConfig, *, frozen: tuple[str, ...] | None = None) -> dict[str, int]:
  """{component name: parameter count}, plus the action head's two parts and "total".

  With `frozen` (optim.frozen; () for none) it counts the trainable parameters instead.
  """
  shapes = param_shapes(config)
  if frozen is not None:
    labels = trainable_labels(shapes, tuple(frozen), config.finetune)
    shapes = jax.tree.map(lambda x, label: x if label == "train" else None, shapes, labels)
  counts = {label: count(shapes.get(key, {})) for key, label in COMPONENTS}
  head = shapes.get("head", {})
  counts["  condition encoder"] = count(head.get("condition", {}))
  counts["  U-Net"] = count(head.get("unet", {}))
  counts["total"] = count(shapes)
  return counts


def format_table(counts: dict[str, int], title: str, trainable: dict[str, int] | None = None) -> str:
  header = ("component", "params", "", "trainable", "") if trainable else ("component", "params", "")
  rows = [(name, f"{n:,}", f"{n / 1e6:.2f}M") for name, n in counts.items()]
  if trainable:
    rows = [r + (f"{trainable[r[0]]:,}", f"{trainable[r[0]] / 1e6:.2f}M") for r in rows]
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
  line = lambda r: " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
  out = [title, line(header), "-+-".join("-" * w for w in widths)]
  out += [line(r) for r in rows]
  return "\n".join(out)


def main(argv):
  del argv
  cfg = cli.config_value(_CONFIG)
  if cfg is None:
    raise app.UsageError("pass --config configs/fixed.py:PRESET")
  run = with_backbones(recipes.typed(cfg))
  model_cfg = run.model
  h, f = model_cfg.head, model_cfg.finetune
  title = (f"preset {run.preset}: vision {model_cfg.vision.image_size}px/{model_cfg.vision.patch_size} "
           f"x{model_cfg.vision.depth}, LLM {model_cfg.language.hidden_size}x{model_cfg.language.num_hidden_layers}, "
           f"head down_dims {tuple(h.down_dims)}, action_dim {h.action_dim}, state_dim {h.state_dim}; "
           f"finetune vision={f.vision} language={f.language}"
           + (f" (LoRA r={f.lora_rank}, alpha={f.lora_alpha:g})" if "lora" in (f.vision, f.language) else ""))
  frozen = run.optim.frozen
  print(format_table(component_counts(model_cfg), title, trainable=component_counts(model_cfg, frozen=frozen)))


if __name__ == "__main__":
  cli.run(main)
