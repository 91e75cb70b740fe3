"""LeRobot datasets (codebase v3.0 and v2.1) read from a local folder into Episodes (`data.source=lerobot`).

The layouts (LeRobot's `lerobot/datasets/utils.py` names them; `meta/info.json` holds the path templates):

  v3.0  meta/info.json, meta/tasks.parquet (index: task string, column task_index),
        meta/episodes/chunk-XXX/file-XXX.parquet (one row per episode: length, dataset_from_index/_to_index,
        data/chunk_index, data/file_index, videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp}),
        data/chunk-XXX/file-XXX.parquet (many episodes per file), videos/<key>/chunk-XXX/file-XXX.mp4 (many
        episodes one after another: an episode is [from_timestamp, to_timestamp) of its file)
  v2.1  meta/info.json, meta/tasks.jsonl, meta/episodes.jsonl, data/chunk-XXX/episode_XXXXXX.parquet and
        videos/chunk-XXX/<key>/episode_XXXXXX.mp4 (one of each per episode, chunk = episode // chunks_size)

Every data row has timestamp, frame_index, episode_index, index and task_index next to the features. A camera
is a feature of dtype "video" (frames in the mp4 at the row's timestamp, plus from_timestamp in v3.0) or
"image" (an encoded PNG/JPEG inside the parquet row). `LeRobotMapping` says which features are the cameras,
the state and the action; the defaults are LeRobot's conventions, so a standard dataset needs no flags.

What we make of it: one Episode per LeRobot episode, its frames padded to square (black bars, the camera's
geometry kept, as openpi's resize-with-pad) and resized to `frame_size`, its instruction the task string of its
first frame. Decoded frames are cached (data/frame_cache.py) so that a second run does not decode again. The
dataset's own stats are not read: training computes its statistics from its training episodes.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import logging
import os
import time

import numpy as np

from tinyvla_jax import extras
from tinyvla_jax.data import frame_cache, video
from tinyvla_jax.data.augment import pad_resize
from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.errors import DataError, MissingFileError, UserError

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("v2.1", "v3.0")
CAMERA_PREFIX = "observation.images."
INFO = os.path.join("meta", "info.json")


@dataclasses.dataclass(frozen=True)
class LeRobotMapping:
  """Which LeRobot features feed the model. cameras=None: every image/video feature whose key starts with
  `observation.images.`, in info.json's order."""

  cameras: tuple[str, ...] | None = None
  state: str = "observation.state"
  action: str = "action"


@dataclasses.dataclass(frozen=True)
class _EpisodeRef:
  index: int
  length: int
  data_file: str  # relative to the dataset root
  videos: dict[str, tuple[str, float]]  # camera key -> (video file relative to the root, from_timestamp)


def parquet():
  return extras.require("pyarrow.parquet", extra="lerobot", purpose="LeRobot datasets")


def read_info(path: str) -> dict:
  if not os.path.isdir(path):
    raise MissingFileError(f"no LeRobot dataset at {path!r} (data.path): expected a directory with {INFO}")
  info_path = os.path.join(path, INFO)
  try:
    with open(info_path) as f:
      info = json.load(f)
  except FileNotFoundError:
    raise MissingFileError(f"{info_path} is missing: {path!r} is not a LeRobot dataset (data.path)") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{info_path} is not valid JSON ({e})") from None
  version = info.get("codebase_version")
  if version not in SUPPORTED_VERSIONS:
    raise UserError(f"{info_path}: codebase_version {version!r} is not supported (this reader reads "
                     f"{', '.join(SUPPORTED_VERSIONS)}; convert older datasets with LeRobot's converter)")
  for key in ("fps", "features", "data_path"):
    if key not in info:
      raise UserError(f"{info_path} has no {key!r} entry")
  return info


