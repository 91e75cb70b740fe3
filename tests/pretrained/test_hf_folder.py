"""Hugging Face folders -> our GPT-NeoX and ViT: parity with transformers, and one-line errors.

Parity: tiny random models built by transformers, saved with `save_pretrained`, imported through the
folder loader (config.json + safetensors, sharded or not), compared with transformers' own outputs in
float32. Errors: folders written by our exporter (needs only safetensors), then corrupted.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from builders import TINY_LANGUAGE, TINY_VISION, random_language_params, random_vision_params
from tinyvla_jax.models.language import GPTNeoX
from tinyvla_jax.models.vision import VisionEncoder
from tinyvla_jax.pretrained import hf_export, hf_folder

ATOL = 1e-5


@pytest.fixture(scope="module")
def torch():
  pytest.importorskip("transformers")
  pytest.importorskip("safetensors")
  return pytest.importorskip("torch")


def randomize(model, torch, *, scale, seed=0):
  """Every parameter N(0, scale^2), norm scales 1 + N(0, 0.2^2): HF's near-zero init would hide mix-ups."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      p.copy_(1.0 + 0.2 * noise if "norm" in name and name.endswith("weight") else scale * noise)
  return model.eval()


def to_old_rotary_form(folder):
  """Rewrites a transformers-5 config.json (rope_parameters) in the transformers-4 form (rotary_pct)."""
  path = os.path.join(folder, "config.json")
  cfg = json.load(open(path))
  rope = cfg.pop("rope_parameters")
  cfg.update(rotary_pct=rope["partial_rotary_factor"], rotary_emb_base=rope["rope_theta"])
  json.dump(cfg, open(path, "w"))


# --- parity through folders ----------------------------------------------------------------------

@pytest.mark.parity
@pytest.mark.parametrize("rotary_pct,parallel,form,sharded", [
    (0.25, True, "rope_parameters", True), (0.25, False, "rotary_pct", False),
    (1.0, True, "rotary_pct", False), (1.0, False, "rope_parameters", False)])
def test_gpt_neox_folder_matches_transformers(torch, tmp_path, rotary_pct, parallel, form, sharded):
  import transformers
  hf_config = transformers.GPTNeoXConfig(
      vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
      rotary_pct=rotary_pct, rotary_emb_base=5000, use_parallel_residual=parallel, max_position_embeddings=64,
      attn_implementation="eager")
  hf_model = randomize(transformers.GPTNeoXForCausalLM(hf_config), torch, scale=0.3)
  hf_model.save_pretrained(tmp_path, max_shard_size="20KB" if sharded else "1GB")
  assert os.path.isfile(tmp_path / "model.safetensors.index.json") == sharded
  if form == "rotary_pct":
    to_old_rotary_form(tmp_path)
  config, params = hf_folder.load_language(str(tmp_path))
  assert (config.rotary_pct, config.rotary_emb_base, config.use_parallel_residual) == (rotary_pct, 5000.0, parallel)

  rng = np.random.default_rng(0)
  ids = rng.integers(0, 64, (2, 12))
  mask = np.ones((2, 12), bool)
  mask[1, 7:] = False
  ours = lambda m: np.asarray(GPTNeoX(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(m),
                                                    method=lambda mod, i, k: mod(mod.embed(i), k)))
  with torch.no_grad():
    full = hf_model.gpt_neox(torch.from_numpy(ids)).last_hidden_state.numpy()
    padded = hf_model.gpt_neox(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask).long()
                               ).last_hidden_state.numpy()
  err_full = np.abs(ours(np.ones_like(mask)) - full).max()
  err_pad = np.abs(ours(mask) - padded)[mask].max()
  print(f"folder gpt_neox rotary_pct={rotary_pct} parallel={parallel} {form} sharded={sharded}: "
        f"max abs err {err_full:.2e} / padded {err_pad:.2e}")
  assert err_full < ATOL and err_pad < ATOL


