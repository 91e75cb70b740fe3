"""Training on the shipped MetaWorld demos, with closed-loop evaluation during training and from the
checkpoint afterwards (needs the `sim` extra)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")
pytest.importorskip("metaworld")

from tinyvla_jax import presets, recipes  # noqa: E402
from tinyvla_jax.data import sources  # noqa: E402
from tinyvla_jax.data.store import EpisodeStore  # noqa: E402
from tinyvla_jax.evaluation import protocol as protocol_lib  # noqa: E402
from tinyvla_jax.evaluation.context import data_context  # noqa: E402
from tinyvla_jax.evaluation.periodic import PeriodicEvaluation  # noqa: E402
from tinyvla_jax.evaluation.policies import VLAPolicy  # noqa: E402
from tinyvla_jax.recipes import typed  # noqa: E402
from tinyvla_jax.serving.inference import InferencePolicy, load_policy  # noqa: E402
from tinyvla_jax.serving.server import PolicyServer  # noqa: E402
from tinyvla_jax.sim import metaworld as mw  # noqa: E402
from tinyvla_jax.training import loop  # noqa: E402
from tinyvla_jax.training.metrics import read_metrics  # noqa: E402

pytestmark = pytest.mark.sim
TASK = "button-press-topdown-v3"


def micro_metaworld_config():
  c = recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny")  # the default data: shipped demos
  c.model.vision.depth = 2
  c.model.language.num_hidden_layers = 1
  c.model.head.down_dims = (16, 32)
  c.model.head.step_embed_dim = 16
  c.model.head.horizon = 8
  c.data.tasks = TASK
  c.data.max_episodes_per_task = 2
  c.data.val_fraction = 0.5
  c.train.epochs = 1
  c.train.tensorboard = False
  c.eval.every_epochs = 1
  c.eval.episodes = 1
  c.eval.max_steps = 8
  c.diffusion.num_inference_steps = 2
  return c


def test_train_on_shipped_demos_then_evaluate_closed_loop(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  c = micro_metaworld_config()
  c.eval.max_steps = 20
  config = typed(c)
  result = loop.train(config, workdir=workdir, progress=False, epoch_hook=PeriodicEvaluation.for_run)
  assert result.history and np.isfinite(result.history[0]["train_loss"])
  evals = [m for m in read_metrics(workdir) if m["split"] == "eval"]
  assert len(evals) == 1 and 0.0 <= evals[0]["success/mean"] <= 1.0 and f"success/{TASK}" in evals[0]
  summary = json.load(open(os.path.join(workdir, "eval", "epoch1", "summary.json")))
  assert summary["tasks"][TASK]["episodes"] == 1
  # Evaluating the checkpoint afterwards, with the same protocol, replays the same episodes exactly: the
  # same setups, the same sampling noise (a function of seed, task and episode only), the same outcome.
  again, _ = protocol_lib.evaluate_checkpoint(workdir, protocol=config.eval.protocol,
                                              out=str(tmp_path / "again"), video=False, progress=False)
  assert again["tasks"][TASK]["setups"] == summary["tasks"][TASK]["setups"]
  # Executing more actions than a chunk holds is refused before any rollout, naming the flag and the horizon.
  with pytest.raises(ValueError, match=r"--action_steps=9 exceeds the policy's chunk of 8 actions"):
    protocol_lib.evaluate_checkpoint(workdir, protocol=protocol_lib.Protocol(action_steps=9), video=False,
                                     progress=False, out=str(tmp_path / "refused"))
  # The training run's closing evaluation (python -m tinyvla_jax.train ends with it) prints the table.
  protocol_lib.evaluate_at_end(config, workdir)
  printed = capsys.readouterr().out
  assert "closed-loop evaluation of the final checkpoint" in printed and "| **mean** |" in printed

  # The checkpoint alone is a policy: params, statistics, tokenizer, crop and the data's setups.
  policy, info = VLAPolicy.from_workdir(workdir)
  data = info["assets"]["data"]
  assert data["crop_window"] == 64 and data["tasks"] == [TASK] and policy.backend.preprocess.crop_window == 64
  # Every setup in the dataset is excluded from evaluation, not only the episodes this run loaded.
  shipped = EpisodeStore(sources.SHIPPED_DATASET).setup_seeds()[TASK]
  assert set(data["setup_seeds"][TASK]) == shipped
  env = mw.MetaWorldTask(TASK, cameras=data["card"]["cameras"], image_size=data["image_size"])
  obs = env.reset(setup_seed=12345)
  policy.start_episode(TASK, "press the button from the top", episode=2)
  chunk = policy(obs)
  env.close()
  # The policy the run evaluated with during training acts exactly as the one restored from its checkpoint.
  backend = policy.backend
  in_training = VLAPolicy(InferencePolicy.for_run(model=backend.model, params=result.state.inference_params,
                                                  preprocess=backend.preprocess, diffusion=config.diffusion,
                                                  data_info=data, seed=policy.seed), seed=policy.seed)
  in_training.start_episode(TASK, "press the button from the top", episode=2)
  np.testing.assert_array_equal(in_training(obs), chunk)
  assert chunk.shape == (8, 4) and np.isfinite(chunk).all()
  # Sampling is clipped to [-1, 1] in normalized space: actions stay inside the data's range.
  stats = backend.preprocess.stats
  assert (chunk >= stats.action_min - 1e-5).all() and (chunk <= stats.action_max + 1e-5).all()


def _recording(policy):
  """Records every chunk the policy's backend returns."""
  chunks, infer = [], policy.backend.infer
  policy.backend.infer = lambda obs: (reply := infer(obs), chunks.append(np.array(reply["actions"])))[0]
  return chunks


