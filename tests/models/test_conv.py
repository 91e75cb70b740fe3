"""The im2col and XLA convolutions agree with each other and with closed-form references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.models import conv


def _rand(key, *shape):
  return jax.random.normal(jax.random.key(key), shape, jnp.float32)


def _numpy_conv1d(x, w, stride, pad):
  """Direct loop definition of torch.nn.functional.conv1d with x [B, L, C], w [K, C, O]."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (0, 0)))
  k = w.shape[0]
  out_len = (x.shape[1] - k) // stride + 1
  out = np.zeros((x.shape[0], out_len, w.shape[2]))
  for t in range(out_len):
    out[:, t] = np.einsum("bkc,kco->bo", x[:, t * stride: t * stride + k], np.asarray(w, np.float64))
  return out


def _numpy_conv_transpose1d(x, w, stride, pad):
  """Scatter definition of torch's conv_transpose1d: y[s*stride - pad + k] += x[s] @ w[k]."""
  b, length, _ = x.shape
  k = w.shape[0]
  full = np.zeros((b, (length - 1) * stride + k, w.shape[2]))
  for s in range(length):
    for j in range(k):
      full[:, s * stride + j] += np.asarray(x[:, s], np.float64) @ np.asarray(w[j], np.float64)
  return full[:, pad: full.shape[1] - pad]


@pytest.mark.parametrize("length,k,stride,pad", [(16, 5, 1, 2), (4, 5, 1, 2), (2, 5, 1, 2), (16, 3, 2, 1),
                                                 (7, 3, 2, 1), (8, 1, 1, 0)])
def test_conv1d_impls_agree(length, k, stride, pad):
  x, w = _rand(0, 3, length, 6), _rand(1, k, 6, 5)
  ref = _numpy_conv1d(x, w, stride, pad)
  for impl in ("xla", "im2col"):
    out = conv.conv1d(x, w, stride=stride, padding=(pad, pad), impl=impl)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5, err_msg=impl)


@pytest.mark.parametrize("length", [1, 2, 4, 8])
def test_conv_transpose1d_impls_agree(length):
  x, w = _rand(2, 2, length, 6), _rand(3, 4, 6, 5)
  ref = _numpy_conv_transpose1d(x, w, 2, 1)
  assert ref.shape[1] == 2 * length  # torch ConvTranspose1d(c, c, 4, 2, 1) doubles the length
  for impl in ("xla", "im2col"):
    out = conv.conv_transpose1d(x, w, stride=2, padding=1, impl=impl)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5, err_msg=impl)


def test_gradients_agree():
  x, w = _rand(4, 2, 8, 4), _rand(5, 5, 4, 3)
  grads = {}
  for impl in ("xla", "im2col"):
    loss = lambda x, w: jnp.sum(jnp.sin(conv.conv1d(x, w, padding=(2, 2), impl=impl)))
    grads[impl] = jax.grad(loss, argnums=(0, 1))(x, w)
  for a, b in zip(grads["xla"], grads["im2col"]):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_conv_transpose1d_gradients_agree():
  x, w = _rand(8, 2, 4, 6), _rand(9, 4, 6, 5)
  grads = {impl: jax.grad(lambda x, w: jnp.sum(jnp.sin(conv.conv_transpose1d(x, w, stride=2, padding=1, impl=impl))),
                          argnums=(0, 1))(x, w) for impl in ("xla", "im2col")}
  for a, b in zip(grads["xla"], grads["im2col"]):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_auto_picks_im2col_on_cpu():
  assert conv.resolve_impl("auto") == ("im2col" if jax.default_backend() == "cpu" else "xla")
  with pytest.raises(ValueError, match="auto, xla or im2col"):
    conv.resolve_impl("cudnn")


def test_bad_shapes_are_one_line_errors():
  with pytest.raises(ValueError, match=r"\[B, L, Cin\]"):
    conv.conv1d(jnp.zeros((2, 8, 3)), jnp.zeros((3, 4, 5)))
  with pytest.raises(ValueError, match="shorter than the kernel"):
    conv.conv1d(jnp.zeros((2, 2, 3)), jnp.zeros((5, 3, 5)), impl="im2col")


@pytest.mark.parametrize("length,k,stride,pad", [(4, 4, 2, 1), (5, 4, 2, 0), (3, 3, 2, 2), (6, 5, 3, 1), (4, 2, 3, 0),
                                                 (3, 1, 1, 0)])
def test_conv_transpose1d_phases_cover_other_shapes(length, k, stride, pad):
  """The phase decomposition at strides, paddings and widths the U-Net does not use (stride 3, a
  kernel narrower than the stride, padding 0 and K-1), against the scatter definition."""
  x, w = _rand(6, 2, length, 3), _rand(7, k, 3, 4)
  ref = _numpy_conv_transpose1d(x, w, stride, pad)
  out = conv.conv_transpose1d(x, w, stride=stride, padding=pad, impl="im2col")
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
