"""The typed run config: every shipped config builds, round-trips through a checkpoint's JSON, and a wrong
key, type or value is one line naming the key; the ml_collections sections are made from the dataclasses'
defaults (one home per default)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from tinyvla_jax import presets, recipes
from tinyvla_jax.data.config import DataConfig
from tinyvla_jax.diffusion.config import DiffusionConfig
from tinyvla_jax.errors import UserError
from tinyvla_jax.run_config import EvalConfig, OptimConfig, Protocol, RunConfig, TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_file(name: str):
  spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name, preset", [(n, p) for n in ("fixed", "long", "broken", "mt10") for p in presets.PRESETS])
def test_every_shipped_config_builds_and_round_trips_through_json(name, preset):
  c = config_file(name).get_config(preset)
  run = recipes.typed(c)
  assert run.preset == preset and run.model.head.horizon == c.model.head.horizon
  stored = json.loads(json.dumps(run.to_dict()))  # what a checkpoint's config.json holds
  assert RunConfig.from_dict(stored) == run
  assert run.data.crop_fraction == c.data.crop_fraction and run.train.epochs == c.train.epochs


def test_the_sections_are_made_from_the_dataclass_defaults():
  c = recipes.seed_recipe(presets.model_preset("tiny"), preset="tiny")
  run = recipes.typed(c)
  assert run.optim == OptimConfig() and run.train == TrainConfig() and run.eval == EvalConfig()
  assert run.diffusion == DiffusionConfig()
  assert run.data == DataConfig(image_size=32, num_cameras=1)
  assert run.eval.protocol == Protocol()
  # The seed's fixed numbers: AdamW lr 1e-4, betas (0.9, 0.95), eps 1e-8, wd 0.01, cosine, clip 1.0, batch 4.
  o = run.optim
  assert (o.learning_rate, o.b1, o.b2, o.eps, o.weight_decay, o.schedule, o.grad_clip_norm) == (
      1e-4, 0.9, 0.95, 1e-8, 0.01, "cosine", 1.0)
  assert run.train.batch_size == 4 and run.train.loss_scale_threshold is None


def test_optional_fields_are_typed_placeholders():
  c = recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny")
  c.train.max_steps = 100  # an int, though the default is None
  c.optim.grad_clip_norm = None
  run = recipes.typed(c)
  assert run.train.max_steps == 100 and run.optim.grad_clip_norm is None
  with pytest.raises(TypeError):
    c.train.max_steps = "many"  # ml_collections checks the placeholder's type


@pytest.mark.parametrize("change, message", [
    (lambda d: d["train"].update(bogus=1),
     "unknown config key(s) train.bogus; valid keys: "),
    (lambda d: d.update(trainer={}), "unknown config section(s) trainer; valid: model, data, "),
    (lambda d: d["optim"].update(learning_rate="fast"),
     "--config.optim.learning_rate='fast' must be of type float"),
    (lambda d: d["train"].update(epochs=None), "--config.train.epochs=None is not allowed: it needs a value of type int"),
    (lambda d: d["train"].update(epochs=True), "--config.train.epochs=True must be of type int"),
    (lambda d: d["data"].update(source="hdf5"),
     "--config.data.source='hdf5' must be one of ('metaworld', 'lerobot', 'synthetic')"),
    (lambda d: d["data"].update(source="lerobot"),
     "data.source='lerobot' needs --config.data.path=DIR (a local LeRobot dataset folder)"),
    (lambda d: d["data"].update(frame_size=4), "--config.data.frame_size=4 must be"),
    (lambda d: d["diffusion"].update(num_inference_steps=101),
     "--config.diffusion.num_inference_steps=101 must be <= diffusion.num_train_steps=100"),
    (lambda d: d["eval"].update(execution="chunked"),
     "--config.eval.execution='chunked' must be one of ('receding', 'ensemble')"),
    (lambda d: d["optim"].update(schedule="linear"),
     "--config.optim.schedule='linear' must be one of ('cosine', 'constant')"),
    (lambda d: d["model"]["head"].update(nope=1), "unknown config key(s) model.head.nope"),
    (lambda d: d["train"].update(privileged_weight=1.0), "--config.model.head.privileged_dim=0 must be > 0 with "
     "train.privileged_weight=1.0"),
    (lambda d: (d["train"].update(privileged_weight=1.0), d["model"]["head"].update(privileged_dim=6),
                d["data"].update(source="synthetic")),
     "--config.data.source='synthetic' must be 'metaworld' with train.privileged_weight > 0"),
    (lambda d: d["train"].update(privileged_weight=-1.0), "--config.train.privileged_weight=-1.0 must be"),
])
def test_bad_keys_types_and_values_are_one_line(change, message):
  d = recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny").to_dict()
  change(d)
  with pytest.raises(UserError) as info:
    RunConfig.from_dict(d)
  assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_ints_become_floats_and_lists_tuples():
  d = recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny").to_dict()
  d["optim"].update(learning_rate=1, frozen=["vision"])
  run = RunConfig.from_dict(d)
  assert isinstance(run.optim.learning_rate, float) and run.optim.frozen == ("vision",)


def test_a_missing_section_or_key_takes_its_default():
  assert RunConfig.from_dict({}) == RunConfig()
  assert RunConfig.from_dict({"train": {"epochs": 7}}).train == TrainConfig(epochs=7)


def test_replace_validates_again():
  run = recipes.typed(recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny"))
  with pytest.raises(UserError, match=r"--config.train.batch_size=0 must be an integer >= 1"):
    run.replace(train=dataclasses.replace(run.train, batch_size=0))


def test_the_config_files_still_take_ml_collections_overrides():
  c = config_file("fixed").get_config("cpu")
  assert isinstance(c, ml_collections.ConfigDict)
  assert isinstance(c.train, ml_collections.ConfigDict) and isinstance(c.eval, ml_collections.ConfigDict)


@pytest.mark.parametrize("preset", presets.PRESETS)
def test_every_model_key_is_in_the_preset_so_the_command_line_can_set_it(preset):
  """`--config.model.remat=true` (and every other model field) must find its key: ml_collections rejects a
  key the section does not hold."""
  from tinyvla_jax.models.config import ActionHeadConfig, FinetuneConfig, LanguageConfig, VisionConfig, VLAConfig
  m = presets.model_preset(preset)
  names = lambda cls: {f.name for f in dataclasses.fields(cls)}
  assert names(VLAConfig) == set(m.keys())
  for section, cls in (("vision", VisionConfig), ("language", LanguageConfig), ("head", ActionHeadConfig),
                       ("finetune", FinetuneConfig)):
    assert names(cls) <= set(m[section].keys()), section
  # The paper presets scan their (deep) layer stacks; the from-scratch ones unroll them.
  assert recipes.typed(config_file("fixed").get_config(preset)).model.scan_layers == (preset in ("s", "b", "h"))


def test_model_flags_are_accepted_on_the_command_line(tmp_path):
  """The real entry point takes them: the run gets as far as the next (deliberately bad) value."""
  out = subprocess.run([sys.executable, "-m", "tinyvla_jax.train", "--config", "configs/fixed.py:tiny",
                        "--config.model.remat=true", "--config.model.scan_layers=true",
                        "--config.model.frozen_dtype=bfloat16", "--config.model.vision.act=gelu",
                        "--config.train.max_steps=0", "--workdir", str(tmp_path / "w")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TINYVLA_HUGE_PAGES": "0"})
  assert out.returncode != 0 and "--config.train.max_steps=0 must be" in out.stderr + out.stdout, out.stderr
