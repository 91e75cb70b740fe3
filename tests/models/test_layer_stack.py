"""model.scan_layers (models/layer_stack.py): the ViT's and the decoder's layers as one lax.scan each give the
unrolled stack's parameters, loss and gradients, with and without remat and LoRA. The parity against
transformers with scanned layers is in test_hf_parity.py."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import traverse_util

from tests.training.micro import micro_config
from tinyvla_jax.models.vla import UnifiedTinyVLAModel
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.recipes import typed
from tinyvla_jax.training import loop


def _run(**model):
  config = micro_config()
  config.model.vision.depth = 4  # select_layer -2: three layers run
  config.model.language.num_hidden_layers = 3
  config.model.update(model)
  run = typed(config)
  batch = next(loop.load_data(run).train.batches(0))
  return run, batch


def _loss(run, params, batch, *, train=False, rng=0, **model):
  cfg = dataclasses.replace(run.model, **model)
  policy = DiffusionPolicy.from_config(UnifiedTinyVLAModel(cfg), run.diffusion)
  return float(jax.jit(lambda p, b, r: policy.compute_loss(p, b, r, train=train))(params, batch, jax.random.key(rng)))


def _loss_and_grads(run, params, batch, *, train=False, rng=0, **model):
  cfg = dataclasses.replace(run.model, **model)
  policy = DiffusionPolicy.from_config(UnifiedTinyVLAModel(cfg), run.diffusion)
  fn = jax.value_and_grad(lambda p, b, r: policy.compute_loss(p, b, r, train=train))
  jaxpr = str(jax.make_jaxpr(fn)(params, batch, jax.random.key(rng)))
  return jaxpr, jax.jit(fn)(params, batch, jax.random.key(rng))


def test_init_builds_the_same_tree_with_the_same_values():
  run, _ = _run()
  trees = {}
  for scan in (False, True):
    model = UnifiedTinyVLAModel(dataclasses.replace(run.model, scan_layers=scan))
    trees[scan] = traverse_util.flatten_dict(loop.build_state(run, model, total_steps=10)[0].params)
  assert trees[True].keys() == trees[False].keys()
  assert {k[:2] for k in trees[True] if k[1].startswith("layers_")} == \
      {("vision", "layers_0"), ("vision", "layers_1"), ("vision", "layers_2"),
       ("language", "layers_0"), ("language", "layers_1"), ("language", "layers_2")}
  for k, v in trees[False].items():
    np.testing.assert_array_equal(trees[True][k], v, err_msg=str(k))


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_layers_give_the_unrolled_loss_and_gradients(remat):
  run, batch = _run()
  params = loop.build_state(run, UnifiedTinyVLAModel(run.model), total_steps=10)[0].params
  results = {}
  for scan in (False, True):
    jaxpr, results[scan] = _loss_and_grads(run, params, batch, scan_layers=scan, remat=remat)
    assert ("scan[" in jaxpr) == scan  # the layers really are one loop (the U-Net and sampler have none here)
    assert ("checkpoint" in jaxpr or "remat" in jaxpr) == remat  # and remat still holds inside it
  (loss_u, grads_u), (loss_s, grads_s) = results[False], results[True]
  np.testing.assert_allclose(loss_s, loss_u, rtol=1e-6)
  flat_u, flat_s = traverse_util.flatten_dict(grads_u), traverse_util.flatten_dict(grads_s)
  assert flat_u.keys() == flat_s.keys()
  for k, g in flat_u.items():
    np.testing.assert_allclose(flat_s[k], g, rtol=1e-4, atol=1e-6, err_msg=str(k))
  # Every layer gets its own gradient back out of the stack.
  layer_grads = [np.abs(flat_s[("language", f"layers_{i}", "mlp", "dense_4h_to_h", "kernel")]).sum() for i in range(3)]
  assert all(g > 0 for g in layer_grads) and len(set(layer_grads)) == 3


def test_lora_adapters_in_the_scan_match_and_take_dropout():
  run, batch = _run(finetune=dict(vision="lora", language="lora", lora_rank=4, lora_dropout=0.5))
  state, tx, _ = loop.build_state(run, UnifiedTinyVLAModel(run.model), total_steps=10)
  # lora_b starts at zero (the adapters add nothing): give them values so that dropout changes the loss.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.05 if str(getattr(path[-1], "key", "")) == "lora_b" else x, state.params)
  # Without a dropout rng (evaluation) scanned = unrolled, adapters included.
  no_dropout = _loss(run, params, batch, scan_layers=True)
  np.testing.assert_allclose(no_dropout, _loss(run, params, batch, scan_layers=False), rtol=1e-6)
  # In training each call draws new masks (per layer: fold_in of the call's rng), deterministically.
  train = [_loss(run, params, batch, train=True, rng=r, scan_layers=True) for r in (0, 0, 1)]
  assert train[0] == train[1] and train[0] != train[2] and train[0] != no_dropout
  assert all(np.isfinite(train))


def test_training_with_scanned_layers_writes_the_unrolled_tree_and_serves(tmp_path):
  config = micro_config(max_steps=2)
  config.model.language.num_hidden_layers = 2
  config.model.scan_layers = True
  run = typed(config)
  result = loop.train(run, workdir=str(tmp_path), progress=False)
  assert int(result.state.step) == 2 and int(result.state.skipped) == 0
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(result.state.params))
  unrolled = UnifiedTinyVLAModel(dataclasses.replace(run.model, scan_layers=False))
  expected = loop.build_state(run, unrolled, total_steps=10)[0].params
  assert traverse_util.flatten_dict(result.state.params).keys() == traverse_util.flatten_dict(expected).keys()
  from tinyvla_jax.serving.inference import load_policy
  policy = load_policy(str(tmp_path))
  actions = policy.infer(policy.example_observation())["actions"]
  assert np.all(np.isfinite(actions))


def test_scan_layers_must_be_a_bool():
  """A checkpoint's config.json or a hand-written dict is checked too (ml_collections checks the flag)."""
  from tinyvla_jax.errors import UserError
  from tinyvla_jax.run_config import RunConfig
  stored = typed(micro_config()).to_dict()
  stored["model"]["scan_layers"] = "yes"
  with pytest.raises(UserError, match="model.scan_layers='yes' must be true or false"):
    RunConfig.from_dict(stored)
