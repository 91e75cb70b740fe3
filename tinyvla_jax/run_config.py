"""A run's configuration, typed: one frozen dataclass per section, built in one place.

The config files (configs/*.py) speak ml_collections, with their `:preset` and `--config.x=y` overrides;
the entry points turn that into a `RunConfig` with `RunConfig.from_dict(config.to_dict())`, and nothing
below them reads a ConfigDict. `from_dict` is where an unknown key or a bad value becomes one line naming
the key to fix (before any data is loaded or anything compiled). A checkpoint stores `to_dict()`;
evaluation rebuilds the same `RunConfig` from it.

Sections: `model` (models/config.py), `data` (data/config.py), `diffusion` (diffusion/config.py), and
`pretrained`, `optim`, `train`, `eval`, `mesh` (devices: training/sharding.py) below. Each field's default is the seed recipe's value
(tinyvla_jax/recipes.py builds the ml_collections sections from these dataclasses, so a default has one home);
the `cpu` recipe's changes, with their reasons, are in recipes.cpu_recipe.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

from tinyvla_jax import checks
from tinyvla_jax.data.config import DataConfig, split_names
from tinyvla_jax.diffusion.config import DiffusionConfig
from tinyvla_jax.errors import UserError
from tinyvla_jax.models.config import VLAConfig

SCHEDULES = ("cosine", "constant")
DECAY_MODES = ("kernels", "all")
EXECUTIONS = ("receding", "ensemble")


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
  """Hugging Face folders (config.json, model.safetensors, tokenizer.json) imported at train start; their
  config.json then sets model.language / model.vision (pretrained/backbones.py)."""

  llm: str | None = None
  vision: str | None = None

  def validate(self) -> "PretrainedConfig":
    return self


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """clip_by_global_norm -> AdamW with warmup + cosine decay (training/optimizer.py)."""

  learning_rate: float = 1e-4
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.01
  schedule: str = "cosine"
  warmup_steps: int = 0
  grad_clip_norm: float | None = 1.0  # None: no clipping (the broken original)
  decay: str = "kernels"  # "kernels": matrices and conv kernels only; "all": every parameter (torch's AdamW)
  frozen: tuple[str, ...] = ()  # top-level components that get no updates, e.g. ("vision",)

  def validate(self) -> "OptimConfig":
    inf = float("inf")
    checks.in_range("optim.learning_rate", self.learning_rate, 0, inf, lo_open=True, hi_open=True)
    checks.in_range("optim.b1", self.b1, 0, 1, hi_open=True)
    checks.in_range("optim.b2", self.b2, 0, 1, hi_open=True)
    checks.in_range("optim.eps", self.eps, 0, inf, lo_open=True, hi_open=True)
    checks.in_range("optim.weight_decay", self.weight_decay, 0, inf, hi_open=True)
    checks.in_range("optim.grad_clip_norm", self.grad_clip_norm, 0, inf, lo_open=True, hi_open=True, optional=True)
    checks.int_at_least("optim.warmup_steps", self.warmup_steps, 0)
    checks.one_of("optim.schedule", self.schedule, SCHEDULES)
    checks.one_of("optim.decay", self.decay, DECAY_MODES)
    return self


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  # 3 epochs of the shipped MetaWorld demos at the seed's batch 4; the `cpu` recipe sets its own.
  # The seed's 10-epoch figure was for its own data; scripts/reproduce_seed.py sets epochs itself.
  batch_size: int = 4
  epochs: int = 3
  seed: int = 0
  # The seed's fix 2: no loss clipping. The broken original scaled the loss by 0.1 above 1000.
  loss_scale_threshold: float | None = None
  loss_scale_factor: float = 0.1
  skip_nonfinite: bool = True
  max_consecutive_skips: int = 50
  ema_decay: float | None = None  # e.g. 0.9999; the checkpoint's inference params are then the EMA
  ema_power: float | None = None  # Diffusion Policy's EMA warmup (0.75); None: a constant ema_decay
  noise_samples: int = 1  # noised copies of each chunk per observation encoding (training/step.py)
  # MetaWorld only: add this x the MSE of the condition's linear read-out of the object's and goal's positions
  # (replayed from each demo, sim/privileged.py; needs model.head.privileged_dim=6). 0: the denoising loss alone.
  privileged_weight: float = 0.0
  # Split each global batch into this many micro-batches whose gradients are averaged before one update
  # (a global batch larger than the devices hold); 1: none.
  grad_accum_steps: int = 1
  max_steps: int | None = None  # stop early (a checkpoint is saved); resuming continues the same run
  log_every: int = 10
  keep_checkpoints: int = 3
  tensorboard: bool = True
  # Mid-epoch checkpoints bound the work a kill loses: every N steps (0: off) and/or every N minutes
  # (0: off); epoch ends always save. A save of the cpu preset takes well under a second.
  checkpoint_every_steps: int = 0
  checkpoint_every_minutes: float = 5.0

  def validate(self) -> "TrainConfig":
    inf = float("inf")
    checks.int_at_least("train.batch_size", self.batch_size, 1)
    checks.int_at_least("train.epochs", self.epochs, 1)
    checks.int_at_least("train.seed", self.seed, 0)
    checks.int_at_least("train.max_steps", self.max_steps, 1, optional=True)
    checks.int_at_least("train.log_every", self.log_every, 1)
    checks.int_at_least("train.keep_checkpoints", self.keep_checkpoints, 1)
    checks.int_at_least("train.max_consecutive_skips", self.max_consecutive_skips, 0)
    checks.int_at_least("train.noise_samples", self.noise_samples, 1)
    checks.int_at_least("train.grad_accum_steps", self.grad_accum_steps, 1)
    checks.require("train.grad_accum_steps", self.grad_accum_steps, self.batch_size % self.grad_accum_steps == 0,
                   f"a divisor of train.batch_size={self.batch_size}")
    checks.int_at_least("train.checkpoint_every_steps", self.checkpoint_every_steps, 0)
    checks.in_range("train.checkpoint_every_minutes", self.checkpoint_every_minutes, 0, inf, hi_open=True)
    checks.in_range("train.ema_decay", self.ema_decay, 0, 1, hi_open=True, optional=True)
    checks.in_range("train.ema_power", self.ema_power, 0, inf, lo_open=True, hi_open=True, optional=True)
    checks.in_range("train.loss_scale_threshold", self.loss_scale_threshold, 0, inf, lo_open=True, hi_open=True,
                    optional=True)
    checks.in_range("train.loss_scale_factor", self.loss_scale_factor, 0, inf, lo_open=True, hi_open=True)
    checks.in_range("train.privileged_weight", self.privileged_weight, 0, inf, hi_open=True)
    return self


@dataclasses.dataclass(frozen=True)
class Protocol:
  """The closed-loop evaluation protocol (evaluation/protocol.py explains each number): the `evaluate`
  CLI's defaults and the `eval` section's protocol fields."""

  episodes: int = 20
  seed: int = 1000
  max_steps: int = 200
  execution: str = "receding"
  action_steps: int = 4
  ensemble_k: float = 0.01

  def validate(self) -> "Protocol":
    checks.int_at_least("eval.episodes", self.episodes, 1)
    checks.int_at_least("eval.seed", self.seed, 0)
    checks.int_at_least("eval.max_steps", self.max_steps, 1)
    checks.one_of("eval.execution", self.execution, EXECUTIONS)
    checks.int_at_least("eval.action_steps", self.action_steps, 1)
    checks.in_range("eval.ensemble_k", self.ensemble_k, 0, float("inf"), hi_open=True)
    return self


@dataclasses.dataclass(frozen=True)
class EvalConfig(Protocol):
  """Closed-loop MetaWorld evaluation (needs the `sim` extra), on setups the data never used, with the
  protocol of `python -m tinyvla_jax.evaluate`. `every_epochs=N` evaluates every N epochs during training
  (success rates in metrics.jsonl / TensorBoard under "eval/"); `at_end` evaluates the final checkpoint when
  the run completes and prints the table (skipped with a note when MetaWorld is not installed or the data
  is not MetaWorld's)."""

  every_epochs: int = 0
  at_end: bool = True
  tasks: str = ""  # comma-separated; "": the tasks of the training data
  video: bool = True

  @property
  def protocol(self) -> Protocol:
    return Protocol(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Protocol)})

  @property
  def task_list(self) -> list[str] | None:
    return split_names(self.tasks)

  def validate(self) -> "EvalConfig":
    super().validate()
    checks.int_at_least("eval.every_epochs", self.every_epochs, 0)
    return self


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """`mesh.data` x `mesh.fsdp` devices (-1: all the devices the other axis leaves), and the size from
  which a parameter is split over `fsdp` (smaller ones are replicated: splitting them costs more in
  collectives than it saves in memory). The default is data parallelism over every device."""

  data: int = -1
  fsdp: int = 1
  fsdp_min_mib: float = 4.0

  def validate(self) -> "MeshConfig":
    for key in ("data", "fsdp"):
      value = getattr(self, key)
      checks.require(f"mesh.{key}", value, isinstance(value, int) and not isinstance(value, bool)
                     and (value == -1 or value >= 1), "an integer >= 1, or -1 for all remaining devices")
    if self.data == -1 and self.fsdp == -1:
      raise UserError("--config.mesh.data=-1 and --config.mesh.fsdp=-1: at most one axis may take the "
                      "remaining devices; give the other a size")
    checks.in_range("mesh.fsdp_min_mib", self.fsdp_min_mib, 0, float("inf"), hi_open=True)
    return self

  def shape(self, num_devices: int) -> tuple[int, int]:
    """(data, fsdp) for `num_devices`, -1 resolved; a shape the devices cannot fill is one line."""
    data, fsdp = self.data, self.fsdp
    if data == -1 or fsdp == -1:
      known = fsdp if data == -1 else data
      if num_devices % known:
        raise UserError(f"--config.mesh.{'fsdp' if data == -1 else 'data'}={known} does not divide the "
                        f"{num_devices} devices: pick a divisor of {num_devices}")
      data, fsdp = (num_devices // known, known) if data == -1 else (known, num_devices // known)
    if data * fsdp != num_devices:
      raise UserError(f"--config.mesh.data={data} x --config.mesh.fsdp={fsdp} = {data * fsdp} devices, but "
                      f"{num_devices} are available: make the product {num_devices} (or set one axis to -1)")
    return data, fsdp


SECTIONS = {"pretrained": PretrainedConfig, "data": DataConfig, "diffusion": DiffusionConfig,
            "optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig, "mesh": MeshConfig}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a training run, its evaluation and the policy built from its checkpoint need."""

  model: VLAConfig = dataclasses.field(default_factory=VLAConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  diffusion: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  pretrained: PretrainedConfig = dataclasses.field(default_factory=PretrainedConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  preset: str = "run"

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
    """From a plain mapping (`config.to_dict()` of an ml_collections config, or a checkpoint's stored
    config): unknown keys and bad values are one-line errors; a missing section or key takes its default."""
    d = dict(d)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise UserError(f"unknown config section(s) {', '.join(unknown)}; valid: "
                       f"{', '.join(f.name for f in dataclasses.fields(cls))}")
    kwargs: dict[str, Any] = {}
    if d.get("model") is not None:
      kwargs["model"] = VLAConfig.from_dict(d["model"])
    for name, section in SECTIONS.items():
      if d.get(name) is not None:
        kwargs[name] = build_section(section, d[name], name)
    if d.get("preset") is not None:
      kwargs["preset"] = str(d["preset"])
    return cls(**kwargs).validate()

  def validate(self) -> "RunConfig":
    for name in SECTIONS:
      getattr(self, name).validate()
    self.model.validate()
    if self.train.privileged_weight > 0:
      checks.require("model.head.privileged_dim", self.model.head.privileged_dim, self.model.head.privileged_dim > 0,
                     f"> 0 with train.privileged_weight={self.train.privileged_weight} (6 for MetaWorld: the "
                     "object's and goal's xyz)")
      checks.require("data.source", self.data.source, self.data.source == "metaworld",
                     "'metaworld' with train.privileged_weight > 0 (only MetaWorld demos can be replayed)")
    horizon = self.model.head.horizon
    if self.eval.execution == "receding":
      # A chunk has `horizon` actions: asking to execute more would silently execute fewer.
      checks.require("eval.action_steps", self.eval.action_steps, self.eval.action_steps <= horizon,
                     f"<= model.head.horizon={horizon} (the actions one chunk holds)")
    return self

  def replace(self, **changes) -> "RunConfig":
    """A copy with whole sections replaced, e.g. `run.replace(model=...)`, validated again."""
    return dataclasses.replace(self, **changes).validate()

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready (tuples as lists): what a checkpoint stores and `from_dict` reads back."""
    return _jsonable(dataclasses.asdict(self))


def with_backbones(run: RunConfig) -> RunConfig:
  """The run config whose model sections the pretrained folders fix (their config.json sizes, the tokenizer's
  image placeholder id): what training builds the model from and the checkpoint stores, so evaluation needs
  no folders (pretrained/backbones.py). Without folders only the placeholder id follows `data.tokenizer`."""
  from tinyvla_jax.data.tokenizer import make_tokenizer
  from tinyvla_jax.pretrained.backbones import resolve_model

  llm, vision = run.pretrained.llm or None, run.pretrained.vision or None
  tokenizer = make_tokenizer(run.data.tokenizer, llm_folder=llm)
  model = resolve_model(run.model, tokenizer=tokenizer, llm=llm, vision=vision)
  return run if model == run.model else run.replace(model=model)


def build_section(cls, values: Mapping[str, Any], prefix: str):
  """A section dataclass from a mapping: unknown keys are one line; a value of the wrong type (a string
  where a number goes) is one line naming the key; lists become tuples."""
  if isinstance(values, cls):
    return values
  values = dict(values)
  hints = typing.get_type_hints(cls)
  checks.known_keys(values, [f.name for f in dataclasses.fields(cls) if f.init], prefix)
  for key, value in list(values.items()):
    values[key] = _coerce(value, hints[key], f"{prefix}.{key}")
  return cls(**values)


def _coerce(value, hint, key: str):
  """Checks a value against its field's annotation (bool, int, float, str, tuple[str, ...], X | None); an int
  for a float field becomes a float."""
  options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UNION) else (hint,)
  if value is None:
    if type(None) in options:
      return None
    raise UserError(f"--config.{key}=None is not allowed: it needs a value of type {_name(options)}")
  for kind in options:
    if kind is type(None):
      continue
    if kind is bool and isinstance(value, bool):
      return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
      return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if kind is str and isinstance(value, str):
      return value
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
      return tuple(value)
  raise UserError(f"--config.{key}={value!r} must be of type {_name(options)}")


_UNION = type(int | None)


def _name(options) -> str:
  return " or ".join(getattr(k, "__name__", str(k)) for k in options if k is not type(None))


def _jsonable(value):
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value
