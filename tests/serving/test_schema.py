"""The observation schema: what is accepted, and the one-line error for each thing that is not."""

from __future__ import annotations

import numpy as np
import pytest

from tinyvla_jax.serving.schema import ObservationError, ObservationSchema

SCHEMA = ObservationSchema(cameras=("corner2", "topview"), frame_shape=(8, 8, 3), state_dim=4, obs_steps=2,
                           horizon=4, action_dim=4)


def good(k=1):
  shape = (8, 8, 3) if k == 1 else (k, 8, 8, 3)
  return {"images": {"corner2": np.zeros(shape, np.uint8), "topview": np.ones(shape, np.uint8)},
          "state": np.zeros(4 if k == 1 else (k, 4), np.float64), "prompt": "open the drawer"}


def test_one_frame_or_a_history_are_accepted():
  one = SCHEMA.check(good())
  assert one.frames.shape == (1, 2, 8, 8, 3) and one.states.shape == (1, 4) and one.states.dtype == np.float32
  two = SCHEMA.check(good(2))
  assert two.frames.shape == (2, 2, 8, 8, 3) and (two.frames[:, 1] == 1).all() and two.noise_key is None
  keyed = SCHEMA.check(dict(good(), noise_key=np.array([3, 4], np.uint32)))
  assert keyed.noise_key.tolist() == [3, 4]
  described = SCHEMA.describe()
  assert described["images"]["topview"]["shape"] == [8, 8, 3] and described["obs_steps"] == 2


def _with(**changes):
  obs = good()
  for key, value in changes.items():
    if key.startswith("images/"):
      obs["images"][key.split("/")[1]] = value
    elif value is None:
      del obs[key]
    else:
      obs[key] = value
  return obs


@pytest.mark.parametrize("obs, says", [
    ([1, 2], "an observation is a map"),
    (_with(prompt=None), "has no 'prompt'"),
    (_with(images=None), "has no 'images'"),
    (_with(extra=1), "unknown observation key 'extra'"),
    (_with(**{"images/wrist": np.zeros((8, 8, 3), np.uint8)}), "unknown camera 'wrist'.*corner2, topview"),
    ({**good(), "images": {"corner2": np.zeros((8, 8, 3), np.uint8)}}, "no frame of camera 'topview'"),
    (_with(**{"images/corner2": np.zeros((8, 8, 3), np.float32)}), "'images/corner2' has dtype float32"),
    (_with(**{"images/corner2": np.zeros((9, 8, 3), np.uint8)}), r"shape \[9, 8, 3\]; expected \[8, 8, 3\]"),
    (_with(**{"images/corner2": np.zeros((3, 8, 8, 3), np.uint8)}), r"or \[k<=2, 8, 8, 3\]"),
    (_with(**{"images/corner2": [[0]]}), "must be a numpy uint8 array"),
    ({**good(2), "images": {"corner2": np.zeros((2, 8, 8, 3), np.uint8), "topview": np.zeros((8, 8, 3), np.uint8)}},
     "histories differ"),
    (_with(state=np.zeros(5)), r"'state' has shape \[5\]; expected \[4\]"),
    (_with(state=np.array(["a"] * 4)), "'state' must be a numeric numpy array"),
    (_with(state=np.array([0, np.nan, 0, 0])), "non-finite"),
    (_with(state=np.array([0, np.inf, 0, 0])), "non-finite"),
    (_with(prompt=""), "non-empty string"),
    (_with(prompt=b"bytes"), "non-empty string"),
    (_with(prompt="x" * 5000), "at most 2000"),
    (_with(noise_key=np.array([1, 2], np.int64)), "'noise_key' must be uint32"),
])
def test_each_bad_observation_names_what_is_wrong(obs, says):
  with pytest.raises(ObservationError, match=says):
    SCHEMA.check(obs)
