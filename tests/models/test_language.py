"""GPT-NeoX: shapes, causality, right padding, and the half-split rotary embedding."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.models.config import LanguageConfig
from tinyvla_jax.models.language import GPTNeoX, apply_rotary, rotary_cos_sin

TINY = LanguageConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, rotary_pct=0.5)


def _forward(m, ids, mask):
  return m(m.embed(ids), mask)


def _ids(b, length, seed=0):
  return jax.random.randint(jax.random.key(seed), (b, length), 4, TINY.vocab_size)


@pytest.fixture(scope="module", params=[True, False], ids=["parallel", "sequential"])
def model_and_params(request):
  model = GPTNeoX(dataclasses.replace(TINY, use_parallel_residual=request.param), init_scheme="torch_default")
  ids = _ids(2, 10)
  # jit: one compiled program per shape is much faster on CPU than op-by-op eager dispatch.
  init = jax.jit(functools.partial(model.init, method=_forward))
  return model, init(jax.random.key(0), ids, jnp.ones(ids.shape, bool))


def _run(model_and_params, ids, mask):
  model, params = model_and_params
  return jax.jit(functools.partial(model.apply, method=_forward))(params, ids, mask)


def test_shapes_and_param_names(model_and_params):
  model, params = model_and_params
  ids = _ids(3, 7)
  assert _run(model_and_params, ids, jnp.ones((3, 7), bool)).shape == (3, 7, TINY.hidden_size)
  p = params["params"]
  assert set(p) == {"embed_in", "layers_0", "layers_1", "final_layer_norm"}
  assert p["embed_in"]["embedding"].shape == (TINY.vocab_size, TINY.hidden_size)
  assert p["layers_0"]["attention"]["query_key_value"]["kernel"].shape == (32, 96)
  assert set(p["layers_0"]) == {"input_layernorm", "post_attention_layernorm", "attention", "mlp"}
  embed = functools.partial(model.apply, method=GPTNeoX.embed)
  assert jax.eval_shape(embed, params, ids).shape == (3, 7, TINY.hidden_size)


def test_causal(model_and_params):
  ids = _ids(2, 10)
  changed = ids.at[:, 6].set((ids[:, 6] + 1) % TINY.vocab_size)
  mask = jnp.ones(ids.shape, bool)
  a, b = _run(model_and_params, ids, mask), _run(model_and_params, changed, mask)
  np.testing.assert_array_equal(a[:, :6], b[:, :6])
  assert np.abs(a[:, 6:] - b[:, 6:]).max() > 1e-3


def test_right_padding_leaves_valid_positions_unchanged(model_and_params):
  ids = _ids(2, 6)
  short = _run(model_and_params, ids, jnp.ones(ids.shape, bool))
  # Pad tokens whose embeddings differ from row to row: only the mask can keep them out.
  padded = jnp.concatenate([ids, _ids(2, 5, seed=3)], axis=1)
  mask = jnp.concatenate([jnp.ones((2, 6), bool), jnp.zeros((2, 5), bool)], axis=1)
  long = _run(model_and_params, padded, mask)
  np.testing.assert_allclose(long[:, :6], short, atol=1e-5)
  assert np.isfinite(np.asarray(long)).all()  # padded query rows still attend to valid keys


def test_mask_shape_is_checked(model_and_params):
  with pytest.raises(ValueError, match="mask must be"):
    _run(model_and_params, _ids(2, 6), jnp.ones((2, 5), bool))


def test_rotary_is_half_split_rotation():
  """Dim j pairs with dim j + d/2 and turns by pos * base^(-2j/d); dims past rotary_ndims pass through."""
  b, length, heads, head_dim, d, base = 1, 5, 2, 8, 4, 100.0
  x = np.asarray(jax.random.normal(jax.random.key(2), (b, length, heads, head_dim)), np.float64)
  cos, sin = rotary_cos_sin(length, rotary_ndims=d, base=base)
  got = np.asarray(apply_rotary(jnp.asarray(x, jnp.float32), cos, sin))
  want = x.copy()
  for pos in range(length):
    for j in range(d // 2):
      theta = pos * base ** (-2 * j / d)
      a, c = x[:, pos, :, j], x[:, pos, :, j + d // 2]
      want[:, pos, :, j] = a * np.cos(theta) - c * np.sin(theta)
      want[:, pos, :, j + d // 2] = c * np.cos(theta) + a * np.sin(theta)
  np.testing.assert_allclose(got, want, atol=1e-5)
