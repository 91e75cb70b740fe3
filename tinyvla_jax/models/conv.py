"""1-D convolution kernels: the plain XLA convolution and an im2col matmul, numerically the same.

Why two: XLA:CPU's convolution is pathologically slow when the sequence is not much longer than the
kernel (the U-Net bottleneck runs kernel 5 over length 4): ~50x slower than gathering the K shifted
windows and doing one matmul (measured: the README's table, produced by
`python scripts/benchmark_conv.py`). On GPU, cuDNN's convolution is the natural choice. `impl="auto"`
picks im2col on CPU and XLA elsewhere; the two agree to float32 round-off (tests/models/test_conv.py).

Layouts: activations (batch, length, channels) ("NWC"); kernels (width, in, out) ("WIO"), which is
torch's (out, in, width) transposed by (2, 1, 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from tinyvla_jax.errors import UserError


def resolve_impl(impl: str) -> str:
  if impl == "auto":
    return "im2col" if jax.default_backend() == "cpu" else "xla"
  if impl not in ("xla", "im2col"):
    raise UserError(f"conv impl {impl!r} must be auto, xla or im2col")
  return impl


def conv1d(x: jax.Array, kernel: jax.Array, *, stride: int = 1, padding: tuple[int, int] = (0, 0),
           impl: str = "auto", precision=None) -> jax.Array:
  """Cross-correlation like torch.nn.functional.conv1d. x: [B, L, Cin]; kernel: [K, Cin, Cout]."""
  if x.ndim != 3 or kernel.ndim != 3 or x.shape[-1] != kernel.shape[1]:
    raise UserError(f"conv1d expects x [B, L, Cin] and kernel [K, Cin, Cout]; got {x.shape} and {kernel.shape}")
  if resolve_impl(impl) == "xla":
    return lax.conv_general_dilated(x, kernel, window_strides=(stride,), padding=[padding],
                                    dimension_numbers=("NWC", "WIO", "NWC"), precision=precision)
  return _conv1d_im2col(x, kernel, stride=stride, padding=padding, precision=precision)


def conv_transpose1d(x: jax.Array, kernel: jax.Array, *, stride: int, padding: int,
                     impl: str = "auto", precision=None) -> jax.Array:
  """torch.nn.functional.conv_transpose1d. x: [B, L, Cin]; kernel [K, Cin, Cout] = torch w.transpose(2, 0, 1).

  Output length (L - 1) * stride - 2 * padding + K. Implemented as the equivalent forward
  convolution: insert stride-1 zeros between inputs, pad by K-1-padding, correlate with the
  spatially flipped kernel.
  """
  k = kernel.shape[0]
  if padding > k - 1:
    raise UserError(f"conv_transpose1d padding {padding} must be <= kernel width - 1 = {k - 1}")
  flipped = kernel[::-1]
  pad = (k - 1 - padding, k - 1 - padding)
  if resolve_impl(impl) == "xla":
    return lax.conv_general_dilated(x, flipped, window_strides=(1,), padding=[pad], lhs_dilation=(stride,),
                                    dimension_numbers=("NWC", "WIO", "NWC"), precision=precision)
  return _conv1d_im2col(_dilate(x, stride), flipped, stride=1, padding=pad, precision=precision)


def _dilate(x: jax.Array, stride: int) -> jax.Array:
  """[B, L, C] -> [B, (L-1)*stride+1, C] with stride-1 zeros between consecutive steps."""
  if stride == 1:
    return x
  b, length, c = x.shape
  zeros = jnp.zeros((b, length, stride - 1, c), x.dtype)
  return jnp.concatenate([x[:, :, None], zeros], axis=2).reshape(b, length * stride, c)[:, : (length - 1) * stride + 1]


def _conv1d_im2col(x, kernel, *, stride, padding, precision):
  k = kernel.shape[0]
  x = jnp.pad(x, ((0, 0), tuple(padding), (0, 0)))
  out_len = (x.shape[1] - k) // stride + 1
  if out_len < 1:
    raise UserError(f"conv1d input of padded length {x.shape[1]} is shorter than the kernel width {k}")
  # K strided slices of the padded input: windows[b, t, j, c] = x[b, t*stride + j, c].
  windows = jnp.stack([x[:, j: j + stride * (out_len - 1) + 1: stride] for j in range(k)], axis=2)
  return jnp.einsum("btjc,jco->bto", windows, kernel.astype(x.dtype), precision=precision)
