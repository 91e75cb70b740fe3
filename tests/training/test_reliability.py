"""Reliability of `python -m tinyvla_jax.train` as a user meets it: kills, signals, a second run, damaged
checkpoints and datasets, bad numbers, failing saves. The CLI cases run real subprocesses and assert the
exact last line, a non-zero exit and no traceback."""

from __future__ import annotations

import collections
import errno
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import chex
import jax
import numpy as np
import pytest

from micro import micro_config

from tinyvla_jax.data.normalize import NormStats
from tinyvla_jax.data.sources import SHIPPED_DATASET
from tinyvla_jax.errors import CheckpointError, UserError
from tinyvla_jax.models.vla import UnifiedTinyVLAModel
from tinyvla_jax.recipes import typed
from tinyvla_jax.training import loop
from tinyvla_jax.checkpoints import Checkpointer
from tinyvla_jax.training.metrics import read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
MICRO = str(ROOT / "tests" / "training" / "micro.py")


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("xla"))


def cli(*args, cache=None):
  command = [sys.executable, "-m", "tinyvla_jax.train", *args]
  if cache:
    command.append(f"--compilation_cache={cache}")
  return command


def env():
  return dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"), PYTHONUNBUFFERED="1")


def run(command, timeout=300):
  proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env())
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  return proc.returncode, (lines[-1] if lines else ""), proc.stderr


def assert_one_line_error(code, last, stderr, expected):
  assert code != 0, stderr[-3000:]
  assert last == f"error: {expected}", stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]


# --- kills, locks, signals ------------------------------------------------------------------------

def final_state(workdir: str, config):
  model_cfg = typed(config).model
  model = UnifiedTinyVLAModel(model_cfg)
  spe = loop.load_data(typed(config)).train.steps_per_epoch
  abstract = jax.eval_shape(lambda: loop.build_state(typed(config), model, total_steps=config.train.epochs * spe,
                                                     pretrained=False)[0])
  with Checkpointer(workdir) as ckpt:
    return ckpt.restore(train_state_target=abstract).train_state


def wait_for(predicate, timeout=240, what=""):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return
    time.sleep(0.01)
  raise AssertionError(f"timed out waiting for {what}")


def finished_steps(workdir: pathlib.Path) -> list[int]:
  path = workdir / "checkpoints"
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []


