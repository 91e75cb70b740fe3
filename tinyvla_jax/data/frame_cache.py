"""Decoded frames kept on disk, so that only the first run on a video dataset pays for decoding.

One .npy file per (dataset folder, camera, frame size, chosen episodes), named by a hash that also covers the
size and modification time of every file the frames came from: a dataset rewritten in place gets a new entry,
never a stale one. Written to a temporary name and renamed, so a crash or two processes at once leave either
no entry or a whole one. Where: $TINYVLA_CACHE_DIR, else $XDG_CACHE_HOME/tinyvla_jax, else
~/.cache/tinyvla_jax (subfolder frames/); `--config.data.frame_cache=false` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile

import numpy as np

log = logging.getLogger(__name__)

VERSION = 1  # bump when the decoding or resizing changes what is cached


def cache_dir() -> str:
  base = os.environ.get("TINYVLA_CACHE_DIR") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tinyvla_jax")
  return os.path.join(base, "frames")


def key(*, root: str, camera: str, frame_size: int, files: list[str], episodes: list[int]) -> str:
  stamps = []
  for rel in files:
    st = os.stat(os.path.join(root, rel))
    stamps.append((rel, st.st_size, st.st_mtime_ns))
  blob = json.dumps(dict(version=VERSION, root=os.path.abspath(root), camera=camera, size=frame_size, files=stamps,
                         episodes=episodes), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:32]


def load(name: str) -> np.ndarray | None:
  path = os.path.join(cache_dir(), name + ".npy")
  try:
    return np.load(path)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as error:  # a damaged entry is decoded again and replaced
    log.warning("ignoring the unreadable frame cache entry %s (%s)", path, error)
    return None


def save(name: str, frames: np.ndarray) -> None:
  directory = cache_dir()
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npy")
    with os.fdopen(fd, "wb") as f:
      np.save(f, frames)
    os.replace(tmp, os.path.join(directory, name + ".npy"))
  except OSError as error:  # a read-only or full disk: training goes on, the next run decodes again
    log.warning("could not write the frame cache to %s (%s)", directory, error)
