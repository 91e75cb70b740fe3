"""Our episode store (data/store.py) written as a LeRobot v3.0 dataset, so data collected here works in LeRobot's
tools (and in anything that trains from LeRobot datasets, as openpi does).

What is written (the layout data/lerobot_format.py reads back):

  meta/info.json                           codebase v3.0, fps, features, path templates, totals
  meta/tasks.parquet                       the task strings (our instructions) as the index, task_index
  meta/episodes/chunk-000/file-000.parquet one row per episode: tasks, length, data and video locations
  meta/stats.json                          per-feature min/max/mean/std/count/quantiles (LeRobot's normalization)
  data/chunk-000/file-000.parquet          every step: observation.state, action, timestamp, frame_index,
                                           episode_index, index, task_index
  videos/observation.images.<camera>/chunk-000/file-000.mp4   all episodes one after another (AV1)

A LeRobot task is a natural-language string, so each episode's instruction is its task. Everything is written
into a temporary folder beside `out` and renamed at the end: an interrupted export leaves no half dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from tinyvla_jax.data.lerobot_format import CAMERA_PREFIX, parquet
from tinyvla_jax.data.store import EpisodeStore
from tinyvla_jax.data.video import VideoWriter
from tinyvla_jax.errors import UserError

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


def _stats(x: np.ndarray, axis) -> dict:
  """LeRobot's per-feature statistics (compute_stats.py): over `axis`, kept as nested lists."""
  out = dict(min=x.min(axis), max=x.max(axis), mean=x.mean(axis), std=x.std(axis),
             count=np.array([x.shape[0]]))
  out.update({f"q{int(q * 100):02d}": np.quantile(x, q, axis=axis) for q in QUANTILES})
  return {k: np.asarray(v, np.float64).tolist() for k, v in out.items()}


def _image_stats(frames: np.ndarray) -> dict:
  """Per channel over all pixels of all frames, values in [0, 1], shaped [3, 1, 1] as LeRobot stores them."""
  x = frames.reshape(-1, 3).astype(np.float32) / 255.0
  stats = _stats(x, 0)
  return {k: (np.asarray(v).reshape(-1, 1, 1).tolist() if k != "count" else [int(frames.shape[0])])
          for k, v in stats.items()}


