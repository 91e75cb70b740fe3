"""Meshes, FSDP, sharded checkpoints and several processes (training/sharding.py, training/processes.py).

The multi-device runs happen in subprocesses (tests/training/multidevice.py) with 8 (or 2, or 4) host CPU
devices, since JAX fixes its device count at start; the one-device reference runs in this process. The
micro config trains 3 steps at global batch 8 with every array that `fsdp` divides split (fsdp_min_mib=0).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest
from flax import traverse_util

from tests.training import multidevice
from tinyvla_jax.errors import UserError
from tinyvla_jax.checkpoints import Checkpointer
from tinyvla_jax.run_config import MeshConfig, TrainConfig
from tinyvla_jax.training import loop, sharding
from tinyvla_jax.training.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "training", "multidevice.py")
MESHES = ((8, 1), (1, 8), (4, 2))
# Float32 reduction order: a sum split over devices adds in another order. Measured after 3 AdamW steps at
# lr 1e-4: 99.9% of the elements agree within 1.5e-8, and a few (of 188k) by up to ~3e-6: those whose
# gradient is near zero, where Adam's m / sqrt(v) turns a rounding difference into a visible fraction of a
# step (~1e-4). So: almost everything at rounding level, nothing beyond a fifth of one step.
TYPICAL, WORST = 1e-7, 2e-5


def _subprocess(args: list[str], *, devices: int, timeout: int = 900, wait: bool = True):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, SCRIPT, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  return _finish(proc, timeout) if wait else proc


def _finish(proc, timeout: int = 900) -> str:
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, f"{proc.args} failed:\n{out[-4000:]}"
  return out


def _reference(workdir, steps: int) -> dict[str, np.ndarray]:
  result = loop.train(multidevice.config((1, 1), steps), workdir=str(workdir), progress=False)
  return multidevice.flat(jax.device_get(result.state.params))


def _close(got: dict, want: dict) -> None:
  assert got.keys() == want.keys()
  diffs = np.concatenate([np.abs(got[k].astype(np.float64) - want[k]).ravel() for k in want])
  assert np.all(np.isfinite(diffs))
  assert np.quantile(diffs, 0.999) <= TYPICAL and diffs.max() <= WORST, (np.quantile(diffs, 0.999), diffs.max())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The reference (one device, 3 steps), and the micro run under each mesh of 8 devices."""
  d = tmp_path_factory.mktemp("meshes")
  proc = _subprocess(["train", "--workdir", str(d / "runs"), "--out", str(d),
                      *[a for m in MESHES for a in ("--mesh", f"{m[0]},{m[1]}")]], devices=8, wait=False)
  reference = _reference(d / "reference", steps=3)  # while the subprocess compiles
  _finish(proc)
  return d, reference


def test_mesh_config_resolves_and_rejects_with_one_line():
  assert MeshConfig().shape(8) == (8, 1)
  assert MeshConfig(data=2, fsdp=-1).shape(8) == (2, 4)
  assert MeshConfig(data=4, fsdp=2).shape(8) == (4, 2)
  with pytest.raises(UserError, match=r"mesh.data=3 x --config.mesh.fsdp=2 = 6 devices, but 8"):
    MeshConfig(data=3, fsdp=2).shape(8)
  with pytest.raises(UserError, match=r"mesh.fsdp=3 does not divide the 8 devices"):
    MeshConfig(data=-1, fsdp=3).shape(8)
  with pytest.raises(UserError, match="at most one axis"):
    MeshConfig(data=-1, fsdp=-1).validate()
  with pytest.raises(UserError, match="mesh.fsdp"):
    MeshConfig(fsdp=0).validate()


def test_fsdp_rule_splits_large_arrays_on_their_largest_divisible_axis():
  P = jax.sharding.PartitionSpec
  mib = 2 ** 20
  assert sharding.fsdp_spec((1024, 4096), 16 * mib, fsdp=8, min_bytes=4 * mib) == P(None, "fsdp")
  assert sharding.fsdp_spec((4100, 1024), 16 * mib, fsdp=8, min_bytes=4 * mib) == P(None, "fsdp")  # 4100 % 8
  assert sharding.fsdp_spec((3, 3, 8192), 16 * mib, fsdp=8, min_bytes=4 * mib) == P(None, None, "fsdp")
  assert sharding.fsdp_spec((1024, 1024), 1 * mib, fsdp=8, min_bytes=4 * mib) == P()  # small: replicated
  assert sharding.fsdp_spec((1001, 999), 16 * mib, fsdp=8, min_bytes=4 * mib) == P()  # no axis divides
  assert sharding.fsdp_spec((1024, 4096), 16 * mib, fsdp=1, min_bytes=0) == P()


