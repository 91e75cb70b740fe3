"""The wire format: byte-identical to openpi-client's msgpack-numpy, and safe on hostile frames."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from tinyvla_jax.serving import wire

msgpack_numpy = pytest.importorskip("openpi_client.msgpack_numpy")


def test_same_bytes_as_openpi_client_both_ways():
  message = {"images": {"corner2": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)},
             "state": np.array([0.1, -2.0, 3.5, 1e-3], np.float32), "prompt": "open the drawer",
             "noise_key": np.array([1, 2**32 - 1], np.uint32), "scalar": np.float64(2.5), "n": 3}
  ours, theirs = wire.packb(message), msgpack_numpy.packb(message)
  assert ours == theirs
  for decoded in (wire.unpackb(theirs), msgpack_numpy.unpackb(ours)):
    np.testing.assert_array_equal(decoded["images"]["corner2"], message["images"]["corner2"])
    assert decoded["images"]["corner2"].dtype == np.uint8
    np.testing.assert_array_equal(decoded["state"], message["state"])
    assert decoded["prompt"] == "open the drawer" and decoded["scalar"] == 2.5 and decoded["n"] == 3


@pytest.mark.parametrize("frame, says", [
    (b"\xc1not msgpack", "not a msgpack message"),
    ("a text frame", "binary msgpack frames"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"\x00" * 7, b"dtype": "<f4", b"shape": [2]}),
     r"float32 and shape \[2\] came with 7 bytes"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "|O", b"shape": [0]}), "not accepted"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "nonsense", b"shape": [0]}), "unknown dtype"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}), "invalid shape"),
    (msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": "x"}), "invalid shape"),
])
def test_bad_frames_are_one_line_errors(frame, says):
  with pytest.raises(wire.WireError, match=says):
    wire.unpackb(frame)


def test_object_arrays_are_never_sent():
  with pytest.raises(wire.WireError, match="dtype object"):
    wire.packb({"x": np.array([object()])})
