"""Image augmentation for training batches: Diffusion Policy's random crop (train) / center crop (eval); and
`pad_resize`, which brings frames of any shape to a dataset's square frame size (LeRobot data, and a served
policy trained on it).

The window is a fraction of the stored frame (data.crop_fraction 0.89: 64 of 72 px, about Diffusion
Policy's 84 of 96). Training sees a random window, evaluation and the policy the center window, so
both see the same scale; the model then resizes the window to its own input size.
"""

from __future__ import annotations

import numpy as np

from tinyvla_jax import extras
from tinyvla_jax.errors import UserError


def _check(images: np.ndarray, size: int) -> tuple[int, int]:
  if images.ndim < 3 or images.shape[-1] != 3:
    raise UserError(f"images must be [..., H, W, 3], got {images.shape}")
  h, w = images.shape[-3:-1]
  if size > min(h, w):
    raise UserError(f"cannot crop a {size} px window from {h}x{w} images (data.crop_fraction)")
  return h, w


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
  """[..., H, W, 3] -> [..., size, size, 3], the middle window (identity when H = W = size)."""
  h, w = _check(images, size)
  top, left = (h - size) // 2, (w - size) // 2
  return images[..., top:top + size, left:left + size, :]


def random_crop(images: np.ndarray, size: int, rng: np.random.Generator,
                rows: tuple[int, int] | None = None) -> np.ndarray:
  """[N, ..., H, W, 3] -> [N, ..., size, size, 3]: one random window per leading index (per sample and
  per camera when images are [B, V, H, W, 3]). `rows=(first, total)`: these N samples are rows first..
  of a batch of `total` split over hosts; the windows are drawn for all `total` and these rows take theirs,
  so a sample's crop does not depend on how many hosts share the batch."""
  h, w = _check(images, size)
  lead = images.shape[:-3]
  flat = images.reshape(-1, h, w, 3)
  first, total = rows or (0, len(images))
  per_row = len(flat) // max(len(images), 1)
  mine = slice(first * per_row, first * per_row + len(flat))
  tops = rng.integers(0, h - size + 1, size=total * per_row)[mine]
  lefts = rng.integers(0, w - size + 1, size=total * per_row)[mine]
  out = np.stack([f[t:t + size, l:l + size] for f, t, l in zip(flat, tops, lefts)])
  return out.reshape(*lead, size, size, 3)


def crop_window(image_size: int, crop_fraction: float) -> int | None:
  """The side of the crop window for `data.crop_fraction` of stored `image_size` (None: no crop).
  The model resizes the window to model.vision.image_size (72 px stored x 0.89 = 64 = the cpu preset)."""
  if not 0 < crop_fraction <= 1:
    raise UserError(f"data.crop_fraction={crop_fraction} must be in (0, 1]")
  window = int(round(crop_fraction * image_size))
  return None if window >= image_size else max(window, 1)


def pad_resize(frame: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> [size, size, 3]: padded to a square with black (centered), then resized (bilinear with
  antialiasing when shrinking, PIL's). A square frame of the right size is returned as it is."""
  h, w = frame.shape[:2]
  if h == w == size:
    return frame
  side = max(h, w)
  if h != w:
    square = np.zeros((side, side, 3), np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = frame
    frame = square
  image = extras.require("PIL.Image", extra="lerobot", purpose="resizing frames")
  return np.asarray(image.fromarray(frame).resize((size, size), image.Resampling.BILINEAR))
