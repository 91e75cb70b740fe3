"""Checkpointer: bitwise round trips, retention (latest N + best), integrity (manifests, damaged steps moved
aside, non-damage errors delete nothing), failed saves, leftovers."""

import pathlib

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyvla_jax.errors import CheckpointError
from tinyvla_jax.checkpoints import Checkpointer


@flax.struct.dataclass
class TinyState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array
  skipped: jax.Array


def make_state(seed: int = 0) -> TinyState:
  k = jax.random.key(seed)
  params = {"w": jax.random.normal(k, (3, 4)), "b": jnp.arange(4, dtype=jnp.float32) + seed}
  tx = optax.adamw(1e-3)
  opt_state = tx.init(params)
  # One update so the optax moments and count are not all zeros (a zero tree would hide mix-ups).
  _, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
  return TinyState(step=jnp.int32(seed), params=params, opt_state=opt_state,
                   rng=jax.random.key(seed), skipped=jnp.int32(2 * seed))


def save(ckpt: Checkpointer, step: int, **metrics) -> None:
  state = make_state(step)
  ckpt.save(step, train_state=state, params=state.params, assets={"mean": [float(step)]},
            config={"lr": 1e-3, "step": step}, metrics=metrics or None)


def assert_bitwise_equal(a, b) -> None:
  a = jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, a)
  b = jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_bitwise_into_abstract_targets(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    assert not Checkpointer.exists(tmp_path)  # the folder exists now, but no finished step
    save(ckpt, 7, val_loss=0.5)
    ckpt.wait()
    assert Checkpointer.exists(tmp_path)
    target = jax.eval_shape(make_state)
    restored = ckpt.restore(train_state_target=target, params_target=target.params)
  assert restored.step == 7
  assert isinstance(restored.train_state, TinyState)
  assert jnp.issubdtype(restored.train_state.rng.dtype, jax.dtypes.prng_key)
  assert_bitwise_equal(restored.train_state, make_state(7))
  assert_bitwise_equal(restored.params, make_state(7).params)
  assert restored.assets == {"mean": [7.0]} and restored.config == {"lr": 1e-3, "step": 7}


def test_restore_into_concrete_targets_and_params_only(tmp_path):
  with Checkpointer(tmp_path, async_save=False) as ckpt:
    save(ckpt, 3)
    restored = ckpt.restore(train_state_target=make_state(0))
    assert restored.params is None
    assert_bitwise_equal(restored.train_state, make_state(3))
    params_only = ckpt.restore(train_state_target=None, params_target=jax.eval_shape(make_state).params)
  assert params_only.train_state is None
  assert_bitwise_equal(params_only.params, make_state(3).params)


def test_retention_keeps_latest_n_and_best(tmp_path):
  losses = {1: 0.9, 2: 0.1, 3: 0.5, 4: 0.6, 5: 0.7, 6: 0.8}  # the best is an early step
  with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    for step, loss in losses.items():
      save(ckpt, step, val_loss=loss)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 5, 6]
    assert ckpt.best_step() == 2 and ckpt.latest_step() == 6
  on_disk = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert on_disk == [2, 5, 6]
  with Checkpointer(tmp_path, max_to_keep=2) as reopened:  # the ranking survives a restart
    assert reopened.best_step() == 2


def test_steps_without_val_loss_are_kept_as_latest_only(tmp_path):
  with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    save(ckpt, 1, train_loss=3.0)
    save(ckpt, 2)
    ckpt.wait()
    assert ckpt.best_step() is None
    save(ckpt, 3, val_loss=0.4)
    for step in (4, 5, 6):
      save(ckpt, step)
    save(ckpt, 7, val_loss=float("nan"))  # a NaN must not become the best
    ckpt.wait()
    assert ckpt.all_steps() == [3, 6, 7]
    assert ckpt.best_step() == 3


def test_without_keep_best_only_latest_survive(tmp_path):
  with Checkpointer(tmp_path, max_to_keep=2, keep_best=False) as ckpt:
    for step, loss in ((1, 0.1), (2, 0.5), (3, 0.9)):
      save(ckpt, step, val_loss=loss)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]