class LeRobotFolder:
  """A local LeRobot dataset. `LeRobotFolder(path)` reads and checks its metadata; `load` reads the episodes."""

  def __init__(self, path: str):
    self.path = os.fspath(path)
    self.info = read_info(self.path)
    self.version = self.info["codebase_version"]
    self.fps = float(self.info["fps"])
    self.features: dict = self.info["features"]
    if self.version == "v3.0":
      self.tasks = self._tasks_v3()
      self.episodes = self._episodes_v3()
    else:
      self.tasks = self._tasks_v2()
      self.episodes = self._episodes_v2()
    if not self.episodes:
      raise UserError(f"{self.path}: the dataset lists no episodes")

  # --- metadata -----------------------------------------------------------------------------------

  def _file(self, rel: str) -> str:
    return os.path.join(self.path, rel)

  def _read_table(self, rel: str, columns: list[str] | None = None):
    full = self._file(rel)
    if not os.path.exists(full):
      raise MissingFileError(f"{full} is missing (listed by {os.path.join(self.path, INFO)} / the episode metadata)")
    try:
      return parquet().read_table(full, columns=columns)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a bad file
      raise DataError(f"{full}: cannot read the parquet file ({type(error).__name__}: {error})") from None

  def _tasks_v3(self) -> dict[int, str]:
    table = self._read_table(os.path.join("meta", "tasks.parquet")).to_pydict()
    names = table.get("task") or table.get("__index_level_0__")
    if names is None or "task_index" not in table:
      raise UserError(f"{self._file('meta/tasks.parquet')}: expected the task strings (its index) and task_index")
    return {int(i): str(t) for i, t in zip(table["task_index"], names)}

  def _tasks_v2(self) -> dict[int, str]:
    rows = self._jsonl(os.path.join("meta", "tasks.jsonl"))
    return {int(r["task_index"]): str(r["task"]) for r in rows}

  def _jsonl(self, rel: str) -> list[dict]:
    full = self._file(rel)
    try:
      with open(full) as f:
        return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
      raise MissingFileError(f"{full} is missing: {self.path!r} is not a complete LeRobot {self.version} dataset") from None
    except json.JSONDecodeError as e:
      raise UserError(f"{full} is not valid JSON lines ({e})") from None

  def _episodes_v3(self) -> list[_EpisodeRef]:
    files = sorted(glob.glob(os.path.join(self.path, "meta", "episodes", "chunk-*", "file-*.parquet")))
    if not files:
      raise MissingFileError(f"{self.path}/meta/episodes/ has no chunk-XXX/file-XXX.parquet: not a complete "
                              "LeRobot v3.0 dataset")
    keys = self.video_keys()
    refs = []
    for full in files:
      rel = os.path.relpath(full, self.path)
      table = self._read_table(rel)
      names = set(table.schema.names)
      need = ["episode_index", "length", "data/chunk_index", "data/file_index"]
      for key in keys:
        need += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
      missing = [c for c in need if c not in names]
      if missing:
        raise UserError(f"{full}: column {missing[0]!r} is missing from the episode metadata")
      cols = table.select(need).to_pydict()
      for i in range(table.num_rows):
        videos = {}
        for key in keys:
          rel_video = self.info["video_path"].format(video_key=key, chunk_index=cols[f"videos/{key}/chunk_index"][i],
                                                     file_index=cols[f"videos/{key}/file_index"][i])
          videos[key] = (rel_video, float(cols[f"videos/{key}/from_timestamp"][i]))
        data_file = self.info["data_path"].format(chunk_index=cols["data/chunk_index"][i],
                                                  file_index=cols["data/file_index"][i])
        refs.append(_EpisodeRef(int(cols["episode_index"][i]), int(cols["length"][i]), data_file, videos))
    return sorted(refs, key=lambda r: r.index)

  def _episodes_v2(self) -> list[_EpisodeRef]:
    chunk_size = int(self.info.get("chunks_size", 1000))
    keys = self.video_keys()
    refs = []
    for row in self._jsonl(os.path.join("meta", "episodes.jsonl")):
      e = int(row["episode_index"])
      chunk = e // chunk_size
      videos = {key: (self.info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=e), 0.0)
                for key in keys}
      refs.append(_EpisodeRef(e, int(row["length"]),
                              self.info["data_path"].format(episode_chunk=chunk, episode_index=e), videos))
    return sorted(refs, key=lambda r: r.index)

  # --- features -----------------------------------------------------------------------------------

  def video_keys(self) -> list[str]:
    return [k for k, f in self.features.items() if f.get("dtype") == "video"]

  def camera_keys(self) -> list[str]:
    return [k for k, f in self.features.items() if f.get("dtype") in ("video", "image") and k.startswith(CAMERA_PREFIX)]

  def resolve(self, mapping: LeRobotMapping) -> LeRobotMapping:
    """The mapping with its cameras filled in, every key checked against info.json."""
    info_path = os.path.join(self.path, INFO)
    cameras = tuple(mapping.cameras) if mapping.cameras else tuple(self.camera_keys())
    if not cameras:
      raise UserError(f"{info_path} has no image or video feature named {CAMERA_PREFIX}*: name the camera "
                       "features with --config.data.cameras=KEY[,KEY]")
    for name, keys, kinds in (("data.cameras", cameras, ("video", "image")), ("data.lerobot_state", (mapping.state,),
                                                                            ("float32", "float64")),
                              ("data.lerobot_action", (mapping.action,), ("float32", "float64"))):
      for key in keys:
        feature = self.features.get(key)
        if feature is None:
          raise UserError(f"{info_path} has no feature {key!r} ({name}); it has: {', '.join(self.features)}")
        if feature.get("dtype") not in kinds:
          raise UserError(f"{info_path}: feature {key!r} ({name}) is {feature.get('dtype')}, expected one of "
                           f"{', '.join(kinds)}")
        if kinds[0] == "float32" and len(feature.get("shape", ())) != 1:
          raise UserError(f"{info_path}: feature {key!r} ({name}) has shape {feature.get('shape')}; a 1-d vector "
                           "is expected")
    return LeRobotMapping(cameras=cameras, state=mapping.state, action=mapping.action)

  # --- episodes -----------------------------------------------------------------------------------

  def load(self, mapping: LeRobotMapping = LeRobotMapping(), *, frame_size: int, tasks: list[str] | None = None,
           max_episodes_per_task: int | None = None, cache: bool = True) -> list[Episode]:
    """Episodes with their frames at frame_size x frame_size (decoded once; cached when `cache`)."""
    mapping = self.resolve(mapping)
    rows = self._rows(mapping)
    episodes_rows = []
    per_task: dict[str, int] = {}
    for ref in self.episodes:
      r = rows.get(ref.index)
      if r is None or len(r["frame_index"]) != ref.length:
        got = 0 if r is None else len(r["frame_index"])
        raise DataError(f"{self._file(ref.data_file)}: episode {ref.index} has {got} rows but the episode metadata "
                        f"says {ref.length}")
      task = self.tasks.get(int(r["task_index"][0]))
      if task is None:
        raise DataError(f"{self._file(ref.data_file)}: episode {ref.index} has task_index {r['task_index'][0]}, "
                        "which the task list does not have")
      if tasks is not None and task not in tasks:
        continue
      per_task[task] = per_task.get(task, 0) + 1
      if max_episodes_per_task is not None and per_task[task] > max_episodes_per_task:
        continue
      episodes_rows.append((ref, r, task))
    if tasks is not None:
      missing = [t for t in tasks if t not in per_task]
      if missing:
        raise UserError(f"task {missing[0]!r} (data.tasks) is not in {self.path}, which has "
                         f"{'; '.join(sorted(set(self.tasks.values())))}")
    images = {key: self._camera_frames(key, episodes_rows, frame_size=frame_size, cache=cache)
              for key in mapping.cameras}
    out = []
    for i, (ref, r, task) in enumerate(episodes_rows):
      views = np.stack([images[key][i] for key in mapping.cameras], axis=1)
      out.append(Episode(images=views, states=r["state"], actions=r["action"], instruction=task, task=task))
    return out

  def _rows(self, mapping: LeRobotMapping) -> dict[int, dict[str, np.ndarray]]:
    """The parquet rows of every episode, by episode index, sorted by frame_index."""
    image_keys = [k for k in mapping.cameras if self.features[k]["dtype"] == "image"]
    columns = ["episode_index", "frame_index", "timestamp", "task_index", mapping.state, mapping.action] + image_keys
    out: dict[int, dict[str, np.ndarray]] = {}
    for rel in sorted({ref.data_file for ref in self.episodes}):
      table = self._read_table(rel)
      missing = [c for c in columns if c not in table.schema.names]
      if missing:
        raise DataError(f"{self._file(rel)}: column {missing[0]!r} is missing (info.json lists it as a feature)")
      table = table.select(columns)
      episode = table.column("episode_index").to_numpy()
      data = {"episode_index": episode, "frame_index": table.column("frame_index").to_numpy(),
              "timestamp": table.column("timestamp").to_numpy().astype(np.float64),
              "task_index": table.column("task_index").to_numpy(),
              "state": _vectors(table.column(mapping.state), self._file(rel), mapping.state),
              "action": _vectors(table.column(mapping.action), self._file(rel), mapping.action)}
      for key in image_keys:
        data[key] = np.asarray(table.column(key).to_pylist(), dtype=object)
      for e in np.unique(episode):
        sel = np.flatnonzero(episode == e)
        sel = sel[np.argsort(data["frame_index"][sel], kind="stable")]
        out[int(e)] = {k: v[sel] for k, v in data.items()}
    return out

  def _camera_frames(self, key: str, episodes_rows, *, frame_size: int, cache: bool) -> list[np.ndarray]:
    """Every chosen episode's frames of one camera at frame_size, from the cache or decoded (and cached)."""
    kind = self.features[key]["dtype"]
    if kind == "video":
      for ref, _, _ in episodes_rows:
        if not os.path.exists(self._file(ref.videos[key][0])):
          raise MissingFileError(f"{self._file(ref.videos[key][0])} is missing (the video of {key!r} for episode "
                                 f"{ref.index})")
    files = sorted({ref.data_file for ref, _, _ in episodes_rows} |
                   ({ref.videos[key][0] for ref, _, _ in episodes_rows} if kind == "video" else set()))
    cache_key = frame_cache.key(root=self.path, camera=key, frame_size=frame_size, files=files,
                                episodes=[ref.index for ref, _, _ in episodes_rows])
    lengths = [ref.length for ref, _, _ in episodes_rows]
    cached = frame_cache.load(cache_key) if cache else None
    if cached is not None and len(cached) == sum(lengths):
      return np.split(cached, np.cumsum(lengths)[:-1])
    start = time.perf_counter()
    frames = []
    for ref, r, _ in episodes_rows:
      if kind == "video":
        rel, offset = ref.videos[key]
        raw = video.decode_frames(self._file(rel), offset + r["timestamp"], tolerance=0.4 / self.fps)
      else:
        raw = [_decode_image(cell, self.path, f"{self._file(ref.data_file)} ({key}, episode {ref.index})")
               for cell in r[key]]
      frames.append(np.stack([pad_resize(f, frame_size) for f in raw]))
    total, seconds = sum(lengths), time.perf_counter() - start
    log.info("decoded %d frames of %s in %.1f s (%.0f frames/s)", total, key, seconds, total / max(seconds, 1e-9))
    if cache:
      frame_cache.save(cache_key, np.concatenate(frames))
    return frames


def _vectors(column, path: str, key: str) -> np.ndarray:
  """A column of fixed-size float lists as float32 [N, D]."""
  values = column.to_pylist()
  try:
    out = np.asarray(values, np.float32)
  except (ValueError, TypeError):
    raise DataError(f"{path}: column {key!r} holds vectors of different lengths") from None
  if out.ndim != 2:
    raise DataError(f"{path}: column {key!r} is not a column of vectors (shape {out.shape})")
  return out


def _decode_image(cell, root: str, where: str) -> np.ndarray:
  """An image cell of a LeRobot parquet ({"bytes": PNG/JPEG bytes, "path": ...}) as uint8 [H, W, 3]."""
  from PIL import Image
  try:
    if isinstance(cell, dict) and cell.get("bytes"):
      image = Image.open(io.BytesIO(cell["bytes"]))
    elif isinstance(cell, dict) and cell.get("path"):
      image = Image.open(os.path.join(root, cell["path"]))
    else:
      raise ValueError("neither bytes nor a path")
    return np.asarray(image.convert("RGB"))
  except Exception as error:  # noqa: BLE001 - PIL raises several types for a bad image
    raise DataError(f"{where}: cannot decode an image ({type(error).__name__}: {error})") from None