def _tasks_table(tasks: list[str]):
  """meta/tasks.parquet as pandas writes it (the task strings are the index), without needing pandas."""
  import pyarrow as pa
  pandas_meta = {"index_columns": ["__index_level_0__"],
                 "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                                     "metadata": {"encoding": "UTF-8"}}],
                 "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                              "numpy_type": "int64", "metadata": None},
                             {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                              "numpy_type": "object", "metadata": None}],
                 "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
  table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": pa.array(tasks)})
  return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_store(src: str, out: str, *, fps: int = 80, codec: str = "libsvtav1", robot_type: str = "sawyer",
                 tasks: list[str] | None = None, max_episodes_per_task: int | None = None,
                 overwrite: bool = False) -> dict:
  """Write the store at `src` (the episodes of `tasks`, at most `max_episodes_per_task` of each; None: all) as
  a LeRobot v3.0 dataset at `out`; returns its info.json."""
  pq = parquet()  # a clear error when the lerobot extra is missing
  import pyarrow as pa
  if os.path.exists(out) and not overwrite:
    raise UserError(f"{out} already exists: choose another --out or pass --overwrite")
  store = EpisodeStore(src)
  episodes = store.load(tasks=tasks, max_episodes_per_task=max_episodes_per_task)
  infos = store.select(tasks=tasks, max_episodes_per_task=max_episodes_per_task)
  if not episodes:
    raise UserError(f"{src} holds no episodes to export")
  tasks = sorted({e.instruction for e in episodes}, key=[e.instruction for e in episodes].index)
  task_index = {t: i for i, t in enumerate(tasks)}
  size = store.card["image_size"]
  if size % 2:
    raise UserError(f"{src}: {size} px frames cannot be stored as yuv420p video (an even side is needed)")
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.tmp-")
  try:
    lengths = np.array([len(e) for e in episodes])
    ends = np.cumsum(lengths)
    starts = ends - lengths
    states = np.concatenate([e.states for e in episodes]).astype(np.float32)
    actions = np.concatenate([e.actions for e in episodes]).astype(np.float32)
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    episode_index = np.repeat(np.arange(len(episodes)), lengths)
    timestamps = (frame_index / fps).astype(np.float32)
    task_of_row = np.repeat([task_index[e.instruction] for e in episodes], lengths)

    data_rel = DATA_PATH.format(chunk_index=0, file_index=0)
    os.makedirs(os.path.join(tmp, os.path.dirname(data_rel)))
    vector = lambda x: pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])  # noqa: E731
    pq.write_table(pa.table({"observation.state": vector(states), "action": vector(actions),
                             "timestamp": pa.array(timestamps, pa.float32()),
                             "frame_index": pa.array(frame_index, pa.int64()),
                             "episode_index": pa.array(episode_index, pa.int64()),
                             "index": pa.array(np.arange(len(states)), pa.int64()),
                             "task_index": pa.array(task_of_row, pa.int64())}), os.path.join(tmp, data_rel))

    features, stats = {}, {}
    episode_cols: dict[str, list] = {}
    for v, camera in enumerate(store.cameras):
      key = CAMERA_PREFIX + camera
      video_rel = VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
      os.makedirs(os.path.join(tmp, os.path.dirname(video_rel)))
      writer = VideoWriter(os.path.join(tmp, video_rel), fps=fps, width=size, height=size, codec=codec)
      for e in episodes:
        for frame in e.images[:, v]:
          writer.write(frame)
      writer.close()
      features[key] = dict(dtype="video", shape=[size, size, 3], names=["height", "width", "channels"],
                           info={"video.height": size, "video.width": size, "video.codec": "av1" if "av1" in codec
                                 else codec, "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                                 "video.fps": fps, "video.channels": 3, "has_audio": False})
      stats[key] = _image_stats(np.concatenate([e.images[:, v] for e in episodes]))
      episode_cols[f"videos/{key}/chunk_index"] = [0] * len(episodes)
      episode_cols[f"videos/{key}/file_index"] = [0] * len(episodes)
      episode_cols[f"videos/{key}/from_timestamp"] = (starts / fps).tolist()
      episode_cols[f"videos/{key}/to_timestamp"] = (ends / fps).tolist()
    features["observation.state"] = dict(dtype="float32", shape=[states.shape[1]],
                                         names=[f"state_{i}" for i in range(states.shape[1])])
    features["action"] = dict(dtype="float32", shape=[actions.shape[1]],
                              names=[f"action_{i}" for i in range(actions.shape[1])])
    features["timestamp"] = dict(dtype="float32", shape=[1], names=None)
    for name in ("frame_index", "episode_index", "index", "task_index"):
      features[name] = dict(dtype="int64", shape=[1], names=None)
    stats["observation.state"] = _stats(states, 0)
    stats["action"] = _stats(actions, 0)

    episodes_rel = "meta/episodes/chunk-000/file-000.parquet"
    os.makedirs(os.path.join(tmp, os.path.dirname(episodes_rel)))
    columns = {"episode_index": pa.array(np.arange(len(episodes)), pa.int64()),
               "tasks": pa.array([[e.instruction] for e in episodes], pa.list_(pa.string())),
               "length": pa.array(lengths, pa.int64()),
               "data/chunk_index": pa.array([0] * len(episodes), pa.int64()),
               "data/file_index": pa.array([0] * len(episodes), pa.int64()),
               "dataset_from_index": pa.array(starts, pa.int64()), "dataset_to_index": pa.array(ends, pa.int64())}
    for k, values in episode_cols.items():
      columns[k] = pa.array(values, pa.float64() if k.endswith("timestamp") else pa.int64())
    columns["meta/episodes/chunk_index"] = pa.array([0] * len(episodes), pa.int64())
    columns["meta/episodes/file_index"] = pa.array([0] * len(episodes), pa.int64())
    # Where each demo came from (MetaWorld task and setup seed): extra columns LeRobot's reader ignores.
    columns["tinyvla/task"] = pa.array([i["task"] for i in infos])
    columns["tinyvla/setup_seed"] = pa.array([i["setup_seed"] for i in infos], pa.int64())
    pq.write_table(pa.table(columns), os.path.join(tmp, episodes_rel))
    pq.write_table(_tasks_table(tasks), os.path.join(tmp, "meta", "tasks.parquet"))
    with open(os.path.join(tmp, "meta", "stats.json"), "w") as f:
      json.dump(stats, f, indent=1)
    info = dict(codebase_version="v3.0", robot_type=robot_type, total_episodes=len(episodes),
                total_frames=int(ends[-1]), total_tasks=len(tasks), chunks_size=1000, data_files_size_in_mb=100,
                video_files_size_in_mb=200, fps=fps, splits={"train": f"0:{len(episodes)}"}, data_path=DATA_PATH,
                video_path=VIDEO_PATH, features=features)
    with open(os.path.join(tmp, "meta", "info.json"), "w") as f:
      json.dump(info, f, indent=4)
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return info
