"""Condition readouts: keypoints find where a feature is, each readout sees the image tokens, and the
TinyVLA mean keeps its parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax import presets
from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.models.readout import ConditionEncoder, SpatialSoftmax, grid_coordinates, image_block
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params


def test_grid_coordinates_are_row_major_patch_centres():
  g = np.asarray(grid_coordinates(2, 3))
  np.testing.assert_allclose(g, [[-1, -1], [0, -1], [1, -1], [-1, 1], [0, 1], [1, 1]])


@pytest.mark.parametrize("row,col", [(0, 0), (2, 5), (6, 1), (7, 7)])
def test_keypoint_lands_on_the_patch_that_has_the_feature(row, col):
  """One patch carries a strong feature: a keypoint map that reads it puts its keypoint on that patch."""
  gh = gw = 8
  tokens = np.zeros((1, 1, gh * gw, 4), np.float32)
  tokens[0, 0, row * gw + col, 0] = 1.0
  module = SpatialSoftmax(num_keypoints=2, grid=(gh, gw))
  params = module.init(jax.random.key(0), tokens)["params"]
  # Map 0 reads feature 0 with a large gain (a sharp softmax); map 1 reads nothing (uniform: the centre).
  kernel = np.zeros((4, 2), np.float32)
  kernel[0, 0] = 50.0
  params = {"keypoint_maps": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(2)}}
  kp = np.asarray(module.apply({"params": params}, jnp.asarray(tokens))).reshape(2, 2)
  coords = np.linspace(-1, 1, 8)
  np.testing.assert_allclose(kp[0], [coords[col], coords[row]], atol=1e-4)
  np.testing.assert_allclose(kp[1], [0.0, 0.0], atol=1e-6)


def test_image_block_gathers_each_rows_spliced_tokens():
  hidden = jnp.arange(2 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 1)
  block = image_block(hidden=hidden, image_start=jnp.array([1, 3]), num_tokens=2)
  np.testing.assert_array_equal(np.asarray(block)[..., 0], [[1, 2], [9, 10]])


def encoder_inputs(seed=0, b=3, length=12, width=16, views=2, grid=(2, 2)):
  r = np.random.default_rng(seed)
  hidden = r.standard_normal((b, length, width)).astype(np.float32)
  mask = np.ones((b, length), bool)
  mask[0, -2:] = False  # padding
  start = np.array([1, 2, 1])
  return hidden, mask, start, r.standard_normal((b, 4)).astype(np.float32), views * grid[0] * grid[1]


@pytest.mark.parametrize("readout", ["mean", "split_mean", "spatial_softmax", "attention"])
def test_every_readout_responds_to_the_image_tokens_and_ignores_padding(readout):
  hidden, mask, start, state, n = encoder_inputs()
  enc = ConditionEncoder(readout=readout, num_keypoints=3, num_queries=2, num_views=2, grid=(2, 2))
  params = enc.init(jax.random.key(0), hidden, mask, start, state)["params"]
  f = jax.jit(lambda h, m: enc.apply({"params": params}, h, m, start, state))
  base = np.asarray(f(hidden, mask))
  assert base.shape == (3, 16)
  # Swap two image tokens of row 1 (a different arrangement of the same features).
  moved = hidden.copy()
  i, j = start[1], start[1] + 3
  moved[1, [i, j]] = moved[1, [j, i]]
  out = np.asarray(f(moved, mask))
  if readout in ("mean", "split_mean", "attention"):
    # Order-blind readouts: permuting tokens changes nothing (the failure mode for "where is the object").
    np.testing.assert_allclose(out, base, atol=1e-5)
  else:
    assert np.abs(out[1] - base[1]).max() > 1e-4  # keypoints see where the features are
  np.testing.assert_allclose(out[[0, 2]], base[[0, 2]], atol=1e-6)  # rows are independent
  changed = hidden.copy()
  changed[1, start[1] + 1] += 3.0 * np.random.default_rng(1).standard_normal(hidden.shape[-1])
  assert np.abs(np.asarray(f(changed, mask))[1] - base[1]).max() > 1e-4
  # Padding never reaches the condition.
  padded = hidden.copy()
  padded[0, -2:] = 100.0
  np.testing.assert_allclose(np.asarray(f(padded, mask))[0], base[0], atol=1e-5)


def test_mean_readout_keeps_tinyvla_parameter_names():
  d = presets.model_preset("tiny").to_dict()
  params = jax.eval_shape(lambda: init_params(UnifiedTinyVLAModel(VLAConfig.from_dict(d)), jax.random.key(0)))
  assert set(params["head"]["condition"]) == {"norm_after_pool", "combine"}
  d["head"]["readout"] = "spatial_softmax"
  params = jax.eval_shape(lambda: init_params(UnifiedTinyVLAModel(VLAConfig.from_dict(d)), jax.random.key(0)))
  assert set(params["head"]["condition"]) == {"norm_text", "spatial_softmax", "combine"}
  grid = d["vision"]["image_size"] // d["vision"]["patch_size"]
  width = d["language"]["hidden_size"]
  # combine reads the text mean, the keypoints of each view and the state.
  assert params["head"]["condition"]["combine"]["kernel"].shape == (width + 32 * 2 + 4, width)
  assert grid == 4


def test_model_with_history_takes_views_and_states_of_every_step():
  d = presets.model_preset("tiny").to_dict()
  d.update(obs_steps=2, num_cameras=2)
  d["head"]["readout"] = "spatial_softmax"
  cfg = VLAConfig.from_dict(d)
  model = UnifiedTinyVLAModel(cfg)
  params = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
  width = d["language"]["hidden_size"]
  assert params["head"]["condition"]["combine"]["kernel"].shape == (width + 4 * 32 * 2 + 2 * 4, width)
  b, size = 2, cfg.vision.image_size
  tokens = np.zeros((b, 10), np.int32)
  tokens[:, 0] = cfg.image_token_id
  args = dict(images=np.zeros((b, 4, size, size, 3), np.uint8), tokens=tokens, token_mask=np.ones((b, 10), bool),
              state=np.zeros((b, 8), np.float32), noisy_actions=np.zeros((b, 16, 4), np.float32),
              timesteps=np.zeros((b,), np.int32))
  out = jax.eval_shape(lambda p: model.apply({"params": p}, **args), params)
  assert out.shape == (b, 16, 4)
  with pytest.raises(ValueError, match=r"images must be \[B, 4, H, W, 3\].*num_cameras=2 x model.obs_steps=2"):
    jax.eval_shape(lambda p: model.apply({"params": p}, **dict(args, images=args["images"][:, :2])), params)
  with pytest.raises(ValueError, match=r"state must be \[B=2, 8\]"):
    jax.eval_shape(lambda p: model.apply({"params": p}, **dict(args, state=args["state"][:, :4])), params)


def test_model_without_image_history_encodes_the_newest_frame_and_reads_every_state():
  """model.image_history=False: the older step's images never reach the condition (neither the ViT nor
  the decoder sees them: the sequence holds one step's image tokens), the newest step's images and both
  states do."""
  d = presets.model_preset("tiny").to_dict()
  d.update(obs_steps=2, num_cameras=2, image_history=False)
  d["head"]["readout"] = "spatial_softmax"
  d["head"]["keypoint_source"] = "vision"
  cfg = VLAConfig.from_dict(d)
  assert (cfg.num_views, cfg.encoded_views) == (4, 2)
  model = UnifiedTinyVLAModel(cfg)
  params = init_params(model, jax.random.key(0))
  width = d["language"]["hidden_size"]
  # The keypoints of the 2 encoded views (not 4), both steps' states.
  assert params["head"]["condition"]["combine"]["kernel"].shape == (width + 2 * 32 * 2 + 2 * 4, width)
  b, size, text = 2, cfg.vision.image_size, 10
  rng = np.random.default_rng(0)
  tokens = np.zeros((b, text), np.int32)
  tokens[:, 0] = cfg.image_token_id
  obs = dict(images=rng.integers(0, 256, (b, 4, size, size, 3)).astype(np.uint8), tokens=tokens,
             token_mask=np.ones((b, text), bool), state=rng.standard_normal((b, 8)).astype(np.float32))
  condition = jax.jit(lambda o: model.apply({"params": params}, **o, method=model.condition))
  hidden, _ = model.apply({"params": params}, images=obs["images"], tokens=tokens, token_mask=obs["token_mask"],
                          method=model.encode)
  grid = cfg.vision.image_size // cfg.vision.patch_size
  assert hidden.shape[1] == text - 1 + 2 * grid * grid
  base = np.asarray(condition(obs))
  older = obs["images"].copy()
  older[:, :2] = 255 - older[:, :2]
  np.testing.assert_array_equal(np.asarray(condition(dict(obs, images=older))), base)
  newest = obs["images"].copy()
  newest[:, 2:] = 255 - newest[:, 2:]
  assert np.abs(np.asarray(condition(dict(obs, images=newest))) - base).max() > 1e-3
  older_state = obs["state"].copy()
  older_state[:, :4] += 1.0
  assert np.abs(np.asarray(condition(dict(obs, state=older_state))) - base).max() > 1e-3
  with pytest.raises(ValueError, match="model.image_history=1 must be true or false"):
    VLAConfig.from_dict(dict(d, image_history=1))


def test_bad_readout_is_a_one_line_config_error():
  d = presets.model_preset("tiny").to_dict()
  d["head"]["readout"] = "max"
  with pytest.raises(ValueError, match="model.head.readout='max' must be one of"):
    VLAConfig.from_dict(d)


def test_vision_keypoint_source_reads_the_vision_tokens_not_the_decoder():
  hidden, mask, start, state, n = encoder_inputs()
  vision_tokens = np.random.default_rng(3).standard_normal((3, n, 16)).astype(np.float32)
  enc = ConditionEncoder(readout="spatial_softmax", num_keypoints=3, num_views=2, grid=(2, 2), keypoint_source="vision")
  params = enc.init(jax.random.key(0), hidden, mask, start, state, vision_tokens)["params"]
  f = jax.jit(lambda h, v: enc.apply({"params": params}, h, mask, start, state, v))
  base = np.asarray(f(hidden, vision_tokens))
  # The decoder's image positions no longer reach the keypoints (only the text mean reads the decoder) ...
  moved = hidden.copy()
  moved[1, [start[1], start[1] + 3]] = moved[1, [start[1] + 3, start[1]]]
  np.testing.assert_allclose(np.asarray(f(moved, vision_tokens)), base, atol=1e-5)
  # ... the vision tokens do.
  swapped = vision_tokens.copy()
  swapped[1, [0, 3]] = swapped[1, [3, 0]]
  assert np.abs(np.asarray(f(hidden, swapped))[1] - base[1]).max() > 1e-4
  with pytest.raises(ValueError, match="keypoint_source='vision' needs the vision tokens"):
    enc.apply({"params": params}, hidden, mask, start, state)