def train_rows(workdir: pathlib.Path) -> list[dict]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except ValueError:  # a line being written right now
      pass
  return [r for r in rows if r["split"] == "train"]


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_resumes_bit_identical_with_every_metric_row_once(tmp_path, xla_cache):
  overrides = ["--config.train.epochs=6", "--config.train.checkpoint_every_steps=8", "--config.train.log_every=1"]
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  code, _, stderr = run(cli("--config", MICRO, "--workdir", str(straight), *overrides, cache=xla_cache))
  assert code == 0, stderr[-3000:]
  # Default logging: our lines and warnings only, none of Orbax's per-save INFO lines.
  assert not [l for l in stderr.splitlines() if l.startswith("I") and "]" in l[:40]], stderr[:3000]

  proc = subprocess.Popen(cli("--config", MICRO, "--workdir", str(killed), *overrides, cache=xla_cache), cwd=ROOT,
                          env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    # Kill once a checkpoint exists and metric rows past it were written: those rows must not appear twice.
    wait_for(lambda: finished_steps(killed) and train_rows(killed)
             and train_rows(killed)[-1]["step"] > finished_steps(killed)[-1] + 2 or proc.poll() is not None,
             what="a checkpoint and rows past it")
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finally:
    proc.kill()
  killed_at = train_rows(killed)[-1]["step"]
  code, _, stderr = run(cli("--config", MICRO, "--workdir", str(killed), *overrides, cache=xla_cache))
  assert code == 0, stderr[-3000:]
  assert "resumed from step" in stderr

  config = micro_config(epochs=6, checkpoint_every_steps=8, log_every=1)
  a, b = final_state(str(straight), config), final_state(str(killed), config)
  chex.assert_trees_all_equal(jax.device_get(a.params), jax.device_get(b.params))
  chex.assert_trees_all_equal(jax.device_get(a.opt_state), jax.device_get(b.opt_state))
  chex.assert_trees_all_equal(jax.device_get(a.ema_params), jax.device_get(b.ema_params))

  rows_a, rows_b = read_metrics(str(straight)), read_metrics(str(killed))
  counts = collections.Counter((r["split"], r["step"]) for r in rows_b)
  assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:5]
  assert killed_at < max(r["step"] for r in rows_b)  # the kill really was mid-run
  drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
  # Every row (train losses, epoch means including the epoch the kill cut in two, validation) as if uninterrupted.
  assert drop(rows_b) == drop(rows_a)


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_is_refused_and_a_killed_holder_frees_it(tmp_path, xla_cache):
  workdir = tmp_path / "run"
  command = cli("--config", MICRO, "--workdir", str(workdir), "--config.train.epochs=500", cache=xla_cache)
  holder = subprocess.Popen(command, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    wait_for(lambda: (workdir / ".lock").exists() and (workdir / ".lock").read_text().strip(), what="the lock")
    code, last, stderr = run(command)
    assert_one_line_error(code, last, stderr, last[len("error: "):])
    assert f"--workdir {workdir} is in use by another run (pid {holder.pid} on " in last
    assert holder.poll() is None  # the refused run did not disturb the holder
    wait_for(lambda: finished_steps(workdir), what="a first checkpoint")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  finally:
    holder.kill()
  # The kernel released the dead holder's lock: the same command goes ahead (and resumes).
  code, _, stderr = run(command[:-1] + ["--config.train.max_steps=1", f"--compilation_cache={xla_cache}"])
  assert code == 0, stderr[-3000:]
  assert "in use" not in stderr


def test_sigterm_during_start_up_is_one_line_and_exit_143(tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(cli("--config", MICRO, "--workdir", str(workdir)), cwd=ROOT, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    wait_for(lambda: (workdir / ".lock").exists() or proc.poll() is not None, what="start-up")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  last = stderr.strip().splitlines()[-1]
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert last == "error: stopped by SIGTERM during start-up, before training began (nothing to save)", stderr
  assert "Traceback" not in stderr


def test_sigterm_while_training_saves_and_exits_143(tmp_path, monkeypatch):
  """In process (the signal is sent from inside the loop at a known batch); the CLI maps the result."""
  from tinyvla_jax.data.loader import ChunkLoader
  original = ChunkLoader.batches

  def batches_then_sigterm(self, epoch, *, start=0):
    for i, batch in enumerate(original(self, epoch, start=start)):
      if self.shuffle and epoch == 0 and i == 2:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(ChunkLoader, "batches", batches_then_sigterm)
  result = loop.train(typed(micro_config()), workdir=str(tmp_path), progress=False)
  assert result.signal == signal.SIGTERM and int(result.state.step) == 3
  with Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.latest_step() == 3


def test_a_second_signal_stops_at_once_without_saving(tmp_path, monkeypatch):
  from tinyvla_jax.data.loader import ChunkLoader
  from tinyvla_jax.errors import Interrupted
  original = ChunkLoader.batches

  def batches_then_two_signals(self, epoch, *, start=0):
    for i, batch in enumerate(original(self, epoch, start=start)):
      if self.shuffle and epoch == 0 and i == 2:
        os.kill(os.getpid(), signal.SIGINT)  # first: save after this step ...
        os.kill(os.getpid(), signal.SIGINT)  # ... second: now
      yield batch

  monkeypatch.setattr(ChunkLoader, "batches", batches_then_two_signals)
  # What the process had before (SIG_IGN, not Python's handler, when it was started in the background of a
  # non-interactive shell, as `nohup ... &` does): the run must put back exactly that.
  before = signal.getsignal(signal.SIGINT)
  with pytest.raises(Interrupted, match=r"second signal \(SIGINT\): stopped without saving") as info:
    loop.train(typed(micro_config()), workdir=str(tmp_path), progress=False)
  assert info.value.exit_code == 128 + signal.SIGINT
  assert not Checkpointer.exists(str(tmp_path))
  assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_a_save_the_disk_refuses_is_one_line_without_tracebacks(tmp_path):
  """A real failing write (a file-size limit makes the OS refuse it mid-save, as a full disk does): Orbax's
  threads and tensorstore's late callbacks would print hundreds of lines; the user sees one."""
  command = cli("--config", MICRO, "--workdir", str(tmp_path), "--config.train.checkpoint_every_steps=4")
  # ulimit -f 512: files up to 512 KB, smaller than a step's arrays.
  proc = subprocess.run(["bash", "-c", 'ulimit -f 512 && exec "$@"', "bash", *command], capture_output=True, text=True,
                        cwd=ROOT, timeout=300, env=env())
  last = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert re.match(f"error: saving checkpoint step (4|8) to {tmp_path.resolve()}/checkpoints failed \\(", last), last
  assert "File too large" in last and last.endswith("no earlier step exists: free space or fix the directory's "
                                                    "permissions, then re-run the same command to resume")
  assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
  assert finished_steps(tmp_path) == []  # nothing half-written looks like a step


# --- one-line errors, before any compute ----------------------------------------------------------

def test_missing_config_file(tmp_path):
  assert_one_line_error(*run(cli("--config", "/nonexistent/config.py", "--workdir", str(tmp_path))),
                        "cannot load --config: [Errno 2] No such file or directory: '/nonexistent/config.py'")


def test_nan_learning_rate_is_refused_at_start(tmp_path):
  assert_one_line_error(*run(cli("--config", MICRO, "--workdir", str(tmp_path), "--config.optim.learning_rate=nan")),
                        "--config.optim.learning_rate=nan must be a finite number in (0, inf)")
  assert not (tmp_path / "checkpoints").exists()


def read_only_dir(tmp_path) -> str:
  if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses new files to everyone
    return "/sys/kernel"
  path = tmp_path / "read_only"
  path.mkdir()
  path.chmod(0o555)
  return str(path)


def test_read_only_workdir_fails_before_loading_data(tmp_path):
  workdir = read_only_dir(tmp_path)
  # A data path that does not exist: the workdir's error comes first, so nothing was loaded before it.
  code, last, stderr = run(cli("--config", MICRO, "--workdir", workdir, "--config.data.source=metaworld",
                               "--config.data.path=/nonexistent/data"))
  assert_one_line_error(code, last, stderr,
                        f"cannot write to --workdir {workdir} (Permission denied): pass a directory you can write to")


def test_config_mismatch_fails_before_loading_data(tmp_path):
  loop.train(typed(micro_config(max_steps=1)), workdir=str(tmp_path), progress=False)
  # A valid config whose data cannot load (no such dataset): the mismatch is reported first.
  code, last, stderr = run(cli("--config", MICRO, "--workdir", str(tmp_path), "--config.optim.learning_rate=0.5",
                               "--config.data.source=metaworld", "--config.data.path=/nonexistent/dataset"))
  assert_one_line_error(code, last, stderr, last[len("error: "):])
  assert ("holds a run with another config (data.path: None -> '/nonexistent/dataset'; data.source: 'synthetic' "
          "-> 'metaworld'; optim.learning_rate: 0.0001 -> 0.5)") in last
  assert "--overwrite" in last


def damaged_dataset(tmp_path) -> tuple[str, str]:
  """The shipped dataset unpacked into a directory store, one image chunk overwritten (size kept)."""
  path = tmp_path / "data"
  path.mkdir()
  shutil.copy(os.path.join(SHIPPED_DATASET, "card.json"), path)
  zipfile.ZipFile(os.path.join(SHIPPED_DATASET, "episodes.zarr.zip")).extractall(path / "episodes.zarr")
  chunk = path / "episodes.zarr" / "data" / "images" / "c" / "10" / "0" / "0" / "0" / "0"
  data = bytearray(chunk.read_bytes())
  data[len(data) // 3: len(data) // 3 + 4096] = np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()
  chunk.write_bytes(bytes(data))
  return str(path), "data/images/c/10/0/0/0/0"


def test_corrupt_dataset_chunk_is_named(tmp_path):
  path, chunk = damaged_dataset(tmp_path)
  code, last, stderr = run(cli("--config", "configs/fixed.py:tiny", "--workdir", str(tmp_path / "run"),
                               f"--config.data.path={path}"))
  assert_one_line_error(code, last, stderr, last[len("error: "):])
  assert last.startswith(f"error: {path}: {chunk} (steps 640-703) is unreadable (RuntimeError: Zstd decompression")
  assert last.endswith("the dataset is damaged; restore it from a copy or collect it again")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_checkpoint_damaged_is_one_line_that_says_overwrite(tmp_path):
  loop.train(typed(micro_config(max_steps=1)), workdir=str(tmp_path), progress=False)
  loop.train(typed(micro_config(max_steps=2)), workdir=str(tmp_path), progress=False)
  for step_dir in (tmp_path / "checkpoints").iterdir():
    biggest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
  code, last, stderr = run(cli("--config", MICRO, "--workdir", str(tmp_path)))
  ckpt_dir = tmp_path.resolve() / "checkpoints"
  assert_one_line_error(code, last, stderr,
                        f"no intact checkpoint in {ckpt_dir} (damaged steps are in {ckpt_dir / 'damaged'}): pass "
                        "--overwrite to start over, or another --workdir")
  assert sorted(p.name for p in (ckpt_dir / "damaged").iterdir()) == ["1", "2"]  # moved, not deleted


# --- bad numbers and failing saves, in process -----------------------------------------------------

def test_non_finite_statistics_are_refused():
  with pytest.raises(UserError, match="action_min has non-finite values"):
    NormStats.compute(actions=np.array([[np.nan, 0.0], [1.0, 1.0]]), states=np.zeros((2, 3)))
  good = NormStats.compute(actions=np.array([[0.0, 0.0], [1.0, 1.0]]), states=np.zeros((2, 3))).to_json()
  with pytest.raises(UserError, match="state_mean has non-finite values"):
    NormStats.from_json(dict(good, state_mean=[0.0, float("nan"), 0.0]))


@pytest.mark.parametrize("key, value, message", [
    ("optim.learning_rate", float("nan"), "--config.optim.learning_rate=nan must be a finite number in (0, inf)"),
    ("optim.learning_rate", -1e-4, "--config.optim.learning_rate=-0.0001 must be a finite number in (0, inf)"),
    ("optim.b2", 1.0, "--config.optim.b2=1.0 must be a finite number in [0, 1)"),
    ("optim.eps", 0.0, "--config.optim.eps=0.0 must be a finite number in (0, inf)"),
    ("train.batch_size", 0, "--config.train.batch_size=0 must be an integer >= 1"),
    ("train.ema_decay", float("inf"), "--config.train.ema_decay=inf must be a finite number in [0, 1) or None"),
    ("train.checkpoint_every_minutes", -1.0, "--config.train.checkpoint_every_minutes=-1.0 must be a finite number in [0, inf)"),
    ("eval.action_steps", 17, "--config.eval.action_steps=17 must be <= model.head.horizon=HORIZON (the actions one chunk holds)"),
])
def test_bad_numbers_are_refused_before_anything_is_written(tmp_path, key, value, message):
  config = micro_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(UserError) as info:
    loop.train(typed(config), workdir=str(tmp_path / "run"), progress=False)
  assert str(info.value) == message.replace("HORIZON", str(config.model.head.horizon))
  assert not (tmp_path / "run").exists()


def test_a_failing_save_stops_the_run_at_once_and_keeps_the_previous_step(tmp_path, monkeypatch):
  import orbax.checkpoint as ocp
  original = ocp.CheckpointManager.save
  calls = []

  def save_then_full_disk(self, step, *args, **kwargs):
    calls.append(step)
    if len(calls) > 1:
      raise OSError(errno.ENOSPC, "No space left on device")
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save_then_full_disk)
  config = micro_config(checkpoint_every_steps=2)
  with pytest.raises(CheckpointError, match=r"saving checkpoint step 4 .*No space left on device.*step 2 is intact"):
    loop.train(typed(config), workdir=str(tmp_path), progress=False)
  assert calls == [2, 4]  # stopped at the failed save, not an epoch later
  monkeypatch.undo()
  with Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.all_steps() == [2]
  # The intact step resumes (its manifest verifies) and the run completes.
  result = loop.train(typed(micro_config(checkpoint_every_steps=2)), workdir=str(tmp_path), progress=False)
  assert not result.stopped_early


def test_checkpoint_every_steps_bounds_the_lost_work(tmp_path):
  config = micro_config(checkpoint_every_steps=2, max_steps=5)
  loop.train(typed(config), workdir=str(tmp_path), progress=False)
  with Checkpointer(str(tmp_path), max_to_keep=10) as ckpt:
    assert ckpt.all_steps()[-3:] == [2, 4, 5]  # every 2 steps, and the stop at max_steps


def test_statistics_come_from_the_training_episodes_of_the_selected_tasks(tmp_path):
  config = micro_config()
  config.data.source = "metaworld"
  config.data.tasks = "drawer-open-v3"
  config.data.val_fraction = 0.2
  config.data.random_crop = False
  config.data.crop_fraction = 1.0
  model_cfg_data = loop.load_data(typed(config))
  from tinyvla_jax.data.episodes import split_episodes
  from tinyvla_jax.data.store import EpisodeStore
  episodes = EpisodeStore(SHIPPED_DATASET).load(tasks=["drawer-open-v3"])
  train_eps, val_eps = split_episodes(episodes, val_fraction=0.2, seed=config.data.split_seed)
  expected = np.concatenate([e.actions for e in train_eps]).max(0)
  np.testing.assert_array_equal(model_cfg_data.preprocess.stats.action_max, expected.astype(np.float32))
  everything = np.concatenate([e.actions for e in EpisodeStore(SHIPPED_DATASET).load()]).max(0)
  assert not np.array_equal(model_cfg_data.preprocess.stats.action_max, everything.astype(np.float32))


def test_the_split_seed_not_the_training_seed_picks_validation_episodes():
  a = loop.load_data(typed(micro_config()))
  other_train_seed = micro_config(seed=7)
  b = loop.load_data(typed(other_train_seed))
  assert [e.instruction for e in a.val.episodes] == [e.instruction for e in b.val.episodes]
  other_split = micro_config()
  other_split.data.split_seed = 3
  c = loop.load_data(typed(other_split))
  assert [id(e) for e in c.val.episodes] != [id(e) for e in a.val.episodes]
  assert {e.states.tobytes() for e in c.val.episodes} != {e.states.tobytes() for e in a.val.episodes}


def test_a_start_up_signal_whose_exception_was_swallowed_still_stops_before_training():
  """A signal handler's exception raised inside a GC callback or a __del__ is printed and dropped by Python
  (CI saw this: the run then trained to the end with exit status 0); training() must raise it again."""
  from tinyvla_jax.errors import Interrupted
  from tinyvla_jax.training.signals import StopSignal
  with StopSignal() as stop:
    try:
      stop._handle(signal.SIGTERM, None)  # what Python does on SIGTERM during start-up ...
    except Interrupted:
      pass  # ... and what a GC callback does to the exception
    with pytest.raises(Interrupted, match="stopped by SIGTERM during start-up") as raised:
      stop.training()
    assert raised.value.exit_code == 128 + signal.SIGTERM and not stop.received
  with StopSignal() as stop:  # no signal: training starts, and a first signal is then a request to save
    stop.training()
    stop._handle(signal.SIGINT, None)
    assert stop.received == "SIGINT"
