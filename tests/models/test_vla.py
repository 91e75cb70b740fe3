"""UnifiedTinyVLAModel: shapes over batch/horizon/cameras, prompt padding, splicing, sampling, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax import presets
from tinyvla_jax.data.byte_tokenizer import ByteTokenizer
from tinyvla_jax.diffusion.schedule import make_schedule
from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params, splice_image_tokens

TOKENIZER = ByteTokenizer()
INSTRUCTIONS = ["reach the red target", "open the drawer", "push the green block to the goal"]


def tiny_config(**overrides) -> VLAConfig:
  d = presets.model_preset("tiny").to_dict()
  d.update(overrides)
  return VLAConfig.from_dict(d)


@pytest.fixture(scope="module")
def tiny():
  model = UnifiedTinyVLAModel(tiny_config(num_cameras=2))
  return model, jax.jit(lambda r: init_params(model, r))(jax.random.key(0))


def observation(config: VLAConfig, batch: int, *, max_len: int = 64, seed: int = 0, image_hw=None):
  r = np.random.default_rng(seed)
  hw = image_hw or config.vision.image_size
  tokens, mask = TOKENIZER.encode_batch([INSTRUCTIONS[i % 3] for i in range(batch)], max_length=max_len)
  return dict(images=r.integers(0, 256, (batch, config.num_cameras, hw, hw, 3), dtype=np.uint8),
              tokens=tokens, token_mask=mask, state=r.standard_normal((batch, config.head.state_dim)).astype(np.float32))


@pytest.mark.parametrize("batch,horizon,cameras", [(1, 8, 1), (3, 16, 2), (4, 32, 3), (2, 16, 1), (5, 8, 2)])
def test_noise_prediction_shapes(batch, horizon, cameras):
  cfg = tiny_config(num_cameras=cameras)
  model = UnifiedTinyVLAModel(cfg)
  obs = observation(cfg, batch)
  params = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
  out = jax.eval_shape(lambda p: model.apply({"params": p}, **obs, noisy_actions=jnp.zeros((batch, horizon, 4)),
                                             timesteps=jnp.zeros((batch,), jnp.int32)), params)
  assert out.shape == (batch, horizon, cfg.head.action_dim) and out.dtype == jnp.float32
  hidden, mask = jax.eval_shape(lambda p: model.apply({"params": p}, **{k: obs[k] for k in ("images", "tokens",
                                                                                            "token_mask")},
                                                      method=model.encode), params)
  # The one IMAGE placeholder becomes cameras * patches tokens.
  assert hidden.shape == (batch, 64 - 1 + cameras * cfg.vision.num_patches, cfg.language.hidden_size)
  assert mask.shape == hidden.shape[:2]


def test_params_do_not_depend_on_horizon_batch_or_image_size(tiny):
  model, params = tiny
  other = jax.eval_shape(lambda: init_params(model, jax.random.key(0), batch=3, text_len=20, image_hw=48))
  chex.assert_trees_all_equal_shapes(other, params)


def test_prompt_padding_does_not_change_the_condition(tiny):
  model, params = tiny
  cfg = model.config
  short, long = observation(cfg, 3, max_len=56), observation(cfg, 3, max_len=96)
  cond = jax.jit(lambda p, o: model.apply({"params": p}, **o, method=model.condition))
  np.testing.assert_allclose(cond(params, short), cond(params, long), atol=2e-5, rtol=1e-5)
  # And a row's condition does not depend on its batch mates (each is padded to the batch length).
  alone = {k: v[:1] for k, v in long.items()}
  np.testing.assert_allclose(cond(params, alone)[0], cond(params, long)[0], atol=2e-5, rtol=1e-5)


def test_pooling_excludes_padding_unlike_the_original(tiny):
  """Averaging padding in (the original's pooling) would make the condition depend on the pad length."""
  model, params = tiny
  cfg = model.config
  enc = jax.jit(lambda p, o: model.apply({"params": p}, images=o["images"], tokens=o["tokens"],
                                         token_mask=o["token_mask"], method=model.encode))
  (h56, m56), (h96, m96) = enc(params, observation(cfg, 2, max_len=56)), enc(params, observation(cfg, 2, max_len=96))
  naive56, naive96 = h56.mean(axis=1), h96.mean(axis=1)
  assert float(jnp.abs(naive56 - naive96).max()) > 1e-3
  masked = lambda h, m: (h * m[..., None]).sum(1) / m.sum(1, keepdims=True)
  np.testing.assert_allclose(masked(h56, m56), masked(h96, m96), atol=2e-5, rtol=1e-5)


def test_splice_places_image_tokens_at_each_rows_placeholder():
  b, length, n, h = 2, 6, 3, 4
  text = jnp.arange(b * length * h, dtype=jnp.float32).reshape(b, length, h)
  image = -1 - jnp.arange(b * n * h, dtype=jnp.float32).reshape(b, n, h)
  tokens = jnp.array([[7, 3, 8, 9, 0, 0], [7, 8, 9, 10, 3, 0]])  # placeholder (3) at 1 and at 4
  mask = tokens != 0
  embeds, out_mask = splice_image_tokens(text_embeds=text, text_mask=mask, tokens=tokens, image_embeds=image,
                                         image_token_id=3)
  for row in range(b):
    p = int(np.argmax(np.asarray(tokens[row]) == 3))
    expected = np.concatenate([text[row, :p], image[row], text[row, p + 1:]])
    np.testing.assert_array_equal(embeds[row], expected)
    expected_mask = np.concatenate([mask[row, :p], np.ones(n, bool), mask[row, p + 1:]])
    np.testing.assert_array_equal(out_mask[row], expected_mask)


def test_sampler_compiles_once_and_returns_bounded_chunks(tiny):
  model, params = tiny
  cfg = model.config
  schedule = make_schedule()

  def fn(params, rng, obs):
    return DiffusionPolicy(model, schedule=schedule, num_inference_steps=10).sample_actions(params, rng, **obs)

  sampler = jax.jit(chex.assert_max_traces(fn, n=1))
  obs = observation(cfg, 3)
  a = sampler(params, jax.random.key(1), obs)
  b = sampler(params, jax.random.key(2), observation(cfg, 3, seed=5))
  for chunk in (a, b):
    assert chunk.shape == (3, cfg.head.horizon, cfg.head.action_dim)
    assert bool(jnp.all(jnp.isfinite(chunk))) and float(jnp.abs(chunk).max()) <= 1.0
  assert float(jnp.abs(a - b).max()) > 1e-3
  # The public jitted sampler gives the same chunk for the same key.
  public = DiffusionPolicy(model, schedule=schedule, num_inference_steps=10).jitted_sampler()
  np.testing.assert_allclose(public(params, jax.random.key(1), **obs), a, atol=1e-5)


def test_config_errors_name_the_key():
  with pytest.raises(ValueError, match=r"model.head.horizon=10 must be a positive multiple of 4"):
    tiny_config(head={**presets.model_preset("tiny").head.to_dict(), "horizon": 10})
  with pytest.raises(ValueError, match=r"unknown config key\(s\) model.head.horizn"):
    tiny_config(head={**presets.model_preset("tiny").head.to_dict(), "horizn": 16})
  with pytest.raises(ValueError, match="model.init='xavier'"):
    tiny_config(init="xavier")


def test_bad_inputs_are_one_line_errors(tiny):
  model, params = tiny
  cfg = model.config
  obs = observation(cfg, 2)
  # eval_shape: the checks fire while tracing, no need to run the model.
  call = lambda **o: jax.eval_shape(lambda p: model.apply(
      {"params": p}, **{**obs, **o}, noisy_actions=jnp.zeros((2, 16, 4)), timesteps=jnp.zeros((2,), jnp.int32)), params)
  with pytest.raises(ValueError, match="num_cameras=2"):
    call(images=obs["images"][:, :1])
  with pytest.raises(ValueError, match="state_dim=4"):
    call(state=jnp.zeros((2, 7)))
  with pytest.raises(ValueError, match="horizon 10 must be divisible by 4"):
    jax.eval_shape(lambda p: model.apply({"params": p}, **obs, noisy_actions=jnp.zeros((2, 10, 4)),
                                         timesteps=jnp.zeros((2,), jnp.int32)), params)
