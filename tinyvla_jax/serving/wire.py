"""openpi's wire format: msgpack maps whose numpy arrays are `{"__ndarray__": True, "data", "dtype", "shape"}`.

The same bytes as `openpi_client.msgpack_numpy` (so its `WebsocketClientPolicy` talks to our server and
our client to an openpi server), written here because the server must also survive what a careless or
hostile client sends: no pickle anywhere (object, void and complex dtypes are refused both ways), and an
array whose byte count disagrees with its dtype and shape is an error, not a crash. A numpy scalar
travels as `{"__npgeneric__": True, "data", "dtype"}`.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from tinyvla_jax.errors import UserError

_REFUSED_KINDS = "VOcMm"  # void, object (pickle), complex, datetime: nothing a policy exchanges


class WireError(UserError):
  """A frame that is not a valid msgpack-numpy message; the message says why."""


def _encode(obj: Any) -> Any:
  if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
    raise WireError(f"cannot send a numpy array of dtype {obj.dtype}")
  if isinstance(obj, np.ndarray):
    return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
            b"shape": list(obj.shape)}
  if isinstance(obj, np.generic):
    return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
  raise TypeError(f"cannot serialize {type(obj).__name__}")


def _dtype(text: Any) -> np.dtype:
  try:
    dtype = np.dtype(text if isinstance(text, str) else bytes(text).decode())
  except (TypeError, ValueError, UnicodeDecodeError):
    raise WireError(f"an array has an unknown dtype {text!r}") from None
  if dtype.kind in _REFUSED_KINDS:
    raise WireError(f"an array has dtype {dtype}, which is not accepted (no object or void arrays)")
  return dtype


def _decode(obj: dict) -> Any:
  if b"__ndarray__" in obj:
    dtype = _dtype(obj.get(b"dtype"))
    shape, data = obj.get(b"shape"), obj.get(b"data")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
      raise WireError(f"an array has an invalid shape {shape!r}")
    if not isinstance(data, bytes) or len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
      size = len(data) if isinstance(data, bytes) else type(data).__name__
      raise WireError(f"an array of dtype {dtype} and shape {list(shape)} came with {size} bytes of data")
    return np.frombuffer(data, dtype=dtype).reshape(shape)
  if b"__npgeneric__" in obj:
    return _dtype(obj.get(b"dtype")).type(obj.get(b"data"))
  return obj


def packb(obj: Any) -> bytes:
  return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes) -> Any:
  """The message in a frame; anything that is not one is a WireError saying so."""
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise WireError("send observations as binary msgpack frames, not text")
  try:
    return msgpack.unpackb(data, object_hook=_decode)
  except WireError:
    raise
  except (ValueError, TypeError, msgpack.UnpackException) as error:
    raise WireError(f"the frame is not a msgpack message ({type(error).__name__}: {error})") from None
