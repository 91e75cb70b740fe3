"""Our weights -> Hugging Face folders: JAX -> HF -> JAX is exact, and transformers reads the folders."""

from __future__ import annotations

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from builders import TINY_LANGUAGE, TINY_VISION, random_language_params, random_params_like, random_vision_params
from tinyvla_jax import presets
from tinyvla_jax.models.config import VLAConfig
from tinyvla_jax.models.language import GPTNeoX
from tinyvla_jax.models.vision import VisionEncoder
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params
from tinyvla_jax.pretrained import hf_export, hf_folder

SIGLIP = dataclasses.replace(TINY_VISION, act="gelu_tanh", layer_norm_eps=1e-6, patch_bias=True, class_token=False,
                             pre_layernorm=False)


@pytest.fixture(autouse=True)
def _safetensors():
  pytest.importorskip("safetensors")


def test_language_round_trip_is_exact(tmp_path):
  params = random_language_params(TINY_LANGUAGE, seed=3)
  hf_export.export_language(str(tmp_path), params, TINY_LANGUAGE, tokenizer_json='{"fake": 1}')
  config, back = hf_folder.load_language(str(tmp_path))
  assert config == TINY_LANGUAGE
  chex.assert_trees_all_equal(back, jax.device_get(params))
  assert (tmp_path / "tokenizer.json").read_text() == '{"fake": 1}'
  hf_config = json.loads((tmp_path / "config.json").read_text())
  assert hf_config["architectures"] == ["GPTNeoXModel"]
  assert hf_config["rotary_pct"] == hf_config["rope_parameters"]["partial_rotary_factor"] == 0.5


@pytest.mark.parametrize("vision", [TINY_VISION, SIGLIP], ids=["clip", "siglip"])
def test_vision_round_trip_is_exact(tmp_path, vision):
  params = random_vision_params(vision, seed=4)
  hf_export.export_vision(str(tmp_path), params, vision)
  # The folder holds the layers the tower runs, and says its last one is the feature layer: the preset's
  # select_layer=-2 must not cut one more.
  config, back = hf_folder.load_vision(str(tmp_path), select_layer=-2)
  assert config.num_layers_run == vision.num_layers_run
  assert dataclasses.replace(config, depth=vision.depth, select_layer=vision.select_layer) == vision
  chex.assert_trees_all_equal(back, jax.device_get(params))


def test_export_vla_merges_lora_and_refuses_unmerged_adapters(tmp_path):
  d = presets.model_preset("tiny").to_dict()
  d["language"].update(num_hidden_layers=1)
  d["finetune"].update(vision="lora", language="lora", lora_rank=2)
  config = VLAConfig.from_dict(d)
  # Random values everywhere (B too, as after training); shapes from the model without running its init.
  params = random_params_like(jax.eval_shape(lambda: init_params(UnifiedTinyVLAModel(config), jax.random.key(0))))
  with pytest.raises(ValueError, match="hold LoRA adapters: merge them first"):
    hf_export.export_language(str(tmp_path / "x"), params["language"], config.language)
  paths = hf_export.export_vla(str(tmp_path), params, config)
  _, language = hf_folder.load_language(paths["language"])
  layer = params["language"]["layers_0"]["mlp"]["dense_h_to_4h"]
  want = layer["kernel"] + layer["lora_a"] @ layer["lora_b"] * config.finetune.lora_alpha / 2
  np.testing.assert_allclose(language["layers_0"]["mlp"]["dense_h_to_4h"]["kernel"], want, atol=1e-6)
  _, vision = hf_folder.load_vision(paths["vision"])
  assert "lora_a" not in vision["layers_0"]["mlp"]["fc1"]


@pytest.mark.parity
def test_transformers_reads_the_exported_folders(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  params = random_language_params(TINY_LANGUAGE, seed=5)
  hf_export.export_language(str(tmp_path / "llm"), params, TINY_LANGUAGE)
  model, info = transformers.GPTNeoXModel.from_pretrained(str(tmp_path / "llm"), output_loading_info=True,
                                                          attn_implementation="eager")
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ids = np.random.default_rng(0).integers(0, TINY_LANGUAGE.vocab_size, (2, 10))
  with torch.no_grad():
    want = model.eval()(torch.from_numpy(ids)).last_hidden_state.numpy()
  got = GPTNeoX(TINY_LANGUAGE).apply({"params": params}, jnp.asarray(ids), jnp.ones((2, 10), bool),
                                     method=lambda m, i, k: m(m.embed(i), k))
  err = float(np.abs(np.asarray(got) - want).max())
  print(f"exported gpt_neox read by transformers: max abs err {err:.2e}")
  assert err < 1e-5

  for vision, cls in ((TINY_VISION, transformers.CLIPVisionModel), (SIGLIP, transformers.SiglipVisionModel)):
    folder = str(tmp_path / cls.__name__)
    vparams = random_vision_params(vision, seed=6)
    hf_export.export_vision(folder, vparams, vision)
    model, info = cls.from_pretrained(folder, output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    pixels = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
      want = model.eval()(pixel_values=torch.from_numpy(pixels), output_hidden_states=True).hidden_states[-1].numpy()
    want = want[:, 1:] if vision.class_token else want
    got = VisionEncoder(vision).apply({"params": vparams}, jnp.asarray(pixels.transpose(0, 2, 3, 1)))
    err = float(np.abs(np.asarray(got) - want).max())
    print(f"exported {cls.__name__} read by transformers: max abs err {err:.2e}")
    assert err < 1e-5
