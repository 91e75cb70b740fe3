"""LoRA: a fresh adapter is a no-op, training touches only adapters/projector/head, merging is exact enough."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyvla_jax import presets
from tinyvla_jax.diffusion.schedule import make_schedule
from tinyvla_jax.models.config import LoraConfig, VLAConfig
from tinyvla_jax.models.layers import Dense
from tinyvla_jax.models.lora import is_adapter, merge_lora
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, example_inputs, init_params
from tinyvla_jax.training.optimizer import make_optimizer, trainable_labels
from tinyvla_jax.training.state import create_train_state
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.training.objectives import denoising
from tinyvla_jax.run_config import OptimConfig
from tinyvla_jax.training.step import make_train_step


def micro(**finetune) -> VLAConfig:
  """The tiny preset cut to the bone: the train step's compile dominates these tests."""
  d = presets.model_preset("tiny").to_dict()
  d["vision"].update(image_size=16, width=16, mlp_dim=32)
  d["language"].update(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2)
  d["head"].update(down_dims=(8,), step_embed_dim=8, horizon=8, kernel_size=3)
  d["finetune"].update(finetune)
  return VLAConfig.from_dict(d)


LORA = dict(vision="lora", language="lora", lora_rank=4, lora_alpha=8.0, lora_dropout=0.1)
# The same model without adapters; equal to what merge_lora returns for micro(**LORA).
BASE = dict(LORA, vision="full", language="full")


def inputs(config, seed=0):
  x = example_inputs(config, batch=2, text_len=6)
  r = np.random.default_rng(seed)
  x["images"] = jnp.asarray(r.integers(0, 255, x["images"].shape, dtype=np.uint8))
  x["tokens"] = x["tokens"].at[:, 1:].set(jnp.asarray(r.integers(4, 200, (2, 5))))
  x["noisy_actions"] = jnp.asarray(r.normal(size=x["noisy_actions"].shape), jnp.float32)
  x["state"] = jnp.asarray(r.normal(size=x["state"].shape), jnp.float32)
  x["timesteps"] = jnp.array([3, 70])
  return x


@functools.cache
def _forward(config: VLAConfig):
  model = UnifiedTinyVLAModel(config)
  return jax.jit(lambda params, x: model.apply({"params": params}, **x))


def apply(config, params, x):
  """The model's output, jitted (one compile per config; eager dispatch is slower on this CPU)."""
  return np.asarray(_forward(config)(params, x))


def strip_adapters(params):
  if not isinstance(params, dict):
    return params
  return {k: strip_adapters(v) for k, v in params.items() if k not in ("lora_a", "lora_b")}


