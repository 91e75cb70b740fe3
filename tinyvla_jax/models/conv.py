"""1-D convolution kernels: the plain XLA convolution and matmul forms, numerically the same.

Why two: XLA:CPU's convolution is pathologically slow when the sequence is not much longer than the
kernel (the U-Net bottleneck runs kernel 5 over length 4): ~50x slower than gathering the K shifted
windows and doing one matmul (measured: the README's table, produced by
`python scripts/benchmark_conv.py`). On GPU, cuDNN's convolution is the natural choice. `impl="auto"`
picks im2col on CPU and XLA elsewhere; the two agree to float32 round-off (tests/models/test_conv.py).

How the matmul forms touch the weights matters more than their FLOPs: at batch 1-4 the U-Net is
memory-bound (it reads 281 MB of float32 weights per call at paper size), so a form that makes XLA copy
a kernel into another layout before each use doubles the traffic (and inside a DDIM `lax.scan` the copy
is redone every step). Both forms here use each kernel in its stored layout:
- conv1d: the K windows are laid out [B, T, K, Cin] and flattened, so the contraction runs over
  (K, Cin) in the kernel's own row-major order: one [B*T, K*Cin] @ [K*Cin, Cout] matmul on a bitcast of
  the kernel (an einsum over "btjc,jco" let XLA pick the order (c, j) and transpose the kernel per call:
  measured 3-4x slower forward+backward on the bottleneck layers);
- conv_transpose1d: `stride` interleaved stride-1 convolutions, one matmul per tap on a slab kernel[k]
  (contiguous), instead of inserting zeros (half of whose multiply-adds are by zero) and correlating with
  the flipped kernel (a reversed copy).

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

  Output length (L - 1) * stride - 2 * padding + K. "xla": the equivalent forward convolution (insert
  stride-1 zeros between inputs, pad by K-1-padding, correlate with the flipped kernel). "im2col": the
  phase decomposition (`_conv_transpose1d_phases`).
  """
  k = kernel.shape[0]
  if padding > k - 1:
    raise UserError(f"conv_transpose1d padding {padding} must be <= kernel width - 1 = {k - 1}")
  if resolve_impl(impl) == "xla":
    pad = (k - 1 - padding, k - 1 - padding)
    return lax.conv_general_dilated(x, kernel[::-1], window_strides=(1,), padding=[pad], lhs_dilation=(stride,),
                                    dimension_numbers=("NWC", "WIO", "NWC"), precision=precision)
  return _conv_transpose1d_phases(x, kernel.astype(x.dtype), stride=stride, padding=padding, precision=precision)


def _matmul(x, w, precision):
  """[B, T, C] @ [C, O] -> [B, T, O], contracting x's last axis with w's first (w used as stored)."""
  return lax.dot_general(x, w, (((2,), (0,)), ((), ())), precision=precision)


def _conv_transpose1d_phases(x, kernel, *, stride, padding, precision):
  """torch's conv_transpose1d as `stride` interleaved stride-1 convolutions.

  y[o] = sum over (i, k) with o = i*stride - padding + k of x[i] @ kernel[k]. Output o = stride*m + r
  (phase r) receives exactly the taps k = k0 + stride*j, k0 = (r + padding) % stride, from inputs
  i = m + q - j, q = (r + padding - k0) // stride. Each phase is a sum of matmuls of shifted inputs with
  contiguous kernel slabs; the phases are interleaved back into one sequence.
  """
  k, b, length = kernel.shape[0], x.shape[0], x.shape[1]
  out_len = (length - 1) * stride - 2 * padding + k
  per_phase = -(-out_len // stride)  # phases 0..r hold ceil((out_len - r) / stride) outputs; pad to the most
  phases = []
  for r in range(stride):
    k0 = (r + padding) % stride
    q = (r + padding - k0) // stride
    acc = None
    for j, tap in enumerate(range(k0, k, stride)):
      shift = q - j  # this tap reads x[m + shift]; positions outside [0, length) are zero
      left, right = max(0, -shift), max(0, per_phase + shift - length)
      shifted = jnp.pad(x, ((0, 0), (left, right), (0, 0)))[:, shift + left: shift + left + per_phase]
      y = _matmul(shifted, kernel[tap], precision)
      acc = y if acc is None else acc + y
    if acc is None:  # a phase no tap reaches (kernel narrower than the stride): zeros
      acc = jnp.zeros((b, per_phase, kernel.shape[2]), x.dtype)
    phases.append(acc)
  return jnp.stack(phases, axis=2).reshape(b, per_phase * stride, kernel.shape[2])[:, :out_len]


def _conv1d_im2col(x, kernel, *, stride, padding, precision):
  k = kernel.shape[0]
  x = jnp.pad(x, ((0, 0), tuple(padding), (0, 0)))
  out_len = (x.shape[1] - k) // stride + 1
  if out_len < 1:
    raise UserError(f"conv1d input of padded length {x.shape[1]} is shorter than the kernel width {k}")
  # K strided slices of the padded input: windows[b, t, j, c] = x[b, t*stride + j, c], flattened over
  # (j, c) in the kernel's memory order so the kernel enters the matmul as a bitcast, not a copy.
  windows = jnp.stack([x[:, j: j + stride * (out_len - 1) + 1: stride] for j in range(k)], axis=2)
  windows = windows.reshape(x.shape[0], out_len, k * x.shape[2])
  return _matmul(windows, kernel.astype(x.dtype).reshape(k * kernel.shape[1], kernel.shape[2]), precision)
