"""Our ConditionalUnet1D's parameters <-> LeRobot's `DiffusionConditionalUnet1d` state dict (numpy only).

LeRobot's Diffusion Policy U-Net (lerobot.policies.diffusion.modeling_diffusion) is the same network as
ours (models/action_head.py): both follow Diffusion Policy's ConditionalUnet1D with a global condition.
The map renames and transposes; it needs neither torch nor lerobot, so a LeRobot checkpoint's U-Net can be
read from its safetensors with numpy and a head trained here can be handed to LeRobot code.

Layouts: a torch Conv1d weight is [out, in, K] (ours [K, in, out]); a ConvTranspose1d weight is
[in, out, K] (ours [K, in, out]); a Linear weight is [out, in] (ours [in, out]); GroupNorm weight/bias are
our norm scale/bias. `tests/models/test_lerobot_unet.py` checks the outputs agree with LeRobot's module.
One difference the weights cannot show: LeRobot's (and Diffusion Policy's) final Conv1dBlock always has 8
groups, ours `model.head.n_groups`; the networks are the same when that is 8, as in every preset.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from tinyvla_jax.errors import UserError


def _conv(ours: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(ours, (2, 1, 0)))  # [K, in, out] <-> [out, in, K]


def _conv_transpose_to_torch(ours: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(ours, (1, 2, 0)))  # [K, in, out] -> [in, out, K]


def _conv_transpose_from_torch(torch_weight: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(torch_weight, (2, 0, 1)))  # [in, out, K] -> [K, in, out]


def _pairs(num_levels: int) -> Iterator[tuple[tuple[str, ...], str, str]]:
  """(our module path, LeRobot prefix, kind) for every parameterized layer of a U-Net with num_levels."""

  def res_block(ours: str, theirs: str, has_residual: bool):
    for block, conv in (("block0", "conv1"), ("block1", "conv2")):
      yield (ours, block, "conv"), f"{theirs}.{conv}.block.0", "conv"
      yield (ours, block, "norm"), f"{theirs}.{conv}.block.1", "norm"
    yield (ours, "cond_encoder"), f"{theirs}.cond_encoder.1", "dense"
    if has_residual:
      yield (ours, "residual_conv"), f"{theirs}.residual_conv", "conv"

  yield ("step_encoder_fc1",), "diffusion_step_encoder.1", "dense"
  yield ("step_encoder_fc2",), "diffusion_step_encoder.3", "dense"
  for level in range(num_levels):
    # The first block of a level changes the width (action_dim -> d0, d_{l-1} -> d_l): it has a residual conv.
    yield from res_block(f"down{level}_res0", f"down_modules.{level}.0", True)
    yield from res_block(f"down{level}_res1", f"down_modules.{level}.1", False)
    if level < num_levels - 1:
      yield (f"down{level}_downsample",), f"down_modules.{level}.2", "conv"
  yield from res_block("mid0", "mid_modules.0", False)
  yield from res_block("mid1", "mid_modules.1", False)
  for i in range(num_levels - 1):
    yield from res_block(f"up{i}_res0", f"up_modules.{i}.0", True)  # input is concat(x, skip): 2x wide
    yield from res_block(f"up{i}_res1", f"up_modules.{i}.1", False)
    yield (f"up{i}_upsample",), f"up_modules.{i}.2", "conv_transpose"
  yield ("final_block", "conv"), "final_conv.0.block.0", "conv"
  yield ("final_block", "norm"), "final_conv.0.block.1", "norm"
  yield ("final_projection",), "final_conv.1", "conv"


def _num_levels(unet_params) -> int:
  levels = sorted(int(k[len("down"):].split("_")[0]) for k in unet_params if k.startswith("down") and k.endswith("_res0"))
  if not levels or levels != list(range(len(levels))):
    raise UserError(f"not a ConditionalUnet1D parameter tree (its keys: {sorted(unet_params)[:6]} ...)")
  return len(levels)


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def to_lerobot(unet_params) -> dict[str, np.ndarray]:
  """Our ConditionalUnet1D params (the `unet` subtree of an ActionHead, or a U-Net's {"params": ...}
  variables) -> LeRobot state dict (numpy)."""
  if set(unet_params) == {"params"}:
    unet_params = unet_params["params"]
  state = {}
  for ours, theirs, kind in _pairs(_num_levels(unet_params)):
    layer = _get(unet_params, ours)
    if kind == "norm":
      state[f"{theirs}.weight"], state[f"{theirs}.bias"] = np.asarray(layer["scale"]), np.asarray(layer["bias"])
      continue
    kernel = np.asarray(layer["kernel"])
    state[f"{theirs}.weight"] = {"conv": _conv, "conv_transpose": _conv_transpose_to_torch,
                                 "dense": lambda k: np.ascontiguousarray(k.T)}[kind](kernel)
    state[f"{theirs}.bias"] = np.asarray(layer["bias"])
  return state


def from_lerobot(state_dict, num_levels: int) -> dict:
  """LeRobot `DiffusionConditionalUnet1d` state dict (arrays with .numpy() or numpy) -> our unet params.
  Every key of the U-Net must be there; keys it does not have are an error (a different network)."""
  as_np = lambda v: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32)
  params: dict = {}
  used = set()
  for ours, theirs, kind in _pairs(num_levels):
    try:
      weight, bias = as_np(state_dict[f"{theirs}.weight"]), as_np(state_dict[f"{theirs}.bias"])
    except KeyError as error:
      raise UserError(f"LeRobot U-Net state dict lacks {error.args[0]} (a {num_levels}-level U-Net expected)") from None
    used |= {f"{theirs}.weight", f"{theirs}.bias"}
    node = params
    for key in ours:
      node = node.setdefault(key, {})
    if kind == "norm":
      node.update(scale=weight, bias=bias)
    else:
      node.update(kernel={"conv": _conv, "conv_transpose": _conv_transpose_from_torch, "dense": lambda w: w.T}[kind](weight),
                  bias=bias)
  extra = sorted(set(state_dict) - used)
  if extra:
    raise UserError(f"LeRobot U-Net state dict has keys a {num_levels}-level U-Net does not: {extra[:4]}")
  return params
