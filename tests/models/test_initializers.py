"""Property tests of the initial weight statistics (the seed's fix 1), layer by layer and model-wide.

Tolerances follow from the sample size n of each tensor:
- the sample std of n iid draws has relative standard error sqrt((kurtosis - 1) / (4 n)):
  0.447/sqrt(n) for a uniform (kurtosis 1.8), 0.707/sqrt(n) for a normal (kurtosis 3);
- the sample mean has standard error std/sqrt(n).
We allow Z = 5 standard errors (a false alarm once in ~1.7 million tensors). A uniform's bound is
exact. To tell a uniform from a normal of the same std: a uniform never exceeds sqrt(3)*std, a normal
exceeds it with probability 8.3% per draw, so for n >= 200 the max tells them apart (miss < 3e-8).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyvla_jax import presets
from tinyvla_jax.models import layers
from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params

Z = 5.0


def check_uniform(w, bound, *, what):
  w = np.asarray(w, np.float64).ravel()
  n = w.size
  std = bound / math.sqrt(3)
  assert np.abs(w).max() <= bound * (1 + 1e-6), f"{what}: |w| max {np.abs(w).max()} > bound {bound}"
  chex.assert_scalar_in(float(w.std()), std * (1 - Z * 0.447 / math.sqrt(n)), std * (1 + Z * 0.447 / math.sqrt(n)))
  chex.assert_scalar_in(float(w.mean()), -Z * std / math.sqrt(n), Z * std / math.sqrt(n))
  # Uniform, not merely bounded: the max approaches the bound (P(max < (1-20/n) bound) ~ e^-20).
  assert np.abs(w).max() >= bound * (1 - 20.0 / n), f"{what}: does not fill U(-{bound}, {bound})"


def check_normal(w, std, *, what):
  w = np.asarray(w, np.float64).ravel()
  n = w.size
  chex.assert_scalar_in(float(w.std()), std * (1 - Z * 0.707 / math.sqrt(n)), std * (1 + Z * 0.707 / math.sqrt(n)))
  chex.assert_scalar_in(float(w.mean()), -Z * std / math.sqrt(n), Z * std / math.sqrt(n))
  if n >= 200:  # not truncated, not uniform: some draws exceed sqrt(3) std
    assert np.abs(w).max() > math.sqrt(3) * std, f"{what}: looks uniform/truncated, not normal"


def expected_kernel(scheme: str, kind: str, fan_in: int, fan_out: int):
  """(distribution, parameter): ("uniform", bound) or ("normal", std) for a kernel."""
  if scheme == "torch_default":
    return "uniform", 1 / math.sqrt(fan_in)
  if kind == "conv":
    return "normal", math.sqrt(2 / fan_out)
  return "uniform", 0.5 * math.sqrt(6 / (fan_in + fan_out))  # xavier_uniform, gain 0.5


def check_kernel(w, scheme, kind, fan_in, fan_out, what):
  dist, p = expected_kernel(scheme, kind, fan_in, fan_out)
  if w.size < 64:  # too few draws for statistics; the bound is still exact for uniforms
    if dist == "uniform":
      assert np.abs(np.asarray(w)).max() <= p * (1 + 1e-6), what
    return
  (check_uniform if dist == "uniform" else check_normal)(w, p, what=what)


# --- single layers, random shapes ---------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(fan_in=st.integers(8, 300), fan_out=st.integers(4, 300), scheme=st.sampled_from(["fixed", "torch_default"]),
       seed=st.integers(0, 2**16))
def test_dense_statistics(fan_in, fan_out, scheme, seed):
  p = layers.Dense(fan_out, init_scheme=scheme).init(jax.random.key(seed), jnp.zeros((1, fan_in)))["params"]
  chex.assert_shape(p["kernel"], (fan_in, fan_out))
  check_kernel(p["kernel"], scheme, "dense", fan_in, fan_out, "Dense kernel")
  if scheme == "fixed":
    chex.assert_trees_all_equal(p["bias"], jnp.zeros(fan_out))
  elif fan_out >= 64:
    check_uniform(p["bias"], 1 / math.sqrt(fan_in), what="Dense bias")


@settings(max_examples=12, deadline=None)
@given(cin=st.integers(4, 96), cout=st.integers(4, 96), k=st.sampled_from([1, 3, 5]),
       scheme=st.sampled_from(["fixed", "torch_default"]), seed=st.integers(0, 2**16))
def test_conv1d_statistics(cin, cout, k, scheme, seed):
  p = layers.Conv1d(cout, k, padding=k // 2, init_scheme=scheme).init(jax.random.key(seed), jnp.zeros((1, 8, cin)))
  p = p["params"]
  chex.assert_shape(p["kernel"], (k, cin, cout))
  # torch fans for Conv1d: in * K and out * K.
  check_kernel(p["kernel"], scheme, "conv", cin * k, cout * k, "Conv1d kernel")
  if scheme == "fixed":
    chex.assert_trees_all_equal(p["bias"], jnp.zeros(cout))


@pytest.mark.parametrize("scheme", ["fixed", "torch_default"])
def test_conv_transpose_uses_torch_fans(scheme):
  # Non-square on purpose: torch reads a ConvTranspose1d weight [in, out, K] with fan_in = out*K.
  cin, cout, k = 96, 24, 4
  p = layers.ConvTranspose1d(cout, k, stride=2, padding=1, init_scheme=scheme).init(
      jax.random.key(0), jnp.zeros((1, 4, cin)))["params"]
  check_kernel(p["kernel"], scheme, "conv", cout * k, cin * k, "ConvTranspose1d kernel")


# --- every parameter of the whole model ---------------------------------------------------------

def _classify(path: tuple[str, ...], leaf, siblings) -> tuple[str, int, int]:
  """-> (kind, fan_in, fan_out) for a kernel/bias; kind in dense, conv, conv_t, projection, norm, embed."""
  name = path[-1]
  if name in ("scale",) or (name == "bias" and "scale" in siblings):
    return "norm", 0, 0
  if "embedding" in name:
    return "embed", 0, 0
  kernel = siblings.get("kernel", leaf)
  if kernel.ndim == 2:
    return "dense", kernel.shape[0], kernel.shape[1]
  if kernel.ndim == 4:  # Conv2d (the ViT's conv stem): [kh, kw, in, out]
    kh, kw, cin, cout = kernel.shape
    return "conv", cin * kh * kw, cout * kh * kw
  k, cin, cout = kernel.shape
  if "final_projection" in path:
    return "projection", cin * k, cout * k
  if any("upsample" in p for p in path):
    return "conv_t", cout * k, cin * k
  return "conv", cin * k, cout * k


def _walk(tree, path=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _walk(value, path + (key,))
    else:
      yield path + (key,), value, tree


@pytest.fixture(scope="module", params=["fixed", "torch_default", "fixed-cpu-recipe"])
def tiny_params(request):
  """The tiny preset as is, and with what the `cpu` recipe switches on (conv stem, keypoint and attention
  readouts' parameters, the projector's LayerNorm), so every kind of layer is met."""
  cfg = presets.model_preset("tiny").to_dict()
  scheme = request.param.split("-")[0]
  cfg["init"] = scheme
  if request.param.endswith("cpu-recipe"):
    cfg["vision"]["stem"] = "conv"
    cfg["head"]["readout"] = "spatial_softmax"
    cfg["projector"] = "mlp2x_gelu_ln"
  config = VLAConfig.from_dict(cfg)
  params = jax.device_get(init_params(UnifiedTinyVLAModel(config), jax.random.key(1)))
  if request.param.endswith("cpu-recipe"):
    cfg["head"]["readout"] = "attention"
    more = init_params(UnifiedTinyVLAModel(VLAConfig.from_dict(cfg)), jax.random.key(2))
    params["head"]["condition"]["attention_pool"] = jax.device_get(more["head"]["condition"]["attention_pool"])
  return scheme, jax.tree.map(np.asarray, params)


def test_every_parameter_follows_its_scheme(tiny_params):
  scheme, params = tiny_params
  seen = {}
  for path, leaf, siblings in _walk(params):
    where = "/".join(path)
    kind, fan_in, fan_out = _classify(path, leaf, siblings)
    seen[kind] = seen.get(kind, 0) + 1
    if kind == "norm":
      expected = np.ones_like(leaf) if path[-1] == "scale" else np.zeros_like(leaf)
      chex.assert_trees_all_equal(leaf, expected, custom_message=where)
    elif kind == "embed":
      check_normal(leaf, 0.02 if scheme == "fixed" else 1.0, what=where)
    elif path[-1] == "kernel":
      check_kernel(leaf, scheme, "conv" if kind in ("conv", "conv_t") else "dense", fan_in, fan_out, where)
    elif path[-1] == "bias":
      if scheme == "fixed":
        assert not np.any(leaf), f"{where}: bias must start at zero"
      else:
        assert np.abs(leaf).max() <= 1 / math.sqrt(fan_in) * (1 + 1e-6), f"{where}: bias outside U(+-1/sqrt(fan_in))"
    else:
      raise AssertionError(f"unclassified parameter {where}: teach this test (and initializers.py) about it")
  # The sweep must have met every kind of layer the model has.
  assert {"dense", "conv", "conv_t", "projection", "norm", "embed"} <= set(seen), seen
