"""The ViT: shapes, which layers exist, the SigLIP switches, the patch layout, and preprocessing."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.models.config import VisionConfig
from tinyvla_jax.models.vision import CLIP_MEAN, CLIP_STD, VisionEncoder, patchify, preprocess_images

TINY = VisionConfig(image_size=32, patch_size=8, width=32, depth=3, num_heads=2, mlp_dim=64)
SIGLIP = dataclasses.replace(TINY, act="gelu_tanh", layer_norm_eps=1e-6, patch_bias=True, class_token=False,
                             pre_layernorm=False)


def _pixels(n, size=32, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, size, size, 3), jnp.float32)


def _param_shapes(config, n=1):
  variables = jax.eval_shape(lambda: VisionEncoder(config).init(jax.random.key(0), _pixels(n)))
  return jax.tree.map(lambda x: x.shape, variables["params"])


@pytest.fixture(scope="module")
def tiny():
  model = VisionEncoder(TINY)
  # jit: one compiled program per shape is much faster on CPU than op-by-op eager dispatch.
  return model, jax.jit(model.init)(jax.random.key(0), _pixels(1))


@pytest.mark.parametrize("cameras", [1, 2, 3])
def test_cameras_flattened_into_batch(tiny, cameras):
  model, params = tiny
  out = jax.eval_shape(model.apply, params, _pixels(2 * cameras))
  assert out.shape == (2 * cameras, TINY.num_patches, TINY.width)


def test_images_are_encoded_independently(tiny):
  model, params = tiny
  apply = jax.jit(model.apply)
  pixels = _pixels(6)  # 2 samples x 3 cameras
  np.testing.assert_allclose(apply(params, pixels[3:4]), apply(params, pixels)[3:4], atol=1e-5)


@pytest.mark.parametrize("select_layer,built", [(-2, 2), (-1, 3), (1, 1), (-3, 1), (2, 2)])
def test_only_needed_layers_are_built(select_layer, built):
  shapes = _param_shapes(dataclasses.replace(TINY, select_layer=select_layer))
  layers = sorted(k for k in shapes if k.startswith("layers_"))
  assert layers == [f"layers_{i}" for i in range(built)]
  assert "post_layernorm" not in shapes


def test_clip_param_tree():
  shapes = _param_shapes(TINY)
  p = TINY.patch_size
  assert shapes["patch_embedding"] == {"kernel": (p * p * 3, TINY.width)}
  assert shapes["class_embedding"] == (TINY.width,)
  assert shapes["position_embedding"] == (TINY.num_patches + 1, TINY.width)
  assert shapes["pre_layrnorm"] == {"scale": (TINY.width,), "bias": (TINY.width,)}
  layer = shapes["layers_0"]
  assert set(layer) == {"layer_norm1", "self_attn", "layer_norm2", "mlp"}
  assert set(layer["self_attn"]) == {"q_proj", "k_proj", "v_proj", "out_proj"}
  assert layer["mlp"]["fc1"]["kernel"] == (TINY.width, TINY.mlp_dim)


def test_siglip_switches_change_the_tree():
  shapes = _param_shapes(SIGLIP)
  assert set(shapes["patch_embedding"]) == {"kernel", "bias"}
  assert "class_embedding" not in shapes and "pre_layrnorm" not in shapes
  assert shapes["position_embedding"] == (SIGLIP.num_patches, SIGLIP.width)
  model = VisionEncoder(SIGLIP)
  params = jax.jit(model.init)(jax.random.key(0), _pixels(2))
  assert jax.jit(model.apply)(params, _pixels(2)).shape == (2, SIGLIP.num_patches, SIGLIP.width)


def test_patch_embedding_equals_the_hf_conv():
  """The documented kernel mapping turns a torch-layout conv weight [D, C, p, p] into our Dense."""
  p, d, grid = 4, 5, 2
  rng = np.random.default_rng(1)
  w = rng.normal(size=(d, 3, p, p))
  x = rng.normal(size=(2, grid * p, grid * p, 3))
  # Conv with kernel = stride = p, written out: patch (gy, gx) sees pixels (gy*p + i, gx*p + j).
  tiles = x.reshape(2, grid, p, grid, p, 3)
  conv = np.einsum("byixjc,dcij->byxd", tiles, w).reshape(2, grid * grid, d)  # HF: flatten(2).transpose(1, 2)
  kernel = w.transpose(2, 3, 1, 0).reshape(p * p * 3, d)
  np.testing.assert_allclose(np.asarray(patchify(x, p)) @ kernel, conv, atol=1e-10)


def test_wrong_pixel_shape_is_one_line_error(tiny):
  model, params = tiny
  with pytest.raises(ValueError, match=r"pixels must be \[B, 32, 32, 3\]"):
    jax.eval_shape(model.apply, params, _pixels(1, size=16))


def test_preprocess_values_without_resize():
  images = np.zeros((2, 32, 32, 3), np.uint8)
  images[0] = 255
  out = preprocess_images(jnp.asarray(images), image_size=32, mean=CLIP_MEAN, std=CLIP_STD)
  assert out.shape == (2, 32, 32, 3) and out.dtype == jnp.float32
  mean, std = np.array(CLIP_MEAN), np.array(CLIP_STD)
  np.testing.assert_allclose(out[0, 3, 5], (1 - mean) / std, rtol=1e-6)
  np.testing.assert_allclose(out[1, 0, 0], -mean / std, rtol=1e-6)


def test_preprocess_resizes():
  images = jnp.full((3, 64, 48, 3), 128, jnp.uint8)
  out = preprocess_images(images, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  assert out.shape == (3, 32, 32, 3)
  # A constant image stays constant through the bilinear resize.
  np.testing.assert_allclose(out, (128 / 255 - 0.5) / 0.5, atol=1e-6)


def test_preprocess_rejects_float_and_bad_shapes():
  with pytest.raises(ValueError, match="uint8"):
    preprocess_images(jnp.zeros((1, 32, 32, 3)), image_size=32, mean=CLIP_MEAN, std=CLIP_STD)
  with pytest.raises(ValueError, match="B, H, W, 3"):
    preprocess_images(jnp.zeros((32, 32, 3), jnp.uint8), image_size=32, mean=CLIP_MEAN, std=CLIP_STD)
