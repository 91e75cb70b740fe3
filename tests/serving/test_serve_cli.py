"""A trained workdir served for real: `tinyvla_jax.load_policy`, `python -m tinyvla_jax.serve` in its own
process (start, answer, stop on SIGTERM), the load-test script, and the entry point's one-line errors."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "training"))
from micro import micro_config  # noqa: E402

import tinyvla_jax  # noqa: E402
from tinyvla_jax.recipes import typed  # noqa: E402
from tinyvla_jax.serving.client import RemotePolicy  # noqa: E402
from tinyvla_jax.serving.load_test import run_load  # noqa: E402
from tinyvla_jax.training import loop  # noqa: E402

pytest.importorskip("websockets")
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("served") / "run")
  loop.train(typed(micro_config(epochs=1, max_steps=2)), workdir=workdir, progress=False)
  return workdir


def keyed(obs, i):
  return dict(obs, noise_key=np.array([1, i], np.uint32))


def test_load_policy_from_a_workdir(workdir):
  policy = tinyvla_jax.load_policy(workdir)
  meta = policy.metadata
  assert meta["step"] == 2 and meta["workdir"] == os.path.abspath(workdir) and meta["action_horizon"] == 8
  assert list(meta["observation"]["images"]) == ["camera0"]  # synthetic data names no cameras
  actions = policy.infer(keyed(policy.example_observation(), 0))["actions"]
  assert actions.shape == (8, 4) and actions.dtype == np.float32 and np.isfinite(actions).all()
  np.testing.assert_array_equal(actions, policy.infer(keyed(policy.example_observation(), 0))["actions"])
  batched = policy.infer_batch([keyed(policy.example_observation(), i) for i in range(3)])
  np.testing.assert_allclose(batched[0]["actions"], actions, atol=1e-4)


def test_serve_entry_point_answers_then_stops_on_sigterm(workdir):
  proc = subprocess.Popen([sys.executable, "-m", "tinyvla_jax.serve", "--workdir", workdir, "--port", "0",
                           "--max_batch", "2", "--compilation_cache=off"], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
  try:
    line = proc.stdout.readline()
    assert line.startswith("serving step 2 of "), line + proc.stderr.read() if not line else line
    url = line.split(" on ")[1].split()[0]
    policy = tinyvla_jax.load_policy(workdir)
    with RemotePolicy(url) as client:
      assert client.metadata["step"] == 2
      obs = keyed(policy.example_observation(), 5)
      np.testing.assert_allclose(client.infer(obs)["actions"], policy.infer(obs)["actions"], atol=1e-4)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped:" in out and "'errors': 0" in out
  finally:
    proc.kill()


def test_serve_errors_are_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "tinyvla_jax.serve", "--workdir", str(tmp_path / "none")], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith("error: no checkpoints under")
  assert "Traceback" not in proc.stderr


def test_load_test_reports_latency_throughput_and_errors(workdir):
  result = run_load(tinyvla_jax.load_policy(workdir), clients=3, requests=7, max_batch=4, timeout_s=120)
  assert result["completed"] == 7 and result["errors"] == 0, result
  assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] and result["throughput_rps"] > 0
  assert 1 <= result["mean_batch_size"] <= 4
  proc = subprocess.run([sys.executable, "scripts/load_test_server.py", "--workdir", workdir, "--clients", "2",
                         "--requests", "4", "--max_batch", "2", "--compilation_cache=off"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  printed = json.loads(proc.stdout)
  assert [r["max_batch"] for r in printed["runs"]] == [2, 1] and all(r["completed"] == 4 for r in printed["runs"])
  assert printed["batching_throughput_gain"] > 0
