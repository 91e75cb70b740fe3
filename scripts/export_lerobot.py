"""Write an episode dataset of ours (scripts/collect_metaworld.py's output, or the shipped demos) as a LeRobot
v3.0 dataset, for LeRobot's tools and anything that trains from LeRobot datasets.

  python scripts/export_lerobot.py --src data/mt10_20 --out exported/mt10_20_lerobot
  python scripts/export_lerobot.py --out exported/metaworld_4tasks      # the demos shipped in the package
  python -m tinyvla_jax.train --config configs/fixed.py --config.data.source=lerobot \
      --config.data.path=exported/metaworld_4tasks --workdir W          # and train from it

Needs the `lerobot` extra (PyAV, pyarrow). Videos are AV1 (LeRobot's default; --codec h264 for players that
lack AV1), a keyframe every 2 frames. The layout is documented in tinyvla_jax/data/lerobot_export.py.
"""

from __future__ import annotations

import time

from absl import flags

from tinyvla_jax import cli
from tinyvla_jax.data.config import split_names
from tinyvla_jax.data.lerobot_export import export_store
from tinyvla_jax.data.sources import SHIPPED_DATASET
from tinyvla_jax.errors import UserError

_SRC = flags.DEFINE_string("src", None, "Episode dataset directory (default: the demos shipped in the package).")
_OUT = flags.DEFINE_string("out", None, "Directory of the LeRobot dataset to write (must not exist).")
_FPS = flags.DEFINE_integer("fps", 80, "Frames per second of the data (MetaWorld steps at 80 Hz).")
_CODEC = flags.DEFINE_enum("codec", "libsvtav1", ["libsvtav1", "libx264", "h264"], "Video codec.")
_TASKS = flags.DEFINE_string("tasks", "", "Comma-separated tasks to export (default: all).")
_MAX_EPISODES = flags.DEFINE_integer("max_episodes_per_task", None, "Export at most this many episodes per task.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace --out if it exists (after the new one is complete).")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if not _OUT.value:
    raise UserError("pass --out DIR (where the LeRobot dataset is written)")
  start = time.perf_counter()
  info = export_store(_SRC.value or SHIPPED_DATASET, _OUT.value, fps=_FPS.value, codec=_CODEC.value,
                      tasks=split_names(_TASKS.value), max_episodes_per_task=_MAX_EPISODES.value,
                      overwrite=_OVERWRITE.value)
  print(f"{_OUT.value}: LeRobot v3.0, {info['total_episodes']} episodes, {info['total_frames']} frames, "
        f"{info['total_tasks']} tasks, in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  cli.run(main)
