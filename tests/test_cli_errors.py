"""The data and evaluation entry points answer bad input with one line naming what to fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
  proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                        env=dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa")))
  lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
  return proc.returncode, lines, proc.stderr


@pytest.mark.parametrize("args, message", [
    (["-m", "tinyvla_jax.evaluate", "--workdir", "/nonexistent/run"], "no checkpoints under '/nonexistent/run'"),
    (["-m", "tinyvla_jax.evaluate"], "pass --workdir DIR"),
    (["-m", "tinyvla_jax.evaluate", "--policy", "remote"], "--policy remote needs --server ws://HOST:PORT"),
    (["-m", "tinyvla_jax.evaluate", "--policy", "remote", "--server", "http://x"], "must be a websocket URL"),
    (["-m", "tinyvla_jax.evaluate", "--policy", "remote", "--server", "ws://127.0.0.1:1",
      "--server_wait_s=1"], "no policy server at ws://127.0.0.1:1 after 1 s"),
    (["-m", "tinyvla_jax.serve"], "pass --workdir DIR"),
    (["-m", "tinyvla_jax.train", "--config", "configs/fixed.py:tiny", "--config.data.path=/nonexistent/data",
      "--workdir", "/tmp/never"], "no episode dataset at '/nonexistent/data' (data.path)"),
    (["-m", "tinyvla_jax.train", "--config", "configs/mt10.py:tiny", "--config.data.path=/nonexistent/mt10",
      "--workdir", "/tmp/never"], "no episode dataset at '/nonexistent/mt10' (data.path)"),
    (["-m", "tinyvla_jax.train", "--config", "configs/fixed.py:tiny", "--config.data.cameras=topview",
      "--workdir", "/tmp/never"], "camera 'topview' (data.cameras) is not in"),
    (["scripts/collect_metaworld.py", "--out", "/tmp/never"], "pass --tasks"),
])
def test_one_line_errors(args, message):
  code, errors, stderr = run(*args)
  assert code != 0 and len(errors) == 1, stderr[-2000:]
  assert message in errors[0], errors[0]
  assert "Traceback" not in stderr


def test_a_signal_wrapped_by_a_library_is_still_the_signal():
  # SIGTERM during JAX's backend initialization: JAX re-raises our Interrupted as a RuntimeError; the entry
  # point must still exit 143 with the one line, while another error that merely had a user error as its
  # context stays a bug (its traceback is kept).
  from tinyvla_jax.cli import interruption_in
  from tinyvla_jax.errors import Interrupted, UserError

  stop = Interrupted("stopped by SIGTERM during start-up", 15)
  try:
    try:
      raise stop
    except Interrupted as error:
      raise RuntimeError(f"Unable to initialize backend 'cpu': {error}")
  except RuntimeError as wrapped:
    assert interruption_in(wrapped) is stop and stop.exit_code == 143
  try:
    try:
      raise UserError("bad input")
    except UserError:
      raise KeyError("a bug while reporting it")
  except KeyError as bug:
    assert interruption_in(bug) is None