def _vision_parity(torch, hf_model, folder, select_layer=-2):
  config, params = hf_folder.load_vision(str(folder), select_layer=select_layer)
  pixels = np.random.default_rng(1).normal(size=(2, 3, config.image_size, config.image_size)).astype(np.float32)
  with torch.no_grad():
    states = hf_model(pixel_values=torch.from_numpy(pixels), output_hidden_states=True).hidden_states
  want = states[select_layer].numpy()
  want = want[:, 1:] if config.class_token else want
  got = np.asarray(VisionEncoder(config).apply({"params": params}, jnp.asarray(pixels.transpose(0, 2, 3, 1))))
  assert got.shape == want.shape
  return float(np.abs(got - want).max())


@pytest.mark.parity
def test_clip_vision_folder_matches_transformers(torch, tmp_path):
  import transformers
  hf_config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                            num_attention_heads=2, image_size=32, patch_size=8,
                                            attn_implementation="eager")
  hf_model = randomize(transformers.CLIPVisionModel(hf_config), torch, scale=0.15)
  hf_model.save_pretrained(tmp_path)
  err = _vision_parity(torch, hf_model, tmp_path)
  print(f"folder clip_vision select_layer=-2: max abs err {err:.2e}")
  assert err < ATOL


@pytest.mark.parity
def test_full_clip_folder_loads_its_vision_tower(torch, tmp_path):
  """A CLIPModel folder (what openai/clip-vit-large-patch14-336 is): nested vision_config, a
  `vision_model.` prefix and a text tower the loader must skip."""
  import transformers
  hf_config = transformers.CLIPConfig(
      vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                         image_size=32, patch_size=8),
      text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       vocab_size=50, bos_token_id=0, eos_token_id=1, pad_token_id=1), projection_dim=8,
      attn_implementation="eager")
  hf_model = randomize(transformers.CLIPModel(hf_config), torch, scale=0.15)
  hf_model.save_pretrained(tmp_path)
  err = _vision_parity(torch, hf_model.vision_model, tmp_path)
  print(f"folder full clip (vision tower): max abs err {err:.2e}")
  assert err < ATOL


@pytest.mark.parity
def test_siglip_vision_folder_matches_transformers(torch, tmp_path):
  import transformers
  hf_config = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                              num_attention_heads=2, image_size=32, patch_size=8,
                                              attn_implementation="eager")
  hf_model = randomize(transformers.SiglipVisionModel(hf_config), torch, scale=0.15)
  hf_model.save_pretrained(tmp_path)  # includes the pooling head, which the loader skips
  err = _vision_parity(torch, hf_model, tmp_path)
  print(f"folder siglip_vision select_layer=-2: max abs err {err:.2e}")
  assert err < ATOL


# --- corrupted folders: one line naming what to fix ------------------------------------------------

@pytest.fixture
def language_folder(tmp_path):
  pytest.importorskip("safetensors")
  folder = tmp_path / "llm"
  hf_export.export_language(str(folder), random_language_params(TINY_LANGUAGE), TINY_LANGUAGE)
  return folder


def _rewrite(folder, edit):
  from safetensors.numpy import load_file, save_file
  path = str(folder / "model.safetensors")
  tensors = load_file(path)
  edit(tensors)
  save_file(tensors, path)


def _error(fn, *args, **kwargs) -> str:
  with pytest.raises(ValueError) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert "\n" not in message, message
  return message


