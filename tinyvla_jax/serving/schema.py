"""The observation a served policy takes, written down once, and its checks.

    {"images": {"<camera>": uint8 [h, w, 3] or [k, h, w, 3]},   # every camera the model was trained with
     "state": float [S] or [k, S],                               # the robot state, robot units
     "prompt": str,                                              # the instruction
     "noise_key": uint32 [2]}                                    # optional: the sampler's key (reproducibility)

With an observation history (model.obs_steps = To > 1, Diffusion Policy's n_obs_steps) the client sends
the last k <= To frames and states, oldest first, the same k for every camera and the state; fewer than To
repeat the oldest, which is what the model saw at the start of its training episodes. One frame is always
accepted (k = 1), so a client that knows nothing of histories still works (as at an episode's start).
The server is stateless: the history travels with the request, which is what a chunked execution needs
(it predicts every few steps, but the model must see consecutive frames).

Frames are the raw camera frames at the training data's size (the model crops and resizes them as in
training); a frame of another size is refused rather than silently resized into a different picture.
`noise_key` is the raw data of a threefry2x32 key (jax.random.key_data): a client that sends it gets the
same actions for the same observation every time, from this process or another (the evaluator's remote
mode relies on it); without it the policy draws from its own stream.

Every check raises `ObservationError` with one line that names the key and what is wrong.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tinyvla_jax.data.augment import pad_resize
from tinyvla_jax.errors import UserError

KEYS = ("images", "state", "prompt", "noise_key")
MAX_PROMPT_CHARS = 2000


class ObservationError(UserError):
  """A request the policy cannot act on; the message says which key and what to send instead."""


@dataclasses.dataclass(frozen=True)
class Observation:
  """A checked observation: frames [k, V, h, w, 3] uint8 (oldest first, cameras in the model's order),
  states [k, S] float32, the instruction, and the sampler's key data (None: the policy's own stream)."""

  frames: np.ndarray
  states: np.ndarray
  prompt: str
  noise_key: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class ObservationSchema:
  cameras: tuple[str, ...]  # in the order the model stacks them
  frame_shape: tuple[int, int, int]  # (h, w, 3) of one raw frame
  state_dim: int
  obs_steps: int
  horizon: int  # actions per predicted chunk
  action_dim: int
  # Frames of any [h, w, 3] are padded to a square and resized to frame_shape (data/augment.pad_resize), as the
  # training data was (LeRobot datasets); otherwise a frame must have frame_shape already.
  resize_frames: bool = False

  def describe(self) -> dict[str, Any]:
    """The schema as plain data (part of the server's metadata and `policy.metadata`)."""
    h, w, c = self.frame_shape
    extra = dict(resized=f"any [h, w, 3] is padded to a square and resized to {h} x {w}") if self.resize_frames else {}
    return {
        "images": {name: dict(dtype="uint8", shape=[h, w, c], history_shape=[self.obs_steps, h, w, c], **extra)
                   for name in self.cameras},
        "state": dict(dtype="float32", shape=[self.state_dim], history_shape=[self.obs_steps, self.state_dim]),
        "prompt": dict(dtype="str"),
        "noise_key": dict(dtype="uint32", shape=[2], optional=True),
        "obs_steps": self.obs_steps,
        "history": ("send the last obs_steps frames and states, oldest first (a leading axis); fewer repeat "
                    "the oldest"),
        "actions": dict(dtype="float32", shape=[self.horizon, self.action_dim], units="robot"),
    }

  def check(self, obs: Any) -> Observation:
    if not isinstance(obs, dict):
      raise ObservationError(f"an observation is a map with keys {', '.join(KEYS[:3])} (got {type(obs).__name__})")
    unknown = sorted(str(k) for k in obs if k not in KEYS)
    if unknown:
      raise ObservationError(f"unknown observation key {unknown[0]!r}: the keys are {', '.join(KEYS)}")
    for key in KEYS[:3]:
      if key not in obs:
        raise ObservationError(f"the observation has no {key!r} (needs {', '.join(KEYS[:3])})")
    frames, k = self._frames(obs["images"])
    states = self._states(obs["state"], k)
    prompt = obs["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
      raise ObservationError(f"'prompt' must be a non-empty string (the instruction), got {_what(prompt)}")
    if len(prompt) > MAX_PROMPT_CHARS:
      raise ObservationError(f"'prompt' has {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
    return Observation(frames=frames, states=states, prompt=prompt, noise_key=_noise_key(obs.get("noise_key")))

  def _frames(self, images: Any) -> tuple[np.ndarray, int]:
    if not isinstance(images, dict):
      raise ObservationError(f"'images' must map camera names ({', '.join(self.cameras)}) to uint8 frames, "
                             f"got {_what(images)}")
    unknown = [str(c) for c in images if c not in self.cameras]
    if unknown:
      raise ObservationError(f"unknown camera {unknown[0]!r} in 'images': this policy was trained on "
                             f"{', '.join(self.cameras)}")
    missing = [c for c in self.cameras if c not in images]
    if missing:
      raise ObservationError(f"'images' has no frame of camera {missing[0]!r} (needs {', '.join(self.cameras)})")
    per_camera, steps = [], set()
    for name in self.cameras:
      frame = images[name]
      key = f"images/{name}"
      if not isinstance(frame, np.ndarray):
        raise ObservationError(f"{key!r} must be a numpy uint8 array, got {_what(frame)}")
      if frame.dtype != np.uint8:
        raise ObservationError(f"{key!r} has dtype {frame.dtype}; send uint8 RGB frames")
      if frame.ndim == 3:
        frame = frame[None]
      if (self.resize_frames and frame.ndim == 4 and frame.shape[-1] == 3 and min(frame.shape[1:3]) >= 1
          and frame.shape[1:] != self.frame_shape):
        frame = np.stack([pad_resize(f, self.frame_shape[0]) for f in frame])
      if frame.ndim != 4 or frame.shape[1:] != self.frame_shape or not 1 <= frame.shape[0] <= self.obs_steps:
        h, w, c = self.frame_shape
        history = f" or [k<={self.obs_steps}, {h}, {w}, {c}]" if self.obs_steps > 1 else ""
        raise ObservationError(f"{key!r} has shape {list(images[name].shape)}; expected [{h}, {w}, {c}]{history}")
      steps.add(frame.shape[0])
      per_camera.append(frame)
    if len(steps) > 1:
      raise ObservationError(f"the cameras' histories differ in length ({sorted(steps)}); send the same k frames "
                             "for every camera")
    return np.stack(per_camera, axis=1), steps.pop()  # [k, V, h, w, 3]

  def _states(self, state: Any, k: int) -> np.ndarray:
    if not isinstance(state, np.ndarray) or state.dtype.kind not in "fiu":
      raise ObservationError(f"'state' must be a numeric numpy array of shape [{self.state_dim}], got {_what(state)}")
    given = list(state.shape)
    if state.ndim == 1:
      state = state[None]
    if state.shape != (k, self.state_dim):
      expected = f"[{self.state_dim}]" + (f" or [{k}, {self.state_dim}] (as many as the frames)" if k > 1 else "")
      raise ObservationError(f"'state' has shape {given}; expected {expected}")
    state = state.astype(np.float32)
    if not np.isfinite(state).all():
      raise ObservationError("'state' has a non-finite value (NaN or inf)")
    return state


def _noise_key(value: Any) -> np.ndarray | None:
  if value is None:
    return None
  if not isinstance(value, np.ndarray) or value.dtype != np.uint32 or value.shape != (2,):
    raise ObservationError(f"'noise_key' must be uint32 [2] (jax.random.key_data of a threefry key), got {_what(value)}")
  return value


def _what(value: Any) -> str:
  if isinstance(value, np.ndarray):
    return f"{value.dtype} array of shape {list(value.shape)}"
  return type(value).__name__
