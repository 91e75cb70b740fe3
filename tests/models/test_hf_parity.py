"""Our GPT-NeoX and ViT against Hugging Face's, through the importer (pretrained/hf_import.py).

Tiny random torch models with every parameter re-drawn at a large scale (HF's own init is near zero and
would hide layout mistakes), converted by our importer, compared in float32. The config-mapping and
error tests at the top need no torch.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyvla_jax.models.config import LanguageConfig, VisionConfig
from tinyvla_jax.models.language import GPTNeoX
from tinyvla_jax.models.vision import VisionEncoder
from tinyvla_jax.pretrained import hf_import

ATOL = 1e-5


# --- config mapping and importer errors (numpy only) -----------------------------------------------

NEOX_V4 = dict(model_type="gpt_neox", vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, rotary_pct=0.5, rotary_emb_base=500.0, use_parallel_residual=False,
               layer_norm_eps=1e-5, hidden_act="gelu", max_position_embeddings=128)


def test_language_config_both_rotary_forms():
  v4 = hf_import.language_config_from_hf(NEOX_V4)
  v5 = dict(NEOX_V4)
  del v5["rotary_pct"], v5["rotary_emb_base"]
  v5["rope_parameters"] = {"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5}
  assert hf_import.language_config_from_hf(v5) == v4
  assert (v4.rotary_pct, v4.rotary_emb_base, v4.use_parallel_residual) == (0.5, 500.0, False)
  with pytest.raises(ValueError, match="rope_type"):
    hf_import.language_config_from_hf(dict(v5, rope_parameters={"rope_type": "linear", "factor": 2.0}))


def test_vision_config_clip_and_siglip():
  clip = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
              num_attention_heads=2, image_size=32, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5)
  c = hf_import.vision_config_from_hf(clip)
  assert (c.width, c.depth, c.select_layer) == (32, 3, -2)
  assert (c.class_token, c.pre_layernorm, c.patch_bias) == (True, True, False)
  full = hf_import.vision_config_from_hf({"model_type": "clip", "vision_config": clip})
  assert full == c
  s = hf_import.vision_config_from_hf(dict(clip, model_type="siglip_vision_model", hidden_act="gelu_pytorch_tanh"))
  assert (s.act, s.class_token, s.pre_layernorm, s.patch_bias) == ("gelu_tanh", False, False, True)


def _fake_neox_state_dict(config: LanguageConfig) -> dict:
  shapes = jax.eval_shape(lambda: GPTNeoX(config).init(
      jax.random.key(0), jnp.zeros((1, 3), jnp.int32), jnp.ones((1, 3), bool),
      method=lambda m, i, k: m(m.embed(i), k)))["params"]
  sd = {"gpt_neox.embed_in.weight": np.zeros(shapes["embed_in"]["embedding"].shape, np.float32)}
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    names = [p.key for p in path]
    if names[0] == "embed_in":
      continue
    torch_name = {"kernel": "weight", "scale": "weight", "bias": "bias"}[names[-1]]
    prefix = ".".join(names[:-1]).replace("layers_", "layers.")
    shape = leaf.shape[::-1] if names[-1] == "kernel" else leaf.shape
    sd[f"gpt_neox.{prefix}.{torch_name}"] = np.zeros(shape, np.float32)
  sd["embed_out.weight"] = np.zeros((config.vocab_size, config.hidden_size), np.float32)
  return sd


def test_neox_importer_names_missing_and_misshaped_tensors():
  config = hf_import.language_config_from_hf(NEOX_V4)
  sd = _fake_neox_state_dict(config)
  params = hf_import.gpt_neox_params_from_hf(sd, config)
  assert params["layers_1"]["attention"]["query_key_value"]["kernel"].shape == (32, 96)
  key = "gpt_neox.layers.1.mlp.dense_4h_to_h.weight"
  with pytest.raises(ValueError, match=f"missing '{key}'"):
    hf_import.gpt_neox_params_from_hf({k: v for k, v in sd.items() if k != key}, config)
  with pytest.raises(ValueError, match=rf"'{key}' has shape \(64, 32\)"):
    hf_import.gpt_neox_params_from_hf(dict(sd, **{key: np.zeros((64, 32), np.float32)}), config)
  with pytest.raises(ValueError, match="num_hidden_layers=1"):
    hf_import.gpt_neox_params_from_hf(sd, dataclasses.replace(config, num_hidden_layers=1))


# --- parity against transformers -------------------------------------------------------------------

def _randomize(model, torch, *, scale, seed=0):
  """Re-draws every parameter: N(0, scale^2), norm scales 1 + N(0, 0.2^2).

  `scale` keeps the activations O(1-10): the comparison is absolute, and float32 rounding grows with them.
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      is_norm_scale = "norm" in name and name.endswith("weight")
      p.copy_(1.0 + 0.2 * noise if is_norm_scale else scale * noise)
  return model.eval()