def step_files(tmp_path, step: int, item: str = "train_state") -> list[pathlib.Path]:
  return sorted((p for p in (tmp_path / "checkpoints" / str(step) / item).rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)


def flip_bytes(path: pathlib.Path) -> None:
  """Same size, different content: what a bad disk or a stray write leaves, and what Orbax cannot see."""
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 3, min(len(data), len(data) // 3 + 64)):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_newest_step_is_moved_aside_and_the_previous_one_read(tmp_path, damage):
  with Checkpointer(tmp_path) as ckpt:
    save(ckpt, 1)
    save(ckpt, 2)
  assert (tmp_path / "checkpoints" / "2" / "manifest.json").is_file()
  victim = step_files(tmp_path, 2)[-1]  # the largest file: the arrays
  {"flip": flip_bytes, "truncate": lambda p: p.write_bytes(p.read_bytes()[:3]), "delete": pathlib.Path.unlink}[damage](victim)
  with Checkpointer(tmp_path) as ckpt:
    with pytest.warns(UserWarning, match=f"checkpoint step 2 is damaged \\({victim.name}|train_state/.*{victim.name}"):
      restored = ckpt.restore(train_state_target=jax.eval_shape(make_state))
    assert restored.step == 1
    assert_bitwise_equal(restored.train_state, make_state(1))
    assert ckpt.all_steps() == [1]
    # Moved, not deleted: the damaged step is still on disk for a post-mortem.
    assert (tmp_path / "checkpoints" / "damaged" / "2" / "train_state").is_dir()
    # The resumed run reaches step 2 again and writes it anew.
    save(ckpt, 2)
    ckpt.wait()
    assert ckpt.restore(train_state_target=jax.eval_shape(make_state)).step == 2


def test_a_structure_mismatch_is_an_error_that_deletes_nothing(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    save(ckpt, 1)
    save(ckpt, 2)
  before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError, match="could not restore checkpoint step 2 .* not damaged and nothing was deleted"):
      ckpt.restore(train_state_target=jax.eval_shape(lambda: {"w": jnp.zeros((5, 5))}))
    assert ckpt.all_steps() == [1, 2]
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_every_step_damaged_says_overwrite(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    save(ckpt, 1)
    save(ckpt, 2)
  for step in (1, 2):
    flip_bytes(step_files(tmp_path, step)[-1])
  with Checkpointer(tmp_path) as ckpt:
    with pytest.warns(UserWarning, match="damaged"):
      with pytest.raises(CheckpointError, match="no intact checkpoint .* pass --overwrite to start over"):
        ckpt.restore(train_state_target=jax.eval_shape(make_state))
  assert sorted(p.name for p in (tmp_path / "checkpoints" / "damaged").iterdir()) == ["1", "2"]


def test_an_explicit_damaged_step_is_an_error(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    save(ckpt, 1)
  flip_bytes(step_files(tmp_path, 1)[-1])
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError, match="checkpoint step 1 .* is damaged: .* differs from its checksum"):
      ckpt.restore(train_state_target=jax.eval_shape(make_state), step=1)
    assert ckpt.all_steps() == [1]  # an explicit request moves nothing


def test_a_step_without_manifest_is_read_unverified_then_sealed(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    save(ckpt, 1)
  manifest = tmp_path / "checkpoints" / "1" / "manifest.json"
  manifest.unlink()  # as if the writer was killed between Orbax's commit and the manifest
  with Checkpointer(tmp_path) as ckpt:
    with pytest.warns(UserWarning, match="step 1 .* has no manifest.json .* reading it unverified"):
      assert ckpt.restore(train_state_target=jax.eval_shape(make_state)).step == 1
  assert manifest.is_file()


def test_a_failed_save_is_one_error_and_keeps_the_previous_step(tmp_path, monkeypatch):
  import errno
  import orbax.checkpoint as ocp
  with Checkpointer(tmp_path) as ckpt:
    save(ckpt, 1)
    ckpt.wait()

    def full_disk(*args, **kwargs):
      raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(CheckpointError, match="saving checkpoint step 2 .* No space left on device.*step 1 is intact"):
      save(ckpt, 2)
  monkeypatch.undo()
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.all_steps() == [1]
    assert_bitwise_equal(ckpt.restore(train_state_target=jax.eval_shape(make_state)).train_state, make_state(1))


def test_no_step_raises(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
      ckpt.restore(train_state_target=jax.eval_shape(make_state))


def test_leftover_tmp_dir_is_ignored_and_removed(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    save(ckpt, 1)
  leftover = tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp-1234"
  (leftover / "train_state").mkdir(parents=True)
  (leftover / "train_state" / "junk").write_bytes(b"partial")
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
    assert ckpt.restore(train_state_target=jax.eval_shape(make_state)).step == 1
    save(ckpt, 2)
    ckpt.wait()
  assert not leftover.exists()


def test_restore_json_reads_assets_and_config(tmp_path):
  assert not Checkpointer.exists(tmp_path)
  assert not (tmp_path / "checkpoints").exists()  # asking must not create the folder
  with Checkpointer(tmp_path) as ckpt:
    save(ckpt, 1)
    save(ckpt, 4)
    assert ckpt.restore_json() == ({"mean": [4.0]}, {"lr": 1e-3, "step": 4})
    assert ckpt.restore_json(step=1) == ({"mean": [1.0]}, {"lr": 1e-3, "step": 1})


def test_bad_max_to_keep(tmp_path):
  with pytest.raises(ValueError, match="max_to_keep"):
    Checkpointer(pathlib.Path(tmp_path), max_to_keep=0)
