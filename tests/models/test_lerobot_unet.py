"""Our U-Net <-> LeRobot's DiffusionConditionalUnet1d: the weight map (default suite), and the outputs against
LeRobot's module (marker `bench`: `.venv-bench/bin/python -m pytest -m bench`, after `bash scripts/setup.sh
bench`; skipped where lerobot is missing). scripts/benchmark_peer.py runs the same check at paper size."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.errors import UserError
from tinyvla_jax.models.action_head import ConditionalUnet1D
from tinyvla_jax.models.config import ActionHeadConfig
from tinyvla_jax.pretrained import lerobot_unet

# 8 groups: LeRobot's final Conv1dBlock always has 8 (Diffusion Policy's default), ours model.head.n_groups.
SMALL = dict(action_dim=3, horizon=8, down_dims=(16, 32, 64), kernel_size=5, n_groups=8, step_embed_dim=16,
             cond_predict_scale=True)
COND = 12


def _unet_and_params(seed=0):
  unet = ConditionalUnet1D(ActionHeadConfig(**SMALL))
  x, t, c = jnp.zeros((1, SMALL["horizon"], SMALL["action_dim"])), jnp.zeros((1,), jnp.int32), jnp.zeros((1, COND))
  return unet, unet.init(jax.random.key(seed), x, t, c)["params"]


def test_round_trip_and_torch_layouts():
  _, params = _unet_and_params()
  state = lerobot_unet.to_lerobot(params)
  # Names and shapes in torch's layouts: Conv1d [out, in, K], ConvTranspose1d [in, out, K], Linear [out, in].
  assert state["down_modules.0.0.conv1.block.0.weight"].shape == (16, 3, 5)
  assert state["down_modules.0.0.residual_conv.weight"].shape == (16, 3, 1)
  assert state["down_modules.1.2.weight"].shape == (32, 32, 3)  # downsample
  assert state["up_modules.0.0.conv1.block.0.weight"].shape == (32, 128, 5)  # concat(x, skip) in
  assert state["up_modules.1.2.weight"].shape == (16, 16, 4)  # transposed conv
  assert state["mid_modules.1.cond_encoder.1.weight"].shape == (128, 16 + COND)
  assert state["final_conv.1.weight"].shape == (3, 16, 1)
  assert "down_modules.2.2.weight" not in state  # the last level does not downsample
  back = lerobot_unet.from_lerobot(state, num_levels=3)
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, params))
  assert lerobot_unet.to_lerobot({"params": params}).keys() == state.keys()  # variables dict accepted too


def test_wrong_state_dicts_are_one_line_errors():
  _, params = _unet_and_params()
  state = lerobot_unet.to_lerobot(params)
  missing = {k: v for k, v in state.items() if k != "mid_modules.0.conv2.block.1.bias"}
  with pytest.raises(UserError, match=r"lacks mid_modules\.0\.conv2\.block\.1\.bias"):
    lerobot_unet.from_lerobot(missing, num_levels=3)
  with pytest.raises(UserError, match="does not: \\['extra.weight'\\]"):
    lerobot_unet.from_lerobot({**state, "extra.weight": np.zeros(1)}, num_levels=3)
  with pytest.raises(UserError, match="not a ConditionalUnet1D"):
    lerobot_unet.to_lerobot({"dense": {}})


@pytest.mark.bench
def test_outputs_match_lerobots_unet():
  pytest.importorskip("torch")
  modeling = pytest.importorskip("lerobot.policies.diffusion.modeling_diffusion")
  import torch

  unet, params = _unet_and_params(seed=1)
  config = types.SimpleNamespace(  # the fields DiffusionConditionalUnet1d reads from a DiffusionConfig
      action_feature=types.SimpleNamespace(shape=(SMALL["action_dim"],)), down_dims=SMALL["down_dims"],
      kernel_size=SMALL["kernel_size"], n_groups=SMALL["n_groups"], diffusion_step_embed_dim=SMALL["step_embed_dim"],
      use_film_scale_modulation=True)
  theirs = modeling.DiffusionConditionalUnet1d(config, global_cond_dim=COND)
  theirs.load_state_dict({k: torch.from_numpy(v) for k, v in lerobot_unet.to_lerobot(params).items()}, strict=True)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, SMALL["horizon"], SMALL["action_dim"])).astype(np.float32)
  t = np.array([0, 17, 99], np.int32)
  cond = rng.standard_normal((3, COND)).astype(np.float32)
  with torch.inference_mode():
    expected = theirs(torch.from_numpy(x), torch.from_numpy(t).long(), torch.from_numpy(cond)).numpy()
  for impl in ("im2col", "xla"):
    ours = ConditionalUnet1D(ActionHeadConfig(**SMALL, conv_impl=impl)).apply({"params": params}, x, t, cond)
    np.testing.assert_allclose(ours, expected, atol=2e-5, rtol=1e-4, err_msg=impl)
