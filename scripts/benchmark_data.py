"""Why the episode store is zarr, and whether the loader keeps up: sizes and read speeds, printed as JSON.

  python scripts/benchmark_data.py [--data PATH] [--reads 200]

Formats compared on the same frames (default: the shipped dataset):
  zarr-dir-cN   our store: images chunked N frames, zstd level 9, one file per chunk
  codec-*       other zarr codecs at 64-frame chunks (why zstd 9)
  zarr-zip      the same chunks (N=64) packed in one uncompressed zip (how the shipped dataset travels)
  npz-episode   one np.savez_compressed file per episode (zlib), the simple alternative
  npy-raw       one uncompressed .npy, memory-mapped: the speed ceiling, at full size
Figures: bytes on disk, seconds to read everything, milliseconds per random single-frame read (what a
loader streaming from disk would pay), and the in-memory loader's time per batch (crop augmentation on)
next to nothing else: compare it with the train step time from scripts/benchmark.py.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np
from absl import flags

from tinyvla_jax import cli
from tinyvla_jax.data import sources, store
from tinyvla_jax.data.loader import ChunkLoader
from tinyvla_jax.data.preprocess import Preprocessor
from tinyvla_jax.data.byte_tokenizer import ByteTokenizer

_DATA = flags.DEFINE_string("data", None, "Episode dataset (default: the shipped one).")
_READS = flags.DEFINE_integer("reads", 200, "Random single-frame reads per format.")


def du(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files)


def timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t0


def write_zarr(path: str, images: np.ndarray, chunk: int) -> None:
  import zarr
  root = zarr.open_group(path, mode="w")
  arr = root.create_array("images", shape=images.shape, dtype="uint8", chunks=(chunk, *images.shape[1:]),
                          compressors=store._compressor())  # noqa: SLF001 - the store's own codec
  arr[:] = images


def main(argv):
  del argv
  import zarr
  ds = store.EpisodeStore(_DATA.value or sources.SHIPPED_DATASET)
  images = np.asarray(ds.arrays["images"][:ds.num_steps])
  ends = ds.episode_ends
  starts = np.concatenate([[0], ends[:-1]])
  rng = np.random.default_rng(0)
  picks = rng.integers(0, len(images), _READS.value)
  tmp = tempfile.mkdtemp()
  results = dict(frames=int(len(images)), frame_shape=list(images.shape[1:]), raw_bytes=int(images.nbytes), formats={})
  try:
    for chunk in (16, 64, 256):
      path = os.path.join(tmp, f"c{chunk}.zarr")
      write_zarr(path, images, chunk)
      arr = zarr.open_group(path, mode="r")["images"]
      _, full = timed(lambda: arr[:])
      _, rand = timed(lambda: [arr[int(i)] for i in picks])
      results["formats"][f"zarr-dir-c{chunk}"] = dict(bytes=du(path), files=sum(len(f) for _, _, f in os.walk(path)),
                                                      read_all_s=round(full, 3),
                                                      random_frame_ms=round(1e3 * rand / len(picks), 3))
    codecs = {"codec-blosc-zstd5-bitshuffle": zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
              "codec-blosc-lz4": zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),
              "codec-zstd3": zarr.codecs.ZstdCodec(level=3)}
    for name, codec in codecs.items():
      path = os.path.join(tmp, name)
      arr = zarr.open_group(path, mode="w").create_array("images", shape=images.shape, dtype="uint8",
                                                          chunks=(64, *images.shape[1:]), compressors=codec)
      _, write = timed(lambda: arr.__setitem__(slice(None), images))
      _, full = timed(lambda: arr[:])
      results["formats"][name] = dict(bytes=du(path), write_s=round(write, 2), read_all_s=round(full, 3))
    zip_path = os.path.join(tmp, "c64.zarr.zip")
    src = os.path.join(tmp, "c64.zarr")
    import zipfile
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as z:
      for r, _, files in os.walk(src):
        for f in files:
          z.write(os.path.join(r, f), os.path.relpath(os.path.join(r, f), src))
    arr = zarr.open_group(zarr.storage.ZipStore(zip_path, mode="r"), mode="r")["images"]
    _, full = timed(lambda: arr[:])
    _, rand = timed(lambda: [arr[int(i)] for i in picks])
    results["formats"]["zarr-zip"] = dict(bytes=du(zip_path), files=1, read_all_s=round(full, 3),
                                          random_frame_ms=round(1e3 * rand / len(picks), 3))

    npz_dir = os.path.join(tmp, "npz")
    os.makedirs(npz_dir)
    for e, (s, t) in enumerate(zip(starts, ends)):
      np.savez_compressed(os.path.join(npz_dir, f"{e:05d}.npz"), images=images[s:t])
    _, full = timed(lambda: [np.load(os.path.join(npz_dir, f"{e:05d}.npz"))["images"] for e in range(len(ends))])
    episode_of = np.searchsorted(ends, picks, side="right")
    _, rand = timed(lambda: [np.load(os.path.join(npz_dir, f"{e:05d}.npz"))["images"][i - starts[e]]
                             for e, i in zip(episode_of, picks)])
    results["formats"]["npz-episode"] = dict(bytes=du(npz_dir), files=len(ends), read_all_s=round(full, 3),
                                             random_frame_ms=round(1e3 * rand / len(picks), 3))

    npy = os.path.join(tmp, "raw.npy")
    np.save(npy, images)
    _, full = timed(lambda: np.array(np.load(npy, mmap_mode="r")))
    mm = np.load(npy, mmap_mode="r")
    _, rand = timed(lambda: [np.array(mm[int(i)]) for i in picks])
    results["formats"]["npy-raw"] = dict(bytes=du(npy), files=1, read_all_s=round(full, 3),
                                         random_frame_ms=round(1e3 * rand / len(picks), 3))
  finally:
    shutil.rmtree(tmp)

  episodes = ds.load()
  for batch_size in (4, 32):
    preprocess = Preprocessor(stats=ds.stats(), tokenizer=ByteTokenizer(), max_text_len=64, crop_window=64)
    loader = ChunkLoader(episodes, preprocess=preprocess, horizon=16, batch_size=batch_size, augment=True)
    it = loader.batches(0)
    next(it)
    _, t = timed(lambda: [next(it) for _ in range(50)])
    results[f"loader_batch_ms_b{batch_size}"] = round(1e3 * t / 50, 2)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  cli.run(main)