def test_remote_evaluation_through_the_server_has_the_in_process_outcomes(tmp_path):
  workdir = str(tmp_path / "run")
  c = micro_metaworld_config()
  c.eval.every_epochs = 0
  c.eval.at_end = False
  config = typed(c)
  loop.train(config, workdir=workdir, progress=False)
  protocol = dataclasses.replace(config.eval.protocol, max_steps=12)
  local, info = VLAPolicy.from_workdir(workdir, seed=protocol.seed)
  local_chunks = _recording(local)
  context = data_context(info["assets"]["data"])
  here = protocol_lib.run(local, context, protocol=protocol, out_dir=None, video=False, progress=False, label="x")
  server = PolicyServer(load_policy(workdir), port=0).start_in_thread()
  try:
    remote = VLAPolicy.remote(server.url, seed=protocol.seed)
    remote_chunks = _recording(remote)
    there = protocol_lib.run(remote, context, protocol=protocol, out_dir=None, video=False, progress=False, label="x")
    # The same requests (frames, states, instruction, key) reach the same computation: identical actions.
    assert len(remote_chunks) == len(local_chunks) == 3
    for a, b in zip(remote_chunks, local_chunks):
      np.testing.assert_array_equal(a, b)
    for task, result in here["tasks"].items():  # every outcome and step count (not the wall times)
      assert there["tasks"][task]["setups"] == result["setups"]
      assert there["tasks"][task]["policy_calls"] == result["policy_calls"] == 3
    # The CLI: `evaluate --policy remote` on the checkpoint's setups writes the same outcomes.
    out = str(tmp_path / "cli")
    proc = subprocess.run([sys.executable, "-m", "tinyvla_jax.evaluate", "--policy", "remote", "--server", server.url,
                           "--workdir", workdir, "--max_steps", "12", "--episodes", str(protocol.episodes),
                           "--seed", str(protocol.seed), "--video=false", "--progress=false",
                           "--out", out], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cli_summary = json.load(open(os.path.join(out, "summary.json")))
    assert cli_summary["tasks"][TASK]["setups"] == here["tasks"][TASK]["setups"]
    assert cli_summary["policy"].startswith("remote-step")
  finally:
    server.stop()


def test_closed_loop_eval_refuses_non_metaworld_runs(tmp_path):
  c = recipes.synthetic_data(micro_metaworld_config())
  c.data.num_episodes = 4
  with pytest.raises(ValueError, match="needs a MetaWorld-trained checkpoint"):
    loop.train(typed(c), workdir=str(tmp_path), progress=False, epoch_hook=PeriodicEvaluation.for_run)


def test_periodic_evaluation_without_its_hook_is_one_line_at_start(tmp_path):
  # The training loop does not import the simulator; asked to evaluate without the hook, it says how.
  with pytest.raises(ValueError, match="eval.every_epochs=1 needs the closed-loop evaluation hook"):
    loop.train(typed(micro_metaworld_config()), workdir=str(tmp_path / "run"), progress=False)
  assert not os.path.exists(tmp_path / "run")


def test_the_privileged_readout_trains_on_replayed_poses_and_the_policy_acts_without_them(tmp_path):
  c = micro_metaworld_config()
  c.eval.every_epochs = 0
  c.eval.at_end = False
  c.train.privileged_weight = 1.0
  c.model.head.privileged_dim = 5
  with pytest.raises(ValueError, match="model.head.privileged_dim=5 but MetaWorld's replay gives 6 .*set it to 6"):
    loop.train(typed(c), workdir=str(tmp_path / "wrong"), progress=False)
  c.model.head.privileged_dim = 6
  workdir = str(tmp_path / "run")
  result = loop.train(typed(c), workdir=workdir, progress=False)
  assert np.isfinite(result.history[0]["train_loss"])
  assert result.state.params["head"]["privileged"]["kernel"].shape[-1] == 6
  # The data carries the targets standardized per task; inference needs nothing but the observation.
  data = loop.load_data(typed(c))
  batch = next(data.train.batches(0))
  assert batch["privileged"].shape == (c.train.batch_size, 6) and np.isfinite(batch["privileged"]).all()
  policy, info = VLAPolicy.from_workdir(workdir)
  data_info = info["assets"]["data"]
  env = mw.MetaWorldTask(TASK, cameras=data_info["card"]["cameras"], image_size=data_info["image_size"])
  policy.start_episode(TASK, "press the button from the top", episode=0)
  chunk = policy(env.reset(setup_seed=12345))
  env.close()
  assert np.isfinite(chunk).all()
