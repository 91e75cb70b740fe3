"""Video files in and out with PyAV: the frames of a time range of an mp4 (decode) and an mp4 from frames (encode).

Used by the LeRobot reader and exporter (data/lerobot_format.py, data/lerobot_export.py). LeRobot v3.0 puts many
episodes in one video file one after another; an episode is the frames whose presentation time lies in
[from_timestamp, to_timestamp). Decoding seeks to the last keyframe at or before `from_timestamp` (FFmpeg's
backward seek) and decodes forward, so an episode in the middle of a long file costs one GOP of extra decoding,
not the whole file.
"""

from __future__ import annotations

import os

import numpy as np

from tinyvla_jax import extras
from tinyvla_jax.errors import DataError


def _av():
  return extras.require("av", extra="lerobot", purpose="LeRobot videos")


def decode_frames(path: str, timestamps: np.ndarray, *, tolerance: float) -> np.ndarray:
  """The frames shown at `timestamps` (seconds, increasing), uint8 [N, H, W, 3] RGB. A frame counts for a
  timestamp when its presentation time is within `tolerance` of it (LeRobot: half a frame period is safe); a
  timestamp without one is a DataError naming the file."""
  av = _av()
  timestamps = np.asarray(timestamps, np.float64)
  if timestamps.size == 0:
    return np.zeros((0, 0, 0, 3), np.uint8)
  first, last = float(timestamps[0]), float(timestamps[-1])
  frames: list[np.ndarray | None] = [None] * len(timestamps)
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      if first > 0:
        container.seek(int(max(first - tolerance, 0) / stream.time_base), stream=stream, backward=True,
                       any_frame=False)
      j = 0
      for frame in container.decode(stream):
        if frame.pts is None:
          continue
        t = float(frame.pts * stream.time_base)
        while j < len(timestamps) and timestamps[j] < t - tolerance:
          j += 1  # a requested time this frame is already past: it stays None (reported below)
        if j < len(timestamps) and abs(t - timestamps[j]) <= tolerance:
          frames[j] = frame.to_ndarray(format="rgb24")
          j += 1
        if t > last + tolerance or j >= len(timestamps):
          break
  except DataError:
    raise
  except Exception as error:  # noqa: BLE001 - PyAV raises FFmpeg errors of many types; all mean "unreadable"
    raise DataError(f"{path}: cannot decode the video ({type(error).__name__}: {error})") from None
  missing = [i for i, f in enumerate(frames) if f is None]
  if missing:
    raise DataError(f"{path}: no frame at {len(missing)} of the {len(timestamps)} timestamps the parquet lists "
                    f"for this episode (first missing {timestamps[missing[0]]:.4f} s, episode range {first:.4f}-"
                    f"{last:.4f} s): the video and the parquet disagree on the frame count")
  return np.stack(frames)


class VideoWriter:
  """Frames appended to one mp4 at a constant rate: frame k is shown at k / fps (what LeRobot's timestamps
  assume). AV1 (libsvtav1, LeRobot's default) with yuv420p and a keyframe every `gop` frames (LeRobot: 2, so a
  seek decodes at most one extra frame)."""

  def __init__(self, path: str, *, fps: int, width: int, height: int, codec: str = "libsvtav1", gop: int = 2,
               crf: int = 30):
    av = _av()
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration to stderr otherwise
    self.container = av.open(path, mode="w")
    self.stream = self.container.add_stream(codec, rate=fps, options={"g": str(gop), "crf": str(crf)})
    self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
    self.frames = 0
    self._av = av

  def write(self, rgb: np.ndarray) -> None:
    frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, np.uint8), format="rgb24")
    frame.pts = self.frames
    for packet in self.stream.encode(frame):
      self.container.mux(packet)
    self.frames += 1

  def close(self) -> None:
    for packet in self.stream.encode():
      self.container.mux(packet)
    self.container.close()
