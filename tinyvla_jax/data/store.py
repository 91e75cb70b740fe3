"""The on-disk episode dataset: a zarr store of concatenated steps plus a JSON card, as Diffusion Policy does.

A dataset is a directory:

    PATH/card.json          what is inside: format, version, cameras, image size, tasks with their
                            instructions and counts (episodes kept, expert attempts, successes)
    PATH/stats.json         statistics of all steps, for reading (training computes its own)
    PATH/episodes.zarr/     appendable (written by collection), or
    PATH/episodes.zarr.zip  the same, packed into one read-only file (the shipped dataset)

Inside the zarr group (N steps in all, E episodes):

    data/images             uint8   [N, V, H, W, 3]   chunked along N (64 frames), zstd compressed
    data/states             float32 [N, 4]
    data/actions            float32 [N, 4]
    meta/task_index         int32   [E]   into card["tasks"] (in card order)
    meta/instruction_index  int32   [E]   into that task's card["tasks"][task]["instructions"]
    meta/setup_seed         int64   [E]   the seed that placed objects and goal (MetaWorldTask.reset)
    meta/episode_ends       int64   [E]   exclusive end of each episode in N: the commit record

Crash safety: an episode's steps and meta entries are written first and `meta/episode_ends` last, so an
interrupted append leaves only trailing data past the last episode end. Readers ignore it and a writer
truncates it on open: a stored episode is always whole. The card is rewritten atomically (tmp + rename).

Why zarr (measured by scripts/benchmark_store.py, see the README): chunked random access to frames,
appends without rewriting, and one compressed file to ship, at the size of `np.savez_compressed`.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Iterable

import numpy as np

from tinyvla_jax.data.episodes import Episode
from tinyvla_jax.data.normalize import NormStats
from tinyvla_jax.errors import DataError, MissingExtraError, MissingFileError, UserError

FORMAT = "tinyvla_jax.episodes"
VERSION = 1
CARD, STATS, ZARR_DIR, ZARR_ZIP = "card.json", "stats.json", "episodes.zarr", "episodes.zarr.zip"
META_KEYS = ("task_index", "instruction_index", "setup_seed")
CHUNK_FRAMES = 64  # ~64 frames per image chunk: a random frame costs one ~0.3 MB decode at 72 px


def _zarr():
  try:
    import zarr
  except ImportError:
    raise MissingExtraError("reading episode datasets needs zarr: pip install 'zarr>=3'") from None
  return zarr


def _compressor():
  # zstd level 9: 3.5 MB for the shipped 6,370 frames (99 MB raw), read back in 0.5 s. Blosc-zstd with bit
  # shuffle was 6.8 MB, np.savez_compressed 4.2 MB, level 19 3.0 MB but 25x slower to write
  # (scripts/benchmark_data.py).
  return _zarr().codecs.ZstdCodec(level=9)


def write_json_atomic(path: str, obj) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-", suffix=".json")
  os.fchmod(fd, 0o644)  # mkstemp makes it private; these files are for every reader of the directory
  with os.fdopen(fd, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


class EpisodeStore:
  """Read side. `EpisodeStore(path)` validates the card and arrays; every problem is one line naming the file."""

  def __init__(self, path: str):
    self.path = os.fspath(path)
    if not os.path.isdir(self.path):
      raise MissingFileError(f"no episode dataset at {self.path!r} (data.path): expected a directory with "
                              f"{CARD} and {ZARR_DIR}/ (make one with scripts/collect_metaworld.py)")
    self.card = read_card(self.path)
    self.root = _open_group(self.path, mode="r")
    self._check()

  # --- what is inside ---
  @property
  def cameras(self) -> tuple[str, ...]:
    return tuple(self.card["cameras"])

  @property
  def task_names(self) -> tuple[str, ...]:
    return tuple(self.card["tasks"])

  @property
  def num_episodes(self) -> int:
    return len(self.episode_ends)

  @property
  def num_steps(self) -> int:
    return int(self.episode_ends[-1]) if self.num_episodes else 0

  def _check(self) -> None:
    try:
      data, meta = self.root["data"], self.root["meta"]
      arrays = {k: data[k] for k in ("images", "states", "actions")}
      ends = np.asarray(meta["episode_ends"][:], np.int64)
      meta_values = {k: np.asarray(meta[k][:]) for k in META_KEYS}
    except KeyError as e:
      raise UserError(f"{self.path}: the zarr store is missing {e}: not a {FORMAT} dataset, or damaged") from None
    e = len(ends)
    short = [k for k, v in meta_values.items() if len(v) < e]
    if short:
      raise UserError(f"{self.path}: meta/{short[0]} has fewer entries than meta/episode_ends ({e}): damaged dataset")
    self.episode_ends = ends
    self.meta = {k: v[:e] for k, v in meta_values.items()}
    starts = np.concatenate([[0], ends[:-1]])
    if e and (np.any(ends - starts <= 0)):
      bad = int(np.argmax(ends - starts <= 0))
      raise UserError(f"{self.path}: episode {bad} has no steps (meta/episode_ends not increasing)")
    for k, a in arrays.items():
      if a.shape[0] < self.num_steps:
        raise UserError(f"{self.path}: data/{k} has {a.shape[0]} steps but meta/episode_ends says "
                         f"{self.num_steps}: damaged dataset")
    v, h, w = arrays["images"].shape[1:4]
    if v != len(self.cameras) or h != w or h != self.card["image_size"]:
      raise UserError(f"{self.path}: data/images is {arrays['images'].shape[1:]} but {CARD} says "
                       f"{len(self.cameras)} cameras at {self.card['image_size']} px")
    tasks = list(self.card["tasks"])
    if e and (self.meta["task_index"].min() < 0 or self.meta["task_index"].max() >= len(tasks)):
      raise UserError(f"{self.path}: meta/task_index points outside the {len(tasks)} tasks of {CARD}")
    for i in range(e):
      task = tasks[self.meta["task_index"][i]]
      if not 0 <= self.meta["instruction_index"][i] < len(self.card["tasks"][task]["instructions"]):
        raise UserError(f"{self.path}: episode {i} ({task}) has an instruction index outside {CARD}")
    self.arrays = arrays

  def camera_indices(self, cameras: Iterable[str] | None) -> list[int]:
    if cameras is None:
      return list(range(len(self.cameras)))
    cameras = list(cameras)
    missing = [c for c in cameras if c not in self.cameras]
    if missing:
      raise UserError(f"camera {missing[0]!r} (data.cameras) is not in {self.path}, which has "
                       f"{', '.join(self.cameras)}")
    return [self.cameras.index(c) for c in cameras]

  def episode_info(self, i: int) -> dict:
    task = self.task_names[self.meta["task_index"][i]]
    return dict(task=task, instruction=self.card["tasks"][task]["instructions"][self.meta["instruction_index"][i]],
                setup_seed=int(self.meta["setup_seed"][i]),
                start=int(self.episode_ends[i - 1]) if i else 0, end=int(self.episode_ends[i]))

  def load(self, *, cameras: Iterable[str] | None = None, tasks: Iterable[str] | None = None,
           max_episodes_per_task: int | None = None) -> list[Episode]:
    """Episodes into memory (one decode of the image chunks; each episode is a view into one array), in the
    order and selection of `select`."""
    views = self.camera_indices(cameras)
    chosen = self.select(tasks=tasks, max_episodes_per_task=max_episodes_per_task)
    if not chosen:
      return []
    n = self.num_steps
    images = self.read("images", n)
    if views != list(range(images.shape[1])):
      images = images[:, views]
    states = self.read("states", n).astype(np.float32)
    actions = self.read("actions", n).astype(np.float32)
    return [Episode(images=images[c["start"]:c["end"]], states=states[c["start"]:c["end"]],
                    actions=actions[c["start"]:c["end"]], instruction=c["instruction"], task=c["task"],
                    setup_seed=c["setup_seed"])
            for c in chosen]

  def select(self, *, tasks: Iterable[str] | None = None, max_episodes_per_task: int | None = None) -> list[dict]:
    """`episode_info` (with its `index`) of the episodes of `tasks` (None: all), the first
    `max_episodes_per_task` of each, in stored order."""
    if tasks is not None:
      tasks = list(tasks)
      missing = [t for t in tasks if t not in self.task_names]
      if missing:
        raise UserError(f"task {missing[0]!r} (data.tasks) is not in {self.path}, which has "
                         f"{', '.join(self.task_names)}")
    chosen, per_task = [], {}
    for i in range(self.num_episodes):
      info = self.episode_info(i)
      if tasks is not None and info["task"] not in tasks:
        continue
      per_task[info["task"]] = per_task.get(info["task"], 0) + 1
      if max_episodes_per_task is not None and per_task[info["task"]] > max_episodes_per_task:
        continue
      chosen.append(dict(info, index=i))
    return chosen

  def read(self, name: str, n: int) -> np.ndarray:
    """The first n steps of data/<name>, one chunk row at a time, so a damaged chunk is named (a single
    read of everything would fail with the codec's message only, e.g. "Zstd decompression error")."""
    array = self.arrays[name]
    out = np.empty((n,) + tuple(array.shape[1:]), array.dtype)
    rows = array.chunks[0]
    for i, start in enumerate(range(0, n, rows)):
      stop = min(start + rows, n)
      try:
        out[start:stop] = array[start:stop]
      except Exception as error:  # noqa: BLE001 - codecs and stores raise many types; all mean "unreadable"
        chunk = "/".join(["c", str(i)] + ["0"] * (array.ndim - 1))
        raise DataError(f"{self.path}: data/{name}/{chunk} (steps {start}-{stop - 1}) is unreadable "
                        f"({type(error).__name__}: {error}): the dataset is damaged; restore it from a copy or "
                        "collect it again") from None
    return out

  def setup_seeds(self) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {t: set() for t in self.task_names}
    for i in range(self.num_episodes):
      info = self.episode_info(i)
      out[info["task"]].add(info["setup_seed"])
    return out

  def stats(self) -> NormStats:
    """Statistics of every stored step (states and actions only: a fast read). Written to stats.json for
    people and other tools to read; never read back as a cache (a cache keyed on size alone went stale
    when a dataset was rewritten with the same number of steps). Training computes its own from its
    training episodes (training/loop.py)."""
    n = self.num_steps
    states = self.read("states", n).astype(np.float32)
    actions = self.read("actions", n).astype(np.float32)
    stats = NormStats.compute(actions=actions, states=states)
    record = dict(stats.to_json(), num_steps=n, **_describe(actions=actions, states=states))
    path = os.path.join(self.path, STATS)
    try:
      with open(path) as f:
        current = json.load(f)
    except (OSError, ValueError):
      current = None
    if current != json.loads(json.dumps(record)):
      try:
        write_json_atomic(path, record)
      except OSError:  # a read-only install: nothing to describe
        pass
    return stats


def _describe(*, actions: np.ndarray, states: np.ndarray) -> dict:
  # Extra statistics for people reading stats.json (Octo keeps these too); training uses NormStats.
  return {f"{name}_{k}": np.asarray(f(x, 0)).round(6).tolist()
          for name, x in (("action", actions), ("state", states))
          for k, f in (("mean", np.mean), ("std", np.std), ("p01", lambda a, ax: np.percentile(a, 1, axis=ax)),
                       ("p99", lambda a, ax: np.percentile(a, 99, axis=ax)))}


def read_card(path: str) -> dict:
  card_path = os.path.join(path, CARD)
  try:
    with open(card_path) as f:
      card = json.load(f)
  except FileNotFoundError:
    raise MissingFileError(f"{card_path} is missing: {path!r} is not an episode dataset "
                            "(make one with scripts/collect_metaworld.py)") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{card_path} is not valid JSON ({e})") from None
  if card.get("format") != FORMAT:
    raise UserError(f"{card_path}: format is {card.get('format')!r}, expected {FORMAT!r}")
  if card.get("version") != VERSION:
    raise UserError(f"{card_path}: version {card.get('version')} is not supported (this code reads {VERSION})")
  for key in ("cameras", "image_size", "tasks", "state_dim", "action_dim"):
    if key not in card:
      raise UserError(f"{card_path} has no {key!r} entry")
  return card


def _open_group(path: str, *, mode: str):
  zarr = _zarr()
  zip_path, dir_path = os.path.join(path, ZARR_ZIP), os.path.join(path, ZARR_DIR)
  if mode == "r" and os.path.exists(zip_path) and not os.path.exists(dir_path):
    return zarr.open_group(zarr.storage.ZipStore(zip_path, mode="r"), mode="r")
  if mode == "r" and not os.path.isdir(dir_path):
    raise MissingFileError(f"{path} has {CARD} but neither {ZARR_DIR}/ nor {ZARR_ZIP}")
  return zarr.open_group(dir_path, mode=mode)


class EpisodeWriter:
  """Append side (collection). Opening an existing dataset resumes it: the card must agree on cameras
  and image size, and anything written past the last committed episode is dropped."""

  def __init__(self, path: str, *, cameras: tuple[str, ...], image_size: int, state_dim: int, action_dim: int,
               source: dict | None = None):
    self.path = os.fspath(path)
    os.makedirs(self.path, exist_ok=True)
    zarr = _zarr()
    card_path = os.path.join(self.path, CARD)
    if os.path.exists(card_path):
      self.card = read_card(self.path)
      want = dict(cameras=list(cameras), image_size=image_size)
      have = dict(cameras=self.card["cameras"], image_size=self.card["image_size"])
      if want != have:
        raise UserError(f"{self.path} was collected with {have}, not {want}: use the same --cameras/--size to "
                         "resume, or another --out")
      if os.path.exists(os.path.join(self.path, ZARR_ZIP)):
        raise UserError(f"{self.path} is packed ({ZARR_ZIP}) and read-only: collect into another --out")
      self.root = zarr.open_group(os.path.join(self.path, ZARR_DIR), mode="a")
      self._truncate_uncommitted()
    else:
      self.card = dict(format=FORMAT, version=VERSION, cameras=list(cameras), image_size=int(image_size),
                       state_dim=int(state_dim), action_dim=int(action_dim), tasks={}, num_episodes=0, num_steps=0,
                       source=source or {})
      self.root = zarr.open_group(os.path.join(self.path, ZARR_DIR), mode="w")
      v = len(cameras)
      self.root.create_array("data/images", shape=(0, v, image_size, image_size, 3), dtype="uint8",
                             chunks=(CHUNK_FRAMES, v, image_size, image_size, 3), compressors=_compressor())
      for name, dim in (("states", state_dim), ("actions", action_dim)):
        self.root.create_array(f"data/{name}", shape=(0, dim), dtype="float32", chunks=(4096, dim),
                               compressors=_compressor())
      for name, dtype in (("task_index", "int32"), ("instruction_index", "int32"), ("setup_seed", "int64"),
                          ("episode_ends", "int64")):
        self.root.create_array(f"meta/{name}", shape=(0,), dtype=dtype, chunks=(4096,))
      write_json_atomic(card_path, self.card)
    self.card.setdefault("source", source or {})

  def _truncate_uncommitted(self) -> None:
    ends = self.root["meta/episode_ends"]
    e = ends.shape[0]
    n = int(ends[e - 1]) if e else 0
    for k in META_KEYS:
      if self.root[f"meta/{k}"].shape[0] != e:
        self.root[f"meta/{k}"].resize((e,))
    for k in ("images", "states", "actions"):
      a = self.root[f"data/{k}"]
      if a.shape[0] != n:
        a.resize((n, *a.shape[1:]))
    self.card["num_episodes"], self.card["num_steps"] = e, n
    # The per-task counts follow the arrays (the card may lag one episode behind after a crash).
    counts = np.bincount(np.asarray(self.root["meta/task_index"][:e], np.int64), minlength=len(self.card["tasks"]))
    for task, count in zip(self.card["tasks"], counts):
      self.card["tasks"][task]["episodes"] = int(count)

  def ensure_task(self, task: str, instructions: tuple[str, ...]) -> None:
    entry = self.card["tasks"].setdefault(task, dict(instructions=list(instructions), episodes=0, attempts=0,
                                                     successes=0))
    if entry["instructions"] != list(instructions):
      raise UserError(f"{self.path} holds other instructions for {task}: collect into another --out")
    write_json_atomic(os.path.join(self.path, CARD), self.card)

  def task_counts(self, task: str) -> dict:
    return self.card["tasks"][task]

  def record(self, *, task: str, success: bool, episode: Episode | None = None, instruction_index: int = 0,
             setup_seed: int = 0) -> None:
    """One expert attempt; `episode` is stored when given (successful demos, by default)."""
    entry = self.card["tasks"][task]
    if episode is not None:
      n = self.card["num_steps"]
      t = len(episode)
      self.root["data/images"].append(episode.images, axis=0)
      self.root["data/states"].append(episode.states.astype(np.float32), axis=0)
      self.root["data/actions"].append(episode.actions.astype(np.float32), axis=0)
      meta = dict(task_index=list(self.card["tasks"]).index(task), instruction_index=instruction_index,
                  setup_seed=setup_seed)
      for k in META_KEYS:
        self.root[f"meta/{k}"].append(np.asarray([meta[k]]), axis=0)
      self.root["meta/episode_ends"].append(np.asarray([n + t], np.int64), axis=0)  # the commit
      self.card["num_episodes"] += 1
      self.card["num_steps"] = n + t
      entry["episodes"] += 1
    entry["attempts"] += 1
    entry["successes"] += int(success)
    write_json_atomic(os.path.join(self.path, CARD), self.card)

  def finish(self) -> NormStats | None:
    if not self.card["num_episodes"]:
      return None
    return EpisodeStore(self.path).stats()


def pack(path: str) -> str:
  """Pack episodes.zarr/ into episodes.zarr.zip (one read-only file, for shipping) and remove the directory."""
  import shutil
  import zipfile
  src = os.path.join(path, ZARR_DIR)
  dst = os.path.join(path, ZARR_ZIP)
  tmp = dst + ".tmp"
  with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # chunks are already compressed
    for root, _, files in sorted(os.walk(src)):
      for name in sorted(files):
        full = os.path.join(root, name)
        z.write(full, os.path.relpath(full, src))
  os.replace(tmp, dst)
  shutil.rmtree(src)
  EpisodeStore(path)  # proves it reads back
  return dst
