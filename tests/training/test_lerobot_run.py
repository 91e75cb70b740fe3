"""A short training run on a LeRobot v3.0 dataset written by the real lerobot package (tests/data/lerobot_fixtures),
and the model/data size check that comes before any video is decoded."""

from __future__ import annotations

import os

import numpy as np
import pytest

from micro import micro_config

from tinyvla_jax.data import video
from tinyvla_jax.errors import UserError
from tinyvla_jax.recipes import typed
from tinyvla_jax.serving.inference import load_policy
from tinyvla_jax.training import loop
from tinyvla_jax.training.metrics import read_metrics

pytest.importorskip("av")
pytest.importorskip("pyarrow")

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "data", "lerobot_fixtures", "v3.0")


def lerobot_config(**model):
  c = micro_config(epochs=1)
  c.data.source = "lerobot"
  c.data.path = FIXTURE
  c.data.random_crop = True
  c.data.crop_fraction = 0.89
  c.data.val_fraction = 0.34  # one of the three episodes
  c.model.head.state_dim, c.model.head.action_dim, c.model.num_cameras = 3, 2, 2
  c.model.update(model)
  return c


def test_a_lerobot_dataset_trains_and_its_checkpoint_acts(tmp_path, monkeypatch):
  monkeypatch.setenv("TINYVLA_CACHE_DIR", str(tmp_path / "cache"))
  result = loop.train(typed(lerobot_config()), workdir=str(tmp_path / "w"), progress=False)
  rows = [r for r in read_metrics(str(tmp_path / "w")) if "val_loss" in r]
  assert len(rows) == 1 and all(np.isfinite(r["val_loss"]) for r in rows)
  assert result.state.step > 0
  policy = load_policy(str(tmp_path / "w"))
  assert policy.schema.cameras == ("observation.images.top", "observation.images.wrist")
  obs = policy.example_observation()
  obs["prompt"] = "open the drawer"
  actions = policy.infer(obs)["actions"]
  assert actions.shape[-1] == 2 and np.isfinite(actions).all()
  # A robot sends its cameras' own frames (48 x 64 here): the policy pads and resizes them as training did, so
  # the raw frames act exactly as the dataset's stored ones.
  ref = np.load(os.path.join(FIXTURE, "reference.npz"))
  raw = dict(obs, images={"observation.images.top": ref["top"][:1], "observation.images.wrist": ref["wrist"][:1]},
             noise_key=np.array([0, 7], np.uint32))
  from tinyvla_jax.data.lerobot_format import LeRobotFolder
  stored = LeRobotFolder(FIXTURE).load(frame_size=policy.schema.frame_shape[0], cache=False)[0].images[:1]
  resized = dict(raw, images={"observation.images.top": stored[:, 0], "observation.images.wrist": stored[:, 1]})
  np.testing.assert_array_equal(policy.infer(raw)["actions"], policy.infer(resized)["actions"])
  assert "padded to a square" in policy.metadata["observation"]["images"]["observation.images.top"]["resized"]


def test_sizes_that_disagree_with_the_model_are_reported_before_decoding(tmp_path, monkeypatch):
  monkeypatch.setenv("TINYVLA_CACHE_DIR", str(tmp_path / "cache"))

  def no_decoding(*args, **kwargs):
    raise AssertionError("decoded before checking the sizes")
  monkeypatch.setattr(video, "decode_frames", no_decoding)
  config = lerobot_config()
  config.model.head.action_dim = 4
  with pytest.raises(UserError, match=r"the data has 2 where model.head.action_dim=4: set "
                                      r"--config.model.head.action_dim=2"):
    loop.train(typed(config), workdir=str(tmp_path / "w"), progress=False)
  checkpoints = tmp_path / "w" / "checkpoints"
  assert not checkpoints.exists() or not os.listdir(checkpoints)  # nothing trained, nothing saved
