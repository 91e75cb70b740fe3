"""Write the LeRobot dataset fixtures of tests/data/lerobot_fixtures/ with the real `lerobot` package.

Not part of tinyvla_jax and not run by the tests: the tests read what this script wrote, so they need only our
reader. lerobot and its torch pin their own versions, so it runs once, in its own venv:

  python3.11 -m venv /tmp/lrvenv
  /tmp/lrvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 torchcodec "av>=15,<16" "datasets>=4,<5" \
      "huggingface-hub<0.36" accelerate jsonlines pandas pyarrow draccus==0.10.0 einops deepdiff termcolor imageio
  /tmp/lrvenv/bin/pip install --no-deps lerobot==0.4.4                   # writes codebase v3.0
  /tmp/lrvenv/bin/pip install --no-deps --target /tmp/lr032 lerobot==0.3.2  # writes codebase v2.1
  /tmp/lrvenv/bin/python scripts/make_lerobot_fixtures.py --out tests/data/lerobot_fixtures/v3.0
  /tmp/lrvenv/bin/python scripts/make_lerobot_fixtures.py --out tests/data/lerobot_fixtures/v3.0_files \
      --files_mb 0.00001 --vcodec h264   # a new data and video file per episode, 2 files per chunk
  PYTHONPATH=/tmp/lr032 /tmp/lrvenv/bin/python scripts/make_lerobot_fixtures.py --out tests/data/lerobot_fixtures/v2.1
  # our exporter's output, read by lerobot (the export is made in the project's own venv):
  .venv/bin/python scripts/export_lerobot.py --tasks button-press-topdown-v3,drawer-close-v3 \
      --max_episodes_per_task 1 --out tests/data/lerobot_fixtures/our_export_v3.0
  /tmp/lrvenv/bin/python scripts/make_lerobot_fixtures.py --reread tests/data/lerobot_fixtures/our_export_v3.0

(`--no-deps` because lerobot 0.4.4 pins torch < 2.11; the dataset code used here runs on torch 2.14. lerobot 0.3.2
also needs `pip install --no-deps --target /tmp/lr032 "datasets<=3.6"`. The reader's default decoder, torchcodec
(`pip install torchcodec`), needs FFmpeg's shared libraries: Debian `apt-get install libavcodec59 libavformat59
libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8`.)

Each fixture: 3 short episodes (two tasks) of a toy scene at 10 fps, a camera `observation.images.top` stored
as video (`--vcodec`: AV1 by default as in LeRobot, h264 for v2.1's fixture to cover both codecs) and a camera
`observation.images.wrist` stored as images inside the parquet, a 3-d `observation.state` and a 2-d `action`.
Beside the dataset, `reference.npz` holds what lerobot's own reader (`LeRobotDataset(...)[i]`, its default torchcodec decoder)
returns for every frame (state, action, task, episode, both cameras as uint8 HWC) and the frames that were
written before encoding (`source_*`), so the tests can check our reader against lerobot's and measure the codec.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np

EPISODES = ((12, "push the red block"), (9, "open the drawer"), (15, "push the red block"))
HEIGHT, WIDTH = 48, 64  # 4:3 like most robot cameras, even sides for yuv420p


def frame(episode: int, t: int, camera: int) -> np.ndarray:
  """A smooth toy scene (codecs keep smooth content close) with a block that moves: different per frame."""
  yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
  base = np.stack([40 + 2.0 * xx, 60 + 2.5 * yy, np.full_like(xx, 90 + 30 * camera + 20 * episode)], -1)
  cx, cy = 10 + 3 * t + 5 * episode, 12 + 2 * t + 10 * camera
  block = (np.abs(xx - cx) < 6) & (np.abs(yy - cy) < 6)
  base[block] = (220, 40, 40)
  return np.clip(base, 0, 255).astype(np.uint8)


def write_reference(root: str, source: dict | None = None) -> list[dict]:
  """reference.npz beside the dataset: what lerobot's own reader (its default torchcodec decoder) returns for
  every frame; cameras under their names without the observation.images. prefix."""
  import torch
  from lerobot.datasets import lerobot_dataset as lr

  reread = lr.LeRobotDataset("tinyvla/fixture", root=root, video_backend="torchcodec")
  rows = [reread[i] for i in range(len(reread))]

  def image(x: torch.Tensor) -> np.ndarray:  # float [3, H, W] in [0, 1] -> uint8 [H, W, 3]
    return (x.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)

  cameras = {key.removeprefix("observation.images."): np.stack([image(r[key]) for r in rows])
             for key in reread.meta.camera_keys}
  np.savez_compressed(
      os.path.join(root, "reference.npz"),
      state=np.stack([r["observation.state"].numpy() for r in rows]),
      action=np.stack([r["action"].numpy() for r in rows]),
      task=np.array([r["task"] for r in rows]),
      episode_index=np.array([int(r["episode_index"]) for r in rows]),
      frame_index=np.array([int(r["frame_index"]) for r in rows]), **cameras, **(source or {}))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", help="the fixture folder to write")
  parser.add_argument("--reread", help="only write reference.npz for this existing dataset (e.g. one that "
                      "scripts/export_lerobot.py wrote: does LeRobot read our export as we do?)")
  parser.add_argument("--files_mb", type=float, default=None,
                      help="v3.0: data and video file size limit in MB (tiny: a new file per episode), and chunks of 2 files")
  parser.add_argument("--vcodec", default=None, help="video codec (default: libsvtav1 for v3.0, h264 for v2.1)")
  args = parser.parse_args()
  if args.reread:
    rows = write_reference(args.reread)
    print(f"wrote {args.reread}/reference.npz: {len(rows)} frames as lerobot reads them")
    return
  if not args.out:
    parser.error("pass --out DIR or --reread DIR")

  import torch
  from lerobot.datasets import lerobot_dataset as lr
  version = lr.CODEBASE_VERSION
  vcodec = args.vcodec or ("libsvtav1" if version == "v3.0" else "h264")
  if os.path.exists(args.out):
    shutil.rmtree(args.out)
  features = {
      "observation.images.top": dict(dtype="video", shape=(HEIGHT, WIDTH, 3), names=["height", "width", "channels"]),
      "observation.images.wrist": dict(dtype="image", shape=(HEIGHT, WIDTH, 3),
                                       names=["height", "width", "channels"]),
      "observation.state": dict(dtype="float32", shape=(3,), names=["x", "y", "gripper"]),
      "action": dict(dtype="float32", shape=(2,), names=["dx", "dy"]),
  }
  create = dict(repo_id="tinyvla/fixture", fps=10, features=features, root=args.out, robot_type="toy",
                use_videos=True)
  if version == "v3.0":
    create.update(vcodec=vcodec)
  dataset = lr.LeRobotDataset.create(**create)
  if args.files_mb:  # and 2 files per chunk folder: episodes spread over files and chunks
    dataset.meta.update_chunk_settings(chunks_size=2, data_files_size_in_mb=args.files_mb,
                                       video_files_size_in_mb=args.files_mb)
  if version != "v3.0":
    dataset.meta.info["video_codec_requested"] = vcodec
    import lerobot.datasets.video_utils as vu
    encode = vu.encode_video_frames
    vu.encode_video_frames = lambda *a, **k: encode(*a, **{**k, "vcodec": vcodec})
    lr.encode_video_frames = vu.encode_video_frames
  rng = np.random.default_rng(0)
  source = {"top": [], "wrist": []}
  for e, (length, task) in enumerate(EPISODES):
    for t in range(length):
      top, wrist = frame(e, t, 0), frame(e, t, 1)
      source["top"].append(top)
      source["wrist"].append(wrist)
      f = {"observation.images.top": top, "observation.images.wrist": wrist,
           "observation.state": rng.normal(size=3).astype(np.float32),
           "action": rng.uniform(-1, 1, size=2).astype(np.float32)}
      if version == "v3.0":
        dataset.add_frame(dict(f, task=task))
      else:
        dataset.add_frame(f, task=task)
    dataset.save_episode()
  if hasattr(dataset, "finalize"):
    dataset.finalize()

  rows = write_reference(args.out, source={f"source_{k}": np.stack(v) for k, v in source.items()})
  import lerobot
  with open(os.path.join(args.out, "written_by.json"), "w") as f:
    json.dump(dict(lerobot=getattr(lerobot, "__version__", "?"), codebase_version=version, vcodec=vcodec,
                   torch=torch.__version__, script="scripts/make_lerobot_fixtures.py"), f, indent=1)
  print(f"wrote {args.out}: lerobot codebase {version}, {len(rows)} frames, video codec {vcodec}")


if __name__ == "__main__":
  main()
