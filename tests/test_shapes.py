"""Shape contracts: the jaxtyping annotations on the public model, policy and preprocessing functions are
checked at run time here (jaxtyped + beartype), on real calls, and a call that breaks a contract fails.

The annotations are strings (postponed evaluation), so each function is re-made with its resolved hints and
wrapped by `jaxtyped(typechecker=beartype)`; dimension names bind across the arguments and the return value
(the batch `b` of the images must be the batch of the actions, and of the predicted noise)."""

from __future__ import annotations

import inspect
import types
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

beartype = pytest.importorskip("beartype").beartype
from jaxtyping import TypeCheckError, jaxtyped  # noqa: E402

from tinyvla_jax import presets  # noqa: E402
from tinyvla_jax.data.byte_tokenizer import ByteTokenizer  # noqa: E402
from tinyvla_jax.data.normalize import NormStats  # noqa: E402
from tinyvla_jax.data.preprocess import Preprocessor  # noqa: E402
from tinyvla_jax.diffusion.schedule import make_schedule  # noqa: E402
from tinyvla_jax.models.config import VLAConfig  # noqa: E402
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, example_inputs, init_params  # noqa: E402
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy  # noqa: E402


def checked(fn):
  """`fn` (unwrapped from flax's method wrapper) with its annotations enforced."""
  fn = inspect.unwrap(fn)
  copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
  copy.__kwdefaults__ = fn.__kwdefaults__
  copy.__annotations__ = typing.get_type_hints(fn)
  copy.__qualname__ = fn.__qualname__
  return jaxtyped(typechecker=beartype)(copy)


@pytest.fixture(scope="module")
def tiny():
  d = presets.model_preset("tiny").to_dict()
  d.update(obs_steps=2)
  model = UnifiedTinyVLAModel(VLAConfig.from_dict(d))
  params = init_params(model, jax.random.key(0), batch=2, text_len=16)
  return model, params, example_inputs(model.config, batch=2, text_len=16)


@pytest.mark.parametrize("method", ["__call__", "condition", "encode", "encode_images"])
def test_model_methods_keep_their_contracts(tiny, method):
  model, params, inputs = tiny
  fn = checked(getattr(UnifiedTinyVLAModel, method))
  names = set(inspect.signature(fn).parameters) - {"self"}
  args = {k: v for k, v in inputs.items() if k in names}
  model.apply({"params": params}, **args, method=fn) if method != "encode_images" else \
      model.apply({"params": params}, inputs["images"], method=fn)


def test_a_broken_contract_fails(tiny):
  model, params, inputs = tiny
  fn = checked(UnifiedTinyVLAModel.__call__)
  for bad in (dict(inputs, noisy_actions=inputs["noisy_actions"][:1]),  # batch 1 against images' batch 2
              dict(inputs, images=inputs["images"].astype(jnp.float32)),  # the contract says uint8
              dict(inputs, timesteps=inputs["timesteps"].astype(jnp.float32))):
    with pytest.raises(TypeCheckError):
      model.apply({"params": params}, **bad, method=fn)


def test_the_policy_keeps_its_contracts(tiny):
  model, params, inputs = tiny
  policy = DiffusionPolicy(model, schedule=make_schedule(), num_inference_steps=2)
  obs = {k: inputs[k] for k in ("images", "tokens", "token_mask", "state")}
  chunk = checked(DiffusionPolicy.sample_actions)(policy, params, jax.random.key(1), **obs)
  assert chunk.shape == (2, model.config.head.horizon, model.config.head.action_dim)
  batch = dict(obs, actions=inputs["noisy_actions"], action_mask=jnp.ones(inputs["noisy_actions"].shape[:2], bool))
  loss = checked(DiffusionPolicy.compute_loss)(policy, params, batch, jax.random.key(2))
  assert loss.shape == ()
  with pytest.raises(TypeCheckError):
    checked(DiffusionPolicy.sample_actions)(policy, params, jax.random.key(1), **dict(obs, state=obs["state"][:1]))


def test_preprocessing_keeps_its_contracts():
  stats = NormStats(action_min=-np.ones(4, np.float32), action_max=np.ones(4, np.float32),
                    state_mean=np.zeros(4, np.float32), state_std=np.ones(4, np.float32))
  pre = Preprocessor(stats=stats, tokenizer=ByteTokenizer(), max_text_len=48, crop_window=8, obs_steps=2)
  frames = [np.zeros((1, 10, 10, 3), np.uint8)] * 2
  ids, mask = checked(Preprocessor.encode_prompt)(pre, "open the drawer")
  assert ids.shape == mask.shape == (48,)
  crops = checked(Preprocessor.crop)(pre, np.zeros((3, 10, 10, 3), np.uint8))
  assert crops.shape == (3, 8, 8, 3)
  obs = checked(Preprocessor.observation)(pre, frames, [np.zeros(4, np.float32)] * 2, (ids, mask))
  assert obs["images"].shape == (1, 2, 8, 8, 3) and obs["state"].shape == (1, 8)
  with pytest.raises(TypeCheckError):
    checked(Preprocessor.crop)(pre, np.zeros((3, 10, 10, 3), np.float32))  # frames are uint8
