"""Frozen, typed model configurations.

The command line speaks ml_collections (``configs/*.py``); the modules speak these dataclasses.
``VLAConfig.from_dict`` is the one bridge between the two, and it is where a wrong key or a
wrong value becomes a one-line error that names the config key to fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from tinyvla_jax import checks
from tinyvla_jax.errors import UserError

INIT_SCHEMES = ("fixed", "torch_default")
CONV_IMPLS = ("auto", "xla", "im2col")
PROJECTOR_TYPES = ("linear", "mlp2x_gelu", "mlp2x_gelu_ln")
ACTIVATIONS = ("quick_gelu", "gelu", "gelu_tanh")
STEMS = ("patch", "conv")
FINETUNE_MODES = ("full", "lora", "frozen")
# How the global condition is read out of the decoder's hidden states (models/readout.py).
READOUTS = ("mean", "split_mean", "spatial_softmax", "attention")
KEYPOINT_SOURCES = ("decoder", "vision")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """A pre-LN ViT in the CLIP layout (SigLIP differs only in the switches below)."""

  image_size: int = 32
  patch_size: int = 8
  width: int = 32
  depth: int = 2
  num_heads: int = 2
  mlp_dim: int = 128
  # Index into the hidden-state list in the Hugging Face convention (0 = embeddings, -1 = last
  # layer). TinyVLA/LLaVA read the second-to-last layer; layers after it are never built.
  select_layer: int = -2
  act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  patch_bias: bool = False  # CLIP: False, SigLIP: True.
  class_token: bool = True  # CLIP: True, SigLIP: False. Dropped from the output either way.
  pre_layernorm: bool = True  # CLIP's `pre_layrnorm`; SigLIP has none.
  # How pixels become tokens: "patch" (CLIP/SigLIP: one linear map per patch_size x patch_size patch) or
  # "conv" (a convolutional stem: stride-2 3x3 convs down to the same patch grid, then that linear map;
  # Xiao et al. 2021, "Early convolutions help transformers see better"). From-scratch models only: no
  # pretrained CLIP/SigLIP has the conv stem's weights.
  stem: str = "patch"
  stem_channels: int = 32  # width of the conv stem's first conv (doubling at each stride-2 conv)

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def num_layers_run(self) -> int:
    """How many encoder layers `select_layer` needs (hidden state i is after layer i)."""
    idx = self.select_layer if self.select_layer >= 0 else self.depth + 1 + self.select_layer
    return idx

  def validate(self, prefix: str = "model.vision") -> None:
    _check(self.image_size % self.patch_size == 0,
           f"{prefix}.image_size={self.image_size} must be divisible by {prefix}.patch_size={self.patch_size}")
    _check(self.width % self.num_heads == 0,
           f"{prefix}.width={self.width} must be divisible by {prefix}.num_heads={self.num_heads}")
    _check(1 <= self.num_layers_run <= self.depth,
           f"{prefix}.select_layer={self.select_layer} selects no encoder layer of {self.depth}: "
           f"use -1..-{self.depth} or 1..{self.depth}")
    _check(self.act in ACTIVATIONS, f"{prefix}.act={self.act!r} must be one of {ACTIVATIONS}")
    _check(self.stem in STEMS, f"{prefix}.stem={self.stem!r} must be one of {STEMS}")
    if self.stem == "conv":
      p = self.patch_size
      _check(p >= 2 and p & (p - 1) == 0,
             f"{prefix}.stem='conv' halves the image log2(patch_size) times: {prefix}.patch_size={p} must be a power of 2")


@dataclasses.dataclass(frozen=True)
class LanguageConfig:
  """GPT-NeoX / Pythia decoder. Field names follow the Hugging Face config.json."""

  vocab_size: int = 260
  hidden_size: int = 64
  num_hidden_layers: int = 2
  num_attention_heads: int = 4
  intermediate_size: int = 256
  rotary_pct: float = 0.25
  rotary_emb_base: float = 10000.0
  max_position_embeddings: int = 2048
  use_parallel_residual: bool = True
  layer_norm_eps: float = 1e-5
  hidden_act: str = "gelu"  # Exact (erf) GELU, as Pythia.

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def rotary_ndims(self) -> int:
    return int(self.head_dim * self.rotary_pct)

  def validate(self, prefix: str = "model.language") -> None:
    _check(self.hidden_size % self.num_attention_heads == 0,
           f"{prefix}.hidden_size={self.hidden_size} must be divisible by "
           f"{prefix}.num_attention_heads={self.num_attention_heads}")
    _check(self.rotary_ndims % 2 == 0,
           f"{prefix}.rotary_pct={self.rotary_pct} gives an odd rotary width {self.rotary_ndims}; "
           "choose it so that head_dim * rotary_pct is even")
    _check(self.hidden_act in ACTIVATIONS,
           f"{prefix}.hidden_act={self.hidden_act!r} must be one of {ACTIVATIONS}")


@dataclasses.dataclass(frozen=True)
class ActionHeadConfig:
  """Diffusion Policy's ConditionalUnet1D with TinyVLA's condition encoder in front."""

  action_dim: int = 4
  state_dim: int = 4
  horizon: int = 16
  down_dims: tuple[int, ...] = (32, 64, 128)
  kernel_size: int = 5
  n_groups: int = 8
  step_embed_dim: int = 32
  cond_predict_scale: bool = True  # FiLM scale + bias (TinyVLA), not bias only.
  conv_impl: str = "auto"
  # Readout of the condition from the decoder (models/readout.py): "mean" (TinyVLA: masked mean over every
  # token), "split_mean" (text tokens and image tokens averaged apart), "spatial_softmax" (Diffusion
  # Policy's keypoints on each view's patch grid + the text mean), "attention" (learned queries).
  readout: str = "mean"
  num_keypoints: int = 32  # spatial_softmax: keypoints per view
  # spatial_softmax: keypoints of the decoder's final hidden states at the image positions ("decoder"), or of
  # the projected vision tokens the decoder receives ("vision"; the text mean still comes from the decoder).
  keypoint_source: str = "decoder"
  num_queries: int = 4  # attention: learned queries
  # A linear map from the condition to this many privileged scene coordinates (MetaWorld: the object's and
  # the goal's xyz), trained by the auxiliary loss train.privileged_weight; 0: none. Inference never uses it.
  privileged_dim: int = 0

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.down_dims) - 1)

  def validate(self, prefix: str = "model.head") -> None:
    f = self.downsample_factor
    _check(self.horizon > 0 and self.horizon % f == 0,
           f"{prefix}.horizon={self.horizon} must be a positive multiple of {f} "
           f"(the U-Net halves it {len(self.down_dims) - 1} times): use e.g. {max(f, 16)}")
    for d in self.down_dims:
      _check(d % self.n_groups == 0,
             f"{prefix}.down_dims={self.down_dims}: {d} is not divisible by {prefix}.n_groups={self.n_groups}")
    _check(self.step_embed_dim % 2 == 0 and self.step_embed_dim >= 4,
           f"{prefix}.step_embed_dim={self.step_embed_dim} must be even and >= 4")
    _check(self.kernel_size % 2 == 1,
           f"{prefix}.kernel_size={self.kernel_size} must be odd ('same' padding k//2, as Diffusion Policy)")
    _check(self.conv_impl in CONV_IMPLS, f"{prefix}.conv_impl={self.conv_impl!r} must be one of {CONV_IMPLS}")
    _check(self.readout in READOUTS, f"{prefix}.readout={self.readout!r} must be one of {READOUTS}")
    _check(self.num_keypoints >= 1, f"{prefix}.num_keypoints={self.num_keypoints} must be >= 1")
    _check(self.keypoint_source in KEYPOINT_SOURCES,
           f"{prefix}.keypoint_source={self.keypoint_source!r} must be one of {KEYPOINT_SOURCES}")
    _check(self.num_queries >= 1, f"{prefix}.num_queries={self.num_queries} must be >= 1")
    _check(self.privileged_dim >= 0, f"{prefix}.privileged_dim={self.privileged_dim} must be >= 0")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapters on a Dense layer (peft's LoRA): y = x W + b + dropout(x) A B * alpha / rank.

  Hashable, so modules can carry it as a field. Built from FinetuneConfig, never from the command line.
  """

  rank: int
  alpha: float
  dropout: float

  @property
  def scaling(self) -> float:
    return self.alpha / self.rank


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """How each backbone trains: "full" (every weight), "lora" (adapters on every Dense of its
  transformer layers; the rest frozen) or "frozen". The projector and the action head always train.

  The model reads only whether a backbone has adapters; the optimizer reads the rest (training/optimizer.py).
  TinyVLA: LoRA r=64, alpha=256, dropout 0.05 on both the LLM and the vision tower.
  """

  vision: str = "full"
  language: str = "full"
  lora_rank: int = 64
  lora_alpha: float = 256.0
  lora_dropout: float = 0.05

  def mode(self, component: str) -> str:
    """The mode of a top-level parameter group; components other than the backbones train fully."""
    return getattr(self, component) if component in ("vision", "language") else "full"

  def lora_for(self, component: str) -> LoraConfig | None:
    if self.mode(component) != "lora":
      return None
    return LoraConfig(rank=self.lora_rank, alpha=float(self.lora_alpha), dropout=float(self.lora_dropout))

  def validate(self, prefix: str = "model.finetune") -> None:
    for name in ("vision", "language"):
      mode = getattr(self, name)
      _check(mode in FINETUNE_MODES, f"{prefix}.{name}={mode!r} must be one of {FINETUNE_MODES}")
    _check(self.lora_rank >= 1, f"{prefix}.lora_rank={self.lora_rank} must be >= 1")
    _check(self.lora_alpha > 0, f"{prefix}.lora_alpha={self.lora_alpha} must be > 0")
    _check(0.0 <= self.lora_dropout < 1.0, f"{prefix}.lora_dropout={self.lora_dropout} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class VLAConfig:
  vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
  language: LanguageConfig = dataclasses.field(default_factory=LanguageConfig)
  head: ActionHeadConfig = dataclasses.field(default_factory=ActionHeadConfig)
  finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
  projector: str = "mlp2x_gelu"
  num_cameras: int = 1
  # Observation history (Diffusion Policy's n_obs_steps): the model sees the frames and states of the
  # last `obs_steps` steps. Images arrive as obs_steps * num_cameras views (oldest frame first), the state
  # as obs_steps states concatenated, so the head's state input is obs_steps * head.state_dim wide.
  obs_steps: int = 1
  # With obs_steps > 1, whether the older steps' images are encoded too. False: only the newest step's
  # cameras go through the ViT and the decoder (the head still reads every step's state, which carries the
  # robot's motion), about half the encoders' cost at obs_steps=2. The data keeps obs_steps frames either
  # way, so a checkpoint's inputs do not depend on this switch.
  image_history: bool = True
  init: str = "fixed"
  dtype: str = "float32"  # Compute dtype; parameters stay float32.
  # How the weights that do not train (frozen backbones, everything but LoRA adapters) are stored: bfloat16
  # halves their memory; they are cast up to the compute dtype where used (training/loop.py build_state).
  frozen_dtype: str = "float32"
  # Rematerialize each transformer layer (ViT and decoder) in the backward pass instead of keeping its
  # activations: less memory for about one more forward pass of compute.
  remat: bool = False
  # Run the ViT's and the decoder's layers as one lax.scan each over their stacked weights: XLA compiles
  # one layer instead of every layer (the deep presets' first compile), the parameter tree is unchanged
  # (models/layer_stack.py), and each call copies the layers' weights once to stack them.
  scan_layers: bool = False
  # Token id that marks where the image tokens go in the prompt. The byte tokenizer's IMAGE id by
  # default; with a pretrained tokenizer, the first id past its vocabulary (data/hf_tokenizer.py).
  image_token_id: int = 3

  @property
  def num_views(self) -> int:
    """Images per example: every camera at every observed step."""
    return self.num_cameras * self.obs_steps

  @property
  def encoded_views(self) -> int:
    """Images the ViT encodes per example: every camera at every observed step, or at the newest only."""
    return self.num_cameras * (self.obs_steps if self.image_history else 1)

  @property
  def state_width(self) -> int:
    """The state vector the head reads: `obs_steps` robot states concatenated."""
    return self.head.state_dim * self.obs_steps

  def validate(self) -> "VLAConfig":
    self.vision.validate()
    self.language.validate()
    self.head.validate()
    self.finetune.validate()
    _check(self.projector in PROJECTOR_TYPES,
           f"model.projector={self.projector!r} must be one of {PROJECTOR_TYPES}")
    _check(self.init in INIT_SCHEMES, f"model.init={self.init!r} must be one of {INIT_SCHEMES}")
    _check(self.num_cameras >= 1, f"model.num_cameras={self.num_cameras} must be >= 1")
    _check(self.obs_steps >= 1, f"model.obs_steps={self.obs_steps} must be >= 1")
    _check(self.dtype in ("float32", "bfloat16"), f"model.dtype={self.dtype!r} must be float32 or bfloat16")
    _check(self.frozen_dtype in ("float32", "bfloat16"),
           f"model.frozen_dtype={self.frozen_dtype!r} must be float32 or bfloat16")
    _check(isinstance(self.image_history, bool),
           f"model.image_history={self.image_history!r} must be true or false")
    _check(isinstance(self.remat, bool), f"model.remat={self.remat!r} must be true or false")
    _check(isinstance(self.scan_layers, bool), f"model.scan_layers={self.scan_layers!r} must be true or false")
    return self

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "VLAConfig":
    """Builds from a (ConfigDict-like) mapping; unknown keys are a one-line error."""
    d = dict(d)
    sub = {"vision": VisionConfig, "language": LanguageConfig, "head": ActionHeadConfig,
           "finetune": FinetuneConfig}
    kwargs = {}
    for name, value in d.items():
      if name in sub:
        kwargs[name] = _build(sub[name], value, f"model.{name}")
      else:
        kwargs[name] = value
    return _build(cls, kwargs, "model", nested_ok=True).validate()

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _build(cls, values, prefix: str, nested_ok: bool = False):
  if isinstance(values, cls):
    return values
  values = dict(values)
  checks.known_keys(values, [f.name for f in dataclasses.fields(cls)], prefix)
  for k, v in list(values.items()):
    if isinstance(v, list):
      values[k] = tuple(v)
  return cls(**values)


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise UserError(message)