def test_a_batch_the_mesh_cannot_split_is_one_line_naming_both_numbers():
  sharding.check_batch_size(6, sharding.make_mesh(MeshConfig()))  # one device divides everything
  mesh_4x2 = types.SimpleNamespace(size=8, devices=np.empty((4, 2)))  # what the check reads of a mesh
  sharding.check_batch_size(16, mesh_4x2)
  with pytest.raises(UserError, match=r"train.batch_size=12 cannot be split over the mesh's 8 devices "
                                      r"\(mesh.data x mesh.fsdp = 4 x 2\): use a multiple of 8"):
    sharding.check_batch_size(12, mesh_4x2)
  with pytest.raises(UserError, match=r"grad_accum_steps=4.*a divisor of train.batch_size=6"):
    TrainConfig(batch_size=6, grad_accum_steps=4).validate()


def test_meshes_of_8_devices_train_the_same_parameters_as_one_device(runs):
  d, reference = runs
  for mesh in MESHES:
    _close(dict(np.load(d / f"{multidevice.name(mesh)}.npz")), reference)


def test_fsdp_8_holds_an_eighth_of_a_large_parameter_per_device(runs):
  d, _ = runs
  fsdp = json.loads((d / "1x8.npz.json").read_text())
  assert len(fsdp["shard_shapes"]) == 8
  size = np.prod(fsdp["shape"])
  assert all(np.prod(s) * 8 == size for s in fsdp["shard_shapes"]), fsdp
  data = json.loads((d / "8x1.npz.json").read_text())  # data parallel: every device holds all of it
  assert all(s == data["shape"] for s in data["shard_shapes"]), data


def _restore_params(workdir, expected: dict) -> dict:
  shapes = traverse_util.unflatten_dict({tuple(k.split("/")): jax.ShapeDtypeStruct(v.shape, v.dtype)
                                         for k, v in expected.items()})
  with Checkpointer(workdir) as ckpt:
    restored = ckpt.restore(train_state_target=None, params_target=shapes)
  return multidevice.flat(jax.device_get(restored.params))


def test_scanned_layers_under_fsdp_8_train_the_unrolled_one_device_parameters(tmp_path):
  """model.scan_layers stacks each layer's weights per call; with every weight split 8 ways (FSDP) the
  stack, the scan and the gradients back into each layer's shards give the one-device, unrolled run."""
  proc = _subprocess(["train", "--workdir", str(tmp_path / "runs"), "--out", str(tmp_path), "--mesh", "1,8",
                      "--scan_layers"], devices=8, wait=False)
  reference = multidevice.flat(jax.device_get(loop.train(
      multidevice.config((1, 1), 3, scan_layers=False), workdir=str(tmp_path / "reference"),
      progress=False).state.params))
  _finish(proc)
  got = dict(np.load(tmp_path / "1x8.npz"))
  assert any(k.startswith("language/layers_2/") for k in got)  # three decoder layers, one tree
  _close(got, reference)


