"""Pretrained folders in a run: config.json sets the sizes, the weights replace the init, LoRA trains
only adapters/projector/head, the checkpoint is self-contained (tokenizer asset), and it exports back.

Folders come from our exporter (random JAX weights) plus a tokenizer trained here: no torch needed.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from builders import TINY_LANGUAGE, TINY_VISION, random_language_params, random_vision_params
from tinyvla_jax import presets, recipes
from tinyvla_jax.data.tokenizer import tokenizer_from_assets
from tinyvla_jax.models.lora import is_adapter
from tinyvla_jax.pretrained import hf_export, hf_folder
from tinyvla_jax.recipes import typed
from tinyvla_jax.run_config import with_backbones
from tinyvla_jax.training.workdir import config_differences
from tinyvla_jax.training import loop
from tinyvla_jax.checkpoints import Checkpointer

pytest.importorskip("safetensors")  # every test here writes folders

LANGUAGE = dataclasses.replace(TINY_LANGUAGE, num_hidden_layers=1)
VISION = dataclasses.replace(TINY_VISION, depth=2)  # select_layer -2: the folder holds 1 layer


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer_json):
  root = tmp_path_factory.mktemp("pretrained")
  language, vision = random_language_params(LANGUAGE, seed=11), random_vision_params(VISION, seed=12)
  hf_export.export_language(str(root / "llm"), language, LANGUAGE, tokenizer_json=tokenizer_json)
  hf_export.export_vision(str(root / "vit"), vision, VISION)
  return dict(llm=str(root / "llm"), vision=str(root / "vit"), language_params=language, vision_params=vision)


def paper_config(folders, preset="s"):
  c = recipes.fixed_recipe(presets.model_preset(preset), preset=preset)
  c.pretrained.llm, c.pretrained.vision = folders["llm"], folders["vision"]
  return c


def test_with_backbones_takes_sizes_from_the_folders(folders):
  c = typed(paper_config(folders))
  resolved = with_backbones(c)
  assert resolved is not c and c.model.language.hidden_size == 512  # the run's config is not modified
  assert resolved.model.language == LANGUAGE
  assert resolved.model.image_token_id == 300  # the tokenizer's first free id
  # An exported tower is cut at its feature layer and says so: its last layer is read.
  assert (resolved.model.vision.depth, resolved.model.vision.select_layer) == (1, -1)
  assert resolved.model.vision.width == 32 and resolved.model.head.down_dims == (256, 512, 1024)
  assert resolved.model.finetune.language == "lora"
  nothing = typed(recipes.fixed_recipe(presets.model_preset("s"), preset="s"))
  assert with_backbones(nothing) is nothing


def test_a_hugging_face_tower_keeps_the_presets_select_layer(tmp_path):
  """Without our marker (any CLIP from the hub) a folder is read up to the preset's select_layer."""
  hf_export.export_vision(str(tmp_path), random_vision_params(TINY_VISION), TINY_VISION)  # 2 layers written
  assert hf_folder.load_vision(str(tmp_path), select_layer=-2)[0].num_layers_run == 2  # marker: read all
  cfg = json.loads((tmp_path / "config.json").read_text())
  del cfg[hf_folder.SELECT_LAYER_KEY]
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  config, params = hf_folder.load_vision(str(tmp_path), select_layer=-2)
  assert (config.depth, config.num_layers_run) == (2, 1) and "layers_1" not in params


def test_a_tokenizer_without_a_free_id_is_an_error(folders, tmp_path):
  hf_export.export_language(str(tmp_path), folders["language_params"] | {
      "embed_in": {"embedding": folders["language_params"]["embed_in"]["embedding"][:300]}},
      dataclasses.replace(LANGUAGE, vocab_size=300),
      tokenizer_json=pathlib.Path(folders["llm"], "tokenizer.json").read_text())
  c = paper_config(folders)
  c.pretrained.llm = str(tmp_path)
  with pytest.raises(ValueError, match="uses every id of the LLM's 300-row embedding"):
    with_backbones(typed(c))


def micro_run_config(folders, **train):
  c = recipes.synthetic_data(recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny"))
  c.pretrained.llm, c.pretrained.vision = folders["llm"], folders["vision"]
  c.model.finetune.update(vision="lora", language="lora", lora_rank=4, lora_alpha=8.0)
  c.model.head.update(down_dims=(8,), step_embed_dim=8, horizon=8, kernel_size=3)
  c.data.update(num_episodes=6, val_fraction=0.0, max_text_len=48)
  c.train.update(epochs=1, log_every=1, tensorboard=False, batch_size=2, **train)
  return c


def test_training_from_folders_with_lora(folders, tmp_path):
  workdir = str(tmp_path / "run")
  result = loop.train(typed(micro_run_config(folders, max_steps=2)), workdir=workdir, progress=False)
  params = jax.device_get(result.state.params)

  # The backbones' base weights are the folders' and, under LoRA, stay exactly so; adapters trained.
  for component, key in (("language", "language_params"), ("vision", "vision_params")):
    base = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(params[component])[0]
            if not is_adapter(p)}
    want = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(folders[key])[0]}
    assert base.keys() == want.keys()
    for name in base:
      np.testing.assert_array_equal(base[name], want[name], err_msg=f"{component}{name}")
  assert np.any(params["language"]["layers_0"]["mlp"]["dense_h_to_4h"]["lora_b"])

  # The checkpoint is self-contained: resolved sizes and the tokenizer's JSON.
  with Checkpointer(workdir) as ckpt:
    assets, stored = ckpt.restore_json()
  assert stored["model"]["language"]["hidden_size"] == 32 and stored["model"]["image_token_id"] == 300
  tok = tokenizer_from_assets(assets)
  assert tok.image_token_id == 300 and tok.json_text == pathlib.Path(folders["llm"], "tokenizer.json").read_text()

  # A resumed run resolves the same config from the folders, so it matches the stored one.
  again = with_backbones(typed(micro_run_config(folders, max_steps=2)))
  assert config_differences(stored, again.to_dict()) == []

  # Export: adapters merged into the kernels, read back by the folder loader.
  out = tmp_path / "exported"
  proc = subprocess.run([sys.executable, "-m", "tinyvla_jax.pretrained.hf_export", "--workdir", workdir,
                         "--out", str(out)], capture_output=True, text=True,
                        cwd=pathlib.Path(__file__).resolve().parents[2])
  assert proc.returncode == 0, proc.stderr[-2000:]
  _, language = hf_folder.load_language(str(out / "language"))
  layer = params["language"]["layers_0"]["mlp"]["dense_h_to_4h"]
  np.testing.assert_allclose(language["layers_0"]["mlp"]["dense_h_to_4h"]["kernel"],
                             layer["kernel"] + layer["lora_a"] @ layer["lora_b"] * 2.0, atol=1e-6)
  assert (out / "language" / "tokenizer.json").read_text() == tok.json_text
  chex.assert_trees_all_equal(hf_folder.load_vision(str(out / "vision"))[1]["position_embedding"],
                              params["vision"]["position_embedding"])