def perturb_adapters(params, scale=0.05):
  """B away from zero (as after training), so the adapters change the output."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  out = [v + scale * jax.random.normal(k, v.shape) if str(p[-1].key) == "lora_b" else v
         for k, (p, v) in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(tree, out)


@pytest.fixture(scope="module")
def lora_model():
  config = micro(**LORA)
  init = jax.jit(lambda key: init_params(UnifiedTinyVLAModel(config), key, batch=2, text_len=6))
  return config, init(jax.random.key(0))


# --- one Dense ------------------------------------------------------------------------------------

def test_dense_adapter_init_no_op_and_dropout():
  lora = LoraConfig(rank=4, alpha=8.0, dropout=0.5)
  x = jax.random.normal(jax.random.key(1), (3, 16))
  plain, adapted = Dense(8), Dense(8, lora=lora)
  p0, p1 = plain.init(jax.random.key(0), x)["params"], adapted.init(jax.random.key(0), x)["params"]
  # Adapters come after kernel and bias: those draw the same values with or without them.
  np.testing.assert_array_equal(p1["kernel"], p0["kernel"])
  assert p1["lora_a"].shape == (16, 4) and p1["lora_b"].shape == (4, 8)
  assert not np.any(p1["lora_b"]) and np.all(np.abs(p1["lora_a"]) <= 1 / np.sqrt(16)) and np.any(p1["lora_a"])
  np.testing.assert_array_equal(adapted.apply({"params": p1}, x), plain.apply({"params": p0}, x))

  p1 = dict(p1, lora_b=jnp.ones((4, 8)))
  delta = lambda **kw: np.asarray(adapted.apply({"params": p1}, x, **kw) - plain.apply({"params": p0}, x))
  np.testing.assert_allclose(delta(), x @ p1["lora_a"] @ p1["lora_b"] * 2.0, atol=1e-5)
  # Dropout only with a "dropout" rng (the train step passes one): then it differs per key.
  a, b = delta(rngs={"dropout": jax.random.key(1)}), delta(rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, delta()) and not np.allclose(a, b)


# --- the VLA --------------------------------------------------------------------------------------

def test_adapters_sit_on_every_backbone_dense_and_start_as_a_no_op(lora_model):
  config, params = lora_model
  adapters = {jax.tree_util.keystr(p[:-1]) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
              if is_adapter(p)}
  assert adapters == {
      "['vision']['layers_0']['self_attn']['q_proj']", "['vision']['layers_0']['self_attn']['k_proj']",
      "['vision']['layers_0']['self_attn']['v_proj']", "['vision']['layers_0']['self_attn']['out_proj']",
      "['vision']['layers_0']['mlp']['fc1']", "['vision']['layers_0']['mlp']['fc2']",
      "['language']['layers_0']['attention']['query_key_value']", "['language']['layers_0']['attention']['dense']",
      "['language']['layers_0']['mlp']['dense_h_to_4h']", "['language']['layers_0']['mlp']['dense_4h_to_h']"}
  qkv = params["language"]["layers_0"]["attention"]["query_key_value"]
  assert qkv["lora_a"].shape == (32, 4) and qkv["lora_b"].shape == (4, 96) and not np.any(qkv["lora_b"])
  x = inputs(config)
  np.testing.assert_array_equal(apply(config, params, x), apply(micro(**BASE), strip_adapters(params), x))


def test_merge_gives_the_unmerged_outputs(lora_model):
  config, params = lora_model
  params = perturb_adapters(params)
  merged, merged_config = merge_lora(params, config)
  assert merged_config == micro(**BASE)
  assert not any(is_adapter(p) for p, _ in jax.tree_util.tree_flatten_with_path(merged)[0])
  x = inputs(config)
  unmerged, out = apply(config, params, x), apply(merged_config, merged, x)
  assert np.abs(unmerged - apply(config, lora_model[1], x)).max() > 1e-2  # the adapters do matter
  err = np.abs(out - unmerged).max()
  print(f"lora merge: max abs err {err:.2e}")
  assert err < 1e-5
  with pytest.raises(ValueError, match="holds LoRA adapters but model.finetune.language='full'"):
    merge_lora(params, dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, language="full")))


def test_a_train_step_changes_only_adapters_projector_and_head(lora_model):
  config, params = lora_model
  model = UnifiedTinyVLAModel(config)
  optim = OptimConfig(learning_rate=1e-2)  # the seed's optimizer otherwise
  tx, lr = make_optimizer(optim, total_steps=10, params=params, finetune=config.finetune)
  state = create_train_state(params=params, tx=tx, rng=jax.random.key(1), use_ema=False)
  step = jax.jit(make_train_step(
      objective=denoising(DiffusionPolicy(model, schedule=make_schedule(num_train_steps=100))), tx=tx, lr_schedule=lr))
  x = inputs(config)
  batch = dict(images=x["images"], tokens=x["tokens"], token_mask=x["token_mask"], state=x["state"],
               actions=jnp.clip(x["noisy_actions"], -1, 1), action_mask=jnp.ones((2, 8), bool))
  new, metrics = step(state, batch)
  assert bool(metrics["finite"])
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), params, new.params)
  for path, did in jax.tree_util.tree_flatten_with_path(changed)[0]:
    name = jax.tree_util.keystr(path)
    component = path[0].key
    # lora_a gets no gradient while B is zero (dL/dA = x^T dL/dy B^T): only B moves in the first step.
    if component in ("projector", "head") or str(path[-1].key) == "lora_b":
      assert did, f"{name} should have trained"
    elif not str(path[-1].key) == "lora_a":
      assert not did, f"{name} is frozen under LoRA but changed"


def _lora_step_setup(lora_model, *, use_ema=False):
  config, params = lora_model
  model = UnifiedTinyVLAModel(config)
  tx, lr = make_optimizer(OptimConfig(learning_rate=1e-2), total_steps=10, params=params, finetune=config.finetune)
  objective = denoising(DiffusionPolicy(model, schedule=make_schedule(num_train_steps=100)))
  x = inputs(config)
  batch = dict(images=x["images"], tokens=x["tokens"], token_mask=x["token_mask"], state=x["state"],
               actions=jnp.clip(x["noisy_actions"], -1, 1), action_mask=jnp.ones((2, 8), bool))
  return params, tx, lr, objective, batch


def _flops(step, state, batch) -> float:
  cost = jax.jit(step).lower(state, batch).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def test_frozen_weights_are_not_differentiated(lora_model):
  """The step differentiates the adapters, projector and head only. Before (the whole tree differentiated,
  frozen updates zeroed afterwards by optax.multi_transform) XLA computed every frozen weight gradient."""
  params, tx, lr, objective, batch = _lora_step_setup(lora_model)
  new_step = make_train_step(objective=objective, tx=tx, lr_schedule=lr, ema_decay=0.99)
  new_state = create_train_state(params=params, tx=tx, rng=jax.random.key(1), use_ema=True)
  labels = trainable_labels(params, (), lora_model[0].finetune)
  whole = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.01))
  old_tx = optax.multi_transform({"train": whole, "frozen": optax.set_to_zero()}, labels)
  old_step = make_train_step(objective=objective, tx=old_tx, lr_schedule=lr, ema_decay=0.99)
  old_state = create_train_state(params=params, tx=old_tx, rng=jax.random.key(1), use_ema=True)
  new_flops, old_flops = _flops(new_step, new_state, batch), _flops(old_step, old_state, batch)
  print(f"LoRA step FLOPs: {old_flops:.3g} differentiating everything, {new_flops:.3g} trainable only "
        f"({new_flops / old_flops:.2f}x)")
  assert new_flops < 0.85 * old_flops
  # The optimizer state and the EMA hold the trainable leaves only; inference = EMA over the frozen weights.
  trainable, frozen = tx.partition.split(params)
  n_trainable, n_all = len(jax.tree.leaves(trainable)), len(jax.tree.leaves(params))
  assert 0 < n_trainable < n_all and len(jax.tree.leaves(new_state.ema_params)) == n_trainable
  assert jax.tree.structure(tx.partition.merge(trainable, frozen)) == jax.tree.structure(params)
  step = jax.jit(new_step)
  state = new_state
  for _ in range(3):
    state, metrics = step(state, batch)
    assert bool(metrics["finite"])
  after_trainable, after_frozen = tx.partition.split(state.params)
  jax.tree.map(np.testing.assert_array_equal, after_frozen, frozen)  # bit-identical
  assert any(bool(np.any(np.asarray(a) != np.asarray(b)))
             for a, b in zip(jax.tree.leaves(after_trainable), jax.tree.leaves(trainable)))
  inference = state.inference_params
  assert jax.tree.structure(inference) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, tx.partition.split(inference)[1], frozen)
  jax.tree.map(np.testing.assert_array_equal, tx.partition.split(inference)[0], state.ema_params)
  # The logged gradient norm is the trainable parameters' (what clipping sees).
  rng = jax.random.fold_in(new_state.rng, 0)
  grads = jax.grad(lambda t: objective(tx.partition.merge(t, frozen), batch, rng)[0])(trainable)
  _, first = jax.jit(new_step)(new_state, batch)
  np.testing.assert_allclose(float(first["grad_norm"]), float(optax.tree.norm(grads)), rtol=1e-5)


def test_trainable_labels_per_mode(lora_model):
  config, params = lora_model
  count = lambda labels, comp: sum(label == "train" for label in jax.tree.leaves(labels[comp]))
  labels = trainable_labels(params, (), config.finetune)
  assert count(labels, "vision") == 12 and count(labels, "language") == 8  # 6 and 4 Dense x (A, B)
  frozen = dataclasses.replace(config.finetune, vision="frozen")
  labels = trainable_labels(params, (), frozen)
  assert count(labels, "vision") == 0 and count(labels, "language") == 8
  labels = trainable_labels(params, ("language",), config.finetune)
  assert count(labels, "language") == 0 and count(labels, "head") == len(jax.tree.leaves(params["head"]))


@pytest.mark.parametrize("key,value,message", [
    ("vision", "half", "model.finetune.vision='half' must be one of ('full', 'lora', 'frozen')"),
    ("lora_rank", 0, "model.finetune.lora_rank=0 must be >= 1"),
    ("lora_dropout", 1.0, "model.finetune.lora_dropout=1.0 must be in [0, 1)"),
    ("lora_alpah", 1.0, "unknown config key(s) model.finetune.lora_alpah"),
])
def test_finetune_config_errors_are_one_line(key, value, message):
  d = presets.model_preset("tiny").to_dict()
  d["finetune"][key] = value
  with pytest.raises(ValueError) as info:
    VLAConfig.from_dict(d)
  assert message in str(info.value) and "\n" not in str(info.value)