def _state_dict(model):
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def torch():
  pytest.importorskip("transformers")
  return pytest.importorskip("torch")


@pytest.mark.parity
@pytest.mark.parametrize("rotary_pct", [0.25, 1.0])
@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])  # model.scan_layers
def test_gpt_neox_matches_transformers(torch, rotary_pct, parallel, scan):
  import transformers
  hf_config = transformers.GPTNeoXConfig(
      vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
      rotary_pct=rotary_pct, rotary_emb_base=10000, use_parallel_residual=parallel, max_position_embeddings=64,
      attn_implementation="eager")
  hf_model = _randomize(transformers.GPTNeoXForCausalLM(hf_config), torch, scale=0.3)
  config = hf_import.language_config_from_hf(hf_config.to_dict())
  assert (config.rotary_pct, config.use_parallel_residual) == (rotary_pct, parallel)
  params = {"params": hf_import.gpt_neox_params_from_hf(_state_dict(hf_model), config)}

  rng = np.random.default_rng(0)
  ids = rng.integers(0, 64, (2, 12))
  mask = np.ones((2, 12), bool)
  mask[1, 7:] = False
  ours = lambda m: np.asarray(GPTNeoX(config, scan=scan).apply(params, jnp.asarray(ids), jnp.asarray(m),
                                                    method=lambda mod, i, k: mod(mod.embed(i), k)))
  with torch.no_grad():
    full = hf_model.gpt_neox(torch.from_numpy(ids)).last_hidden_state.numpy()
    padded = hf_model.gpt_neox(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask).long()
                               ).last_hidden_state.numpy()
  err_full = np.abs(ours(np.ones_like(mask)) - full).max()
  err_pad = np.abs(ours(mask) - padded)[mask].max()
  print(f"gpt_neox rotary_pct={rotary_pct} parallel={parallel} scan={scan}: max abs err {err_full:.2e} / padded {err_pad:.2e}")
  assert err_full < ATOL and err_pad < ATOL


def _vision_parity(torch, hf_model, config, select_layer, scan=False):
  config = dataclasses.replace(config, select_layer=select_layer)
  params = {"params": hf_import.clip_vision_params_from_hf(_state_dict(hf_model), config)}
  pixels = np.random.default_rng(1).normal(size=(2, 3, config.image_size, config.image_size)).astype(np.float32)
  with torch.no_grad():
    states = hf_model(pixel_values=torch.from_numpy(pixels), output_hidden_states=True).hidden_states
  want = states[select_layer].numpy()[:, 1:] if config.class_token else states[select_layer].numpy()
  got = np.asarray(VisionEncoder(config, scan=scan).apply(params, jnp.asarray(pixels.transpose(0, 2, 3, 1))))
  assert got.shape == want.shape
  print(f"vision {config.select_layer}: max |hf| {np.abs(want).max():.2f}", end="; ")
  return float(np.abs(got - want).max())


@pytest.mark.parity
@pytest.mark.parametrize("select_layer", [-2, -1, 1])
@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])  # model.scan_layers
def test_clip_vision_matches_transformers(torch, select_layer, scan):
  import transformers
  hf_config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                            num_attention_heads=2, image_size=32, patch_size=8,
                                            attn_implementation="eager")
  hf_model = _randomize(transformers.CLIPVisionModel(hf_config), torch, scale=0.15)
  config = hf_import.vision_config_from_hf(hf_config.to_dict())
  err = _vision_parity(torch, hf_model, config, select_layer, scan)
  print(f"clip select_layer={select_layer} scan={scan}: max abs err {err:.2e}")
  assert err < ATOL


@pytest.mark.parity
def test_siglip_vision_matches_transformers(torch):
  import transformers
  hf_config = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                              num_attention_heads=2, image_size=32, patch_size=8,
                                              attn_implementation="eager")
  hf_model = _randomize(transformers.SiglipVisionModel(hf_config), torch, scale=0.15)
  config = hf_import.vision_config_from_hf(hf_config.to_dict())
  assert isinstance(config, VisionConfig) and not config.class_token
  err = _vision_parity(torch, hf_model, config, -2)
  print(f"siglip select_layer=-2: max abs err {err:.2e}")
  assert err < ATOL
