"""How fast a LeRobot dataset loads: decoding every frame (a run's first load), writing and reading the frame cache
(every later run). Epochs never decode: the frames are loaded once per run into memory and batched by the same
loader as our own store, so an epoch costs the same whatever the source. Prints one JSON object.

  python scripts/export_lerobot.py --src data/mt10_20 --out exported/mt10_20     # real MetaWorld demos as LeRobot v3.0
  python scripts/benchmark_lerobot.py --path exported/mt10_20 --frame_size 72
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import flags

from tinyvla_jax import cli
from tinyvla_jax.data.lerobot_format import LeRobotFolder

_PATH = flags.DEFINE_string("path", None, "A LeRobot dataset folder.", required=True)
_FRAME_SIZE = flags.DEFINE_integer("frame_size", 72, "Side of the square frames the images are resized to.")


def main(argv):
  del argv
  os.environ["TINYVLA_CACHE_DIR"] = tempfile.mkdtemp(prefix="tinyvla-bench-cache-")  # a cold cache
  out = {"path": _PATH.value, "frame_size": _FRAME_SIZE.value, "cpu_count": os.cpu_count()}
  start = time.perf_counter()
  folder = LeRobotFolder(_PATH.value)
  out["metadata_s"] = round(time.perf_counter() - start, 3)
  for name, cache in (("decode", False), ("decode_and_cache", True), ("from_cache", True)):
    start = time.perf_counter()
    episodes = LeRobotFolder(_PATH.value).load(frame_size=_FRAME_SIZE.value, cache=cache)
    seconds = time.perf_counter() - start
    frames = sum(len(e) for e in episodes) * episodes[0].images.shape[1]
    out[name] = dict(seconds=round(seconds, 2), frames=frames, frames_per_s=round(frames / seconds))
  out.update(version=folder.version, episodes=len(episodes), cameras=episodes[0].images.shape[1])
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  cli.run(main)
