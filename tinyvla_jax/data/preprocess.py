"""The one preprocessing pipeline between robot data and the model, for training, evaluation and serving.

    raw frames [To][V, H, W, 3] uint8 --crop (random window when training, center otherwise)--> the model
        resizes the window to its image size (models/vision.py)
    robot states [To][S] --normalize (mean/std of the training data)--> concatenated [To*S]
    instruction --TinyVLA's prompt template + the run's tokenizer--> ids [L] + mask [L]
    actions [T, A] <--normalize / unnormalize (min-max to [-1, 1])--> what the policy predicts

The training loader (data/loader.py) and the checkpoint's policy (evaluation/policies.py, a server) both go
through a `Preprocessor`, so inference sees exactly the crops, scales and prompts training saw. Its parts
are stored with every checkpoint (`to_assets`), and `from_assets` rebuilds it from the workdir alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Bool, Float, Int32, UInt8

from tinyvla_jax.data.augment import center_crop, random_crop
from tinyvla_jax.data.normalize import NormStats
from tinyvla_jax.data.tokenizer import tokenizer_from_assets
from tinyvla_jax.errors import UserError

ASSET_KEY = "preprocess"


@dataclasses.dataclass(frozen=True)
class Preprocessor:
  stats: NormStats  # the training episodes' statistics
  tokenizer: Any  # data/prompt.py's PromptEncoding: encode_prompt(text, max_length=) -> (ids, mask); to_asset()
  max_text_len: int  # prompt length in ids (padded / checked)
  crop_window: int | None = None  # side of the crop window in stored pixels; None: the whole frame
  obs_steps: int = 1  # observation history: frames and states of the last obs_steps steps

  def __post_init__(self):
    if self.obs_steps < 1:
      raise UserError(f"model.obs_steps={self.obs_steps} must be >= 1")
    if self.max_text_len < 1:
      raise UserError(f"data.max_text_len={self.max_text_len} must be >= 1")

  # --- the parts ---------------------------------------------------------------------------------

  def encode_prompt(self, instruction: str) -> tuple[Int32[np.ndarray, " l"], Bool[np.ndarray, " l"]]:
    ids, mask = self.tokenizer.encode_prompt(instruction, max_length=self.max_text_len)
    return np.asarray(ids, np.int32), np.asarray(mask, bool)

  def crop(self, images: UInt8[np.ndarray, "*views h w 3"], rng: np.random.Generator | None = None,
           rows: tuple[int, int] | None = None) -> UInt8[np.ndarray, "*views c c 3"]:
    """The crop window of every view: at random (one window per view) when an `rng` is given (training
    augmentation; `rows`: see augment.random_crop), else the center window (validation, evaluation, serving)."""
    if self.crop_window is None:
      return images
    if rng is None:
      return center_crop(images, self.crop_window)
    return random_crop(images, self.crop_window, rng, rows)

  def normalize_state(self, states: Float[np.ndarray, "*t s"]) -> Float[np.ndarray, "*t s"]:
    return self.stats.normalize_state(states)

  def normalize_actions(self, actions: Float[np.ndarray, "*t a"]) -> Float[np.ndarray, "*t a"]:
    return self.stats.normalize_actions(actions)

  def unnormalize_actions(self, actions: Float[np.ndarray, "*t a"]) -> Float[np.ndarray, "*t a"]:
    return self.stats.unnormalize_actions(actions)

  # --- inference ---------------------------------------------------------------------------------

  def observation(self, frames: Sequence[UInt8[np.ndarray, "v h w 3"]], states: Sequence[Float[np.ndarray, " s"]],
                  prompt: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's inputs for one observation (a batch of 1) from the episode's latest frames and states,
    oldest first. Fewer than obs_steps (the episode's start) repeat the first, as the loader pads."""
    if not frames or len(frames) != len(states):
      raise UserError(f"an observation needs as many frames as states (got {len(frames)} and {len(states)})")
    frames, states = list(frames)[-self.obs_steps:], list(states)[-self.obs_steps:]
    pad = self.obs_steps - len(frames)
    frames, states = [frames[0]] * pad + frames, [states[0]] * pad + states
    images = self.crop(np.concatenate([np.asarray(f) for f in frames]))  # [To*V, h, w, 3], oldest first
    state = np.concatenate([self.normalize_state(np.asarray(s, np.float32)) for s in states])
    ids, mask = prompt
    return dict(images=np.ascontiguousarray(images)[None], tokens=ids[None], token_mask=mask[None], state=state[None])

  # --- with the checkpoint -----------------------------------------------------------------------

  def to_assets(self) -> dict:
    """What a checkpoint stores so that `from_assets` rebuilds this pipeline without the data."""
    return {"norm_stats": self.stats.to_json(), "tokenizer": self.tokenizer.to_asset(),
            ASSET_KEY: dict(max_text_len=self.max_text_len, crop_window=self.crop_window, obs_steps=self.obs_steps)}

  @classmethod
  def from_assets(cls, assets: dict, *, max_text_len: int, obs_steps: int) -> "Preprocessor":
    """From a checkpoint's assets. `max_text_len` / `obs_steps` (the run config's) are used by checkpoints
    written before the pipeline was stored (their crop window is under assets["data"])."""
    stored = assets.get(ASSET_KEY) or dict(max_text_len=max_text_len, obs_steps=obs_steps,
                                            crop_window=assets.get("data", {}).get("crop_window"))
    return cls(stats=NormStats.from_json(assets["norm_stats"]), tokenizer=tokenizer_from_assets(assets), **stored)