def test_a_checkpoint_from_mesh_4x2_restores_bit_identical_on_1x1_and_8x1_and_resumes(runs, tmp_path):
  d, _ = runs
  written = d / "runs" / "4x2"
  expected = dict(np.load(d / "4x2.npz"))
  got = _restore_params(written, expected)  # (1, 1): this process's single device
  assert [k for k in expected if not np.array_equal(got[k], expected[k])] == []
  out = _subprocess(["restore", "--workdir", str(written), "--mesh", "8,1", "--expect", str(d / "4x2.npz")],
                    devices=8)
  assert "bit-identical" in out
  # Resuming: 2 more steps on one device and on (8, 1) land where an uninterrupted one-device run does.
  shutil.copytree(written, tmp_path / "one")
  shutil.copytree(written, tmp_path / "eight" / "8x1")
  proc = _subprocess(["train", "--workdir", str(tmp_path / "eight"), "--out", str(tmp_path), "--mesh", "8,1",
                      "--steps", "5"], devices=8, wait=False)
  reference5 = _reference(d / "reference", steps=5)  # the reference run, resumed to step 5
  resumed = loop.train(multidevice.config((1, 1), 5), workdir=str(tmp_path / "one"), progress=False)
  assert int(resumed.state.step) == 5
  _close(multidevice.flat(jax.device_get(resumed.state.params)), reference5)
  _finish(proc)
  assert json.loads((tmp_path / "8x1.npz.json").read_text())["step"] == 5
  _close(dict(np.load(tmp_path / "8x1.npz")), reference5)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one_process(tmp_path):
  """jax.distributed on localhost (gloo collectives), 2 processes x 2 devices (a 4-device data mesh), each
  loading half of every batch, for one epoch (its end validates, with a padded short last batch), against
  one process on one device (which the 8-device meshes above match: a 4-device process would add a
  minute and nothing they do not already pin)."""
  port = _free_port()
  two = tmp_path / "two"
  two.mkdir()
  procs = [_subprocess(["train", "--workdir", str(two), "--out", str(two), "--mesh", "4,1", "--steps", "0",
                        "--coordinator", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i)],
                       devices=2, wait=False) for i in range(2)]
  result = loop.train(multidevice.config((1, 1), 0), workdir=str(tmp_path / "one"), progress=False)
  for proc in procs:
    _finish(proc, timeout=900)
  assert json.loads((two / "4x1.npz.json").read_text())["processes"] == 2
  _close(dict(np.load(two / "4x1.npz")), multidevice.flat(jax.device_get(result.state.params)))
  # Only process 0 wrote metrics: each step's row once, and the epoch's row (with the validation over both
  # processes' halves of each batch) once, with the one-process figures.
  rows, want = read_metrics(str(two / "4x1")), read_metrics(str(tmp_path / "one"))
  assert [r["step"] for r in rows] == [r["step"] for r in want]
  (epoch,), (want_epoch,) = [r for r in rows if r["split"] == "epoch"], [r for r in want if r["split"] == "epoch"]
  for key in ("val_loss", "sensitivity/images", "sensitivity/state", "train_loss"):
    np.testing.assert_allclose(epoch[key], want_epoch[key], rtol=1e-4, err_msg=key)
  assert (two / "4x1" / "config.json").is_file()


def test_sigterm_to_one_process_saves_and_stops_both_at_the_same_step(tmp_path):
  """The signal reaches process 1 only; the processes agree at their next sync point (train.log_every),
  save the same step together and both stop: none is left waiting in a collective."""
  port = _free_port()
  procs = [_subprocess(["train", "--workdir", str(tmp_path), "--out", str(tmp_path), "--mesh", "4,1",
                        "--steps", "0", "--epochs", "200", "--coordinator", f"127.0.0.1:{port}",
                        "--num_processes", "2", "--process_id", str(i)], devices=2, wait=False) for i in range(2)]
  metrics = tmp_path / "4x1" / "metrics.jsonl"
  deadline = time.monotonic() + 600
  while not (metrics.is_file() and metrics.read_text().count("\n") >= 4):  # training has begun everywhere
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the run did not start"
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)
  outputs = [_finish(p, timeout=600) for p in procs]
  steps = [int(re.search(r"stopped at step (\d+) \(signal (\w+)\)", out).group(1)) for out in outputs]
  signals = [re.search(r"stopped at step \d+ \(signal (\w+)\)", out).group(1) for out in outputs]
  assert steps[0] == steps[1] and signals == ["None", str(int(signal.SIGTERM))], outputs
  with Checkpointer(tmp_path / "4x1") as ckpt:
    assert ckpt.latest_step() == steps[0] < 200 * 4  # saved where they stopped, far before the end


def test_multi_host_flags_go_together_and_one_process_needs_none(monkeypatch):
  from tinyvla_jax.training import processes
  with pytest.raises(UserError, match="go together"):
    processes.initialize(coordinator_address="127.0.0.1:1234", num_processes=None, process_id=None)
  with pytest.raises(UserError, match=r"--process_id=2 must be in \[0, --num_processes=2\)"):
    processes.initialize(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2)
  for var in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task SLURM job is one process
  processes.initialize(coordinator_address=None, num_processes=None, process_id=None)
  assert jax.process_count() == 1 and processes.is_primary() and not processes.multi_process()
  assert processes.any_process(True) and not processes.any_process(False)
