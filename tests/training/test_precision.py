"""bfloat16 compute (model.dtype), bfloat16 storage of frozen weights (model.frozen_dtype) and
rematerialized transformer layers (model.remat), on the micro config (tests/training/micro.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests.training.micro import micro_config
from tinyvla_jax.models.vla import UnifiedTinyVLAModel
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.recipes import typed
from tinyvla_jax.training import loop
from tinyvla_jax.training.optimizer import partition_of


def _setup(**model):
  config = micro_config()
  config.model.update(model)
  run = typed(config)
  data = loop.load_data(run)
  batch = next(data.train.batches(0))
  return run, batch


def _loss(run, params, batch, **model):
  cfg = dataclasses.replace(run.model, **model)
  policy = DiffusionPolicy.from_config(UnifiedTinyVLAModel(cfg), run.diffusion)
  loss = jax.jit(policy.compute_loss)
  return np.mean([float(loss(params, batch, jax.random.key(k))) for k in range(8)])


def test_bfloat16_compute_gives_the_float32_loss_at_init_within_one_percent():
  run, batch = _setup()
  state, _, _ = loop.build_state(run, UnifiedTinyVLAModel(run.model), total_steps=10)
  f32 = _loss(run, state.params, batch)
  bf16 = _loss(run, state.params, batch, dtype="bfloat16")
  assert abs(bf16 - f32) / f32 < 0.01, (f32, bf16)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))  # master weights stay float32


def test_remat_changes_memory_not_numbers():
  """The same parameter tree, loss and gradients with and without rematerialized layers."""
  run, batch = _setup()
  state, _, _ = loop.build_state(run, UnifiedTinyVLAModel(run.model), total_steps=10)
  grads = {}
  for remat in (False, True):
    cfg = dataclasses.replace(run.model, remat=remat)
    policy = DiffusionPolicy.from_config(UnifiedTinyVLAModel(cfg), run.diffusion)
    fn = jax.value_and_grad(policy.compute_loss)
    jaxpr = str(jax.make_jaxpr(fn)(state.params, batch, jax.random.key(0)))
    assert ("checkpoint" in jaxpr or "remat" in jaxpr) == remat  # the layers really are rematerialized
    grads[remat] = jax.jit(fn)(state.params, batch, jax.random.key(0))
  np.testing.assert_allclose(grads[True][0], grads[False][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads[True][1]), jax.tree.leaves(grads[False][1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_frozen_weights_in_bfloat16_train_the_adapters_and_stay_untouched(tmp_path):
  config = micro_config(max_steps=3)
  config.model.finetune.vision = "lora"
  config.model.finetune.language = "lora"
  config.model.finetune.lora_rank = 4
  config.model.frozen_dtype = "bfloat16"
  run = typed(config)
  model = UnifiedTinyVLAModel(run.model)
  initial, tx, _ = loop.build_state(run, model, total_steps=10)
  trainable, frozen = partition_of(tx).split(initial.params)
  assert {x.dtype for x in jax.tree.leaves(frozen)} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(trainable)} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(initial.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)} == \
      {jnp.dtype(jnp.float32)}
  frozen_bytes = sum(x.nbytes for x in jax.tree.leaves(frozen))
  assert frozen_bytes * 2 == sum(x.size * 4 for x in jax.tree.leaves(frozen))  # half of float32

  result = loop.train(run, workdir=str(tmp_path), progress=False)
  assert int(result.state.step) == 3
  after_trainable, after_frozen = partition_of(tx).split(result.state.params)
  flat = traverse_util.flatten_dict
  assert all(np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(after_frozen), jax.tree.leaves(frozen)))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after_trainable), jax.tree.leaves(trainable)))
  assert set(flat(after_frozen)) == set(flat(frozen))

  # The checkpoint serves (its frozen weights read back into the float32 inference tree).
  from tinyvla_jax.serving.inference import load_policy
  policy = load_policy(str(tmp_path))
  actions = policy.infer(policy.example_observation())["actions"]
  assert actions.shape == (run.model.head.horizon, 4) and np.all(np.isfinite(actions))


@pytest.mark.parametrize("key,value,message", [("frozen_dtype", "float16", "model.frozen_dtype"),
                                               ("dtype", "float16", "model.dtype")])
def test_precision_keys_are_checked(key, value, message):
  from tinyvla_jax.errors import UserError
  config = micro_config()
  config.model[key] = value
  with pytest.raises(UserError, match=message):
    typed(config)