def test_missing_extra_and_misshaped_tensors_are_named(language_folder):
  key = "layers.1.mlp.dense_4h_to_h.weight"
  _rewrite(language_folder, lambda t: t.pop(key))
  message = _error(hf_folder.load_language, str(language_folder))
  assert f"missing '{key}' (expected shape (32, 64))" in message and str(language_folder) in message

  _rewrite(language_folder, lambda t: t.update({key: np.zeros((64, 32), np.float32)}))
  message = _error(hf_folder.load_language, str(language_folder))
  assert f"'{key}' (in model.safetensors) has shape (64, 32), the config expects (32, 64)" in message

  _rewrite(language_folder, lambda t: t.update({key: np.zeros((32, 64), np.float32),
                                               "layers.2.mlp.dense_4h_to_h.weight": np.zeros((32, 64), np.float32)}))
  message = _error(hf_folder.load_language, str(language_folder))
  assert "unexpected tensor(s), e.g. 'layers.2.mlp.dense_4h_to_h.weight' (in model.safetensors)" in message
  assert "num_hidden_layers=2" in message


def test_vision_extra_layer_is_an_error(tmp_path):
  pytest.importorskip("safetensors")
  folder = tmp_path / "vit"
  hf_export.export_vision(str(folder), random_vision_params(TINY_VISION), TINY_VISION)
  _rewrite(folder, lambda t: t.update({"encoder.layers.5.mlp.fc1.bias": np.zeros((64,), np.float32)}))
  message = _error(hf_folder.load_vision, str(folder))
  assert "'encoder.layers.5.mlp.fc1.bias'" in message and "num_hidden_layers=2" in message


def test_broken_folders_are_one_line_errors(language_folder, tmp_path):
  assert "does not exist" in _error(hf_folder.load_language, str(tmp_path / "nowhere"))

  config = language_folder / "config.json"
  text = config.read_text()
  config.write_text(text[:-5])
  assert "config.json is not readable JSON" in _error(hf_folder.load_language, str(language_folder))
  config.write_text(json.dumps({**json.loads(text), "model_type": "llama"}))
  assert "expected a gpt_neox config, got model_type='llama'" in _error(hf_folder.load_language, str(language_folder))
  config.write_text(text)
  assert "expected a CLIP or SigLIP vision config" in _error(hf_folder.load_vision, str(language_folder))

  weights = language_folder / "model.safetensors"
  data = weights.read_bytes()
  weights.write_bytes(data[: len(data) // 2])
  assert "model.safetensors is not a readable safetensors file" in _error(hf_folder.load_language, str(language_folder))
  weights.unlink()
  assert "has no model.safetensors" in _error(hf_folder.load_language, str(language_folder))
  (language_folder / "pytorch_model.bin").write_bytes(b"")
  assert "only PyTorch .bin weights" in _error(hf_folder.load_language, str(language_folder))
  config.unlink()
  assert "config.json not found" in _error(hf_folder.load_language, str(language_folder))


def test_sharded_index_must_match_its_shards(language_folder):
  from safetensors.numpy import load_file, save_file
  tensors = load_file(str(language_folder / "model.safetensors"))
  (language_folder / "model.safetensors").unlink()
  names = sorted(tensors)
  half = len(names) // 2
  save_file({k: tensors[k] for k in names[:half]}, str(language_folder / "model-00001-of-00002.safetensors"))
  save_file({k: tensors[k] for k in names[half:]}, str(language_folder / "model-00002-of-00002.safetensors"))
  weight_map = {k: f"model-0000{1 + (i >= half)}-of-00002.safetensors" for i, k in enumerate(names)}
  index = language_folder / "model.safetensors.index.json"
  index.write_text(json.dumps({"weight_map": weight_map}))
  config, params = hf_folder.load_language(str(language_folder))
  np.testing.assert_array_equal(params["embed_in"]["embedding"], tensors["embed_in.weight"])

  index.write_text(json.dumps({"weight_map": {**weight_map, names[0]: "model-00002-of-00002.safetensors"}}))
  assert f"puts {names[0]!r} in model-00002-of-00002.safetensors, but it is in model-00001" in _error(
      hf_folder.load_language, str(language_folder))
  index.write_text(json.dumps({"weight_map": {**weight_map, names[0]: "model-00003-of-00003.safetensors"}}))
  assert "names model-00003-of-00003.safetensors, which is not in the folder" in _error(
      hf_folder.load_language, str(language_folder))
