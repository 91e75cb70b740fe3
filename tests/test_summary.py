"""`python -m tinyvla_jax.summary`: parameter counts from shapes, against closed-form figures."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from tinyvla_jax import presets
from tinyvla_jax.models.action_head import ActionHead
from tinyvla_jax.models.config import ActionHeadConfig, VLAConfig
from tinyvla_jax.summary import component_counts


def paper_head_count(hidden: int) -> int:
  cfg = ActionHeadConfig(**{**presets.PAPER_HEAD, "action_dim": 10, "state_dim": 7})
  shapes = jax.eval_shape(lambda: ActionHead(cfg).init(
      jax.random.key(0), hidden=jnp.zeros((1, 3, hidden)), mask=jnp.ones((1, 3), bool), state=jnp.zeros((1, 7)),
      noisy_actions=jnp.zeros((1, 16, 10)), timesteps=jnp.zeros((1,), jnp.int32)))
  return sum(x.size for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("hidden,expected", [(512, 72_831_498), (1024, 80_963_082), (2048, 98_799_114)])
def test_paper_head_sizes(hidden, expected):
  # Closed form for Diffusion Policy's ConditionalUnet1D (down 256/512/1024, kernel 5, FiLM, step
  # embedding 256) + TinyVLA's LayerNorm/combine, action_dim 10, state_dim 7: 72.83M / 80.96M / 98.80M.
  assert paper_head_count(hidden) == expected


def test_s_preset_summary_counts():
  d = presets.model_preset("s").to_dict()
  d["head"].update(action_dim=10, state_dim=7)
  d["finetune"].update(vision="full", language="full")  # the base models' sizes, without LoRA adapters
  counts = component_counts(VLAConfig.from_dict(d))
  assert counts["action head"] == 72_831_498
  # Pythia-70M without its untied LM head (50304 x 512): 70.43M - 25.76M.
  assert counts["language"] == 44_670_976
  # CLIP ViT-L/14-336 up to its second-to-last layer (23 of 24 layers; no post-LN, no projection).
  assert counts["vision"] == 290_909_184
  assert counts["total"] == sum(counts[k] for k in ("vision", "projector", "language", "action head"))


def test_s_preset_lora_counts():
  """TinyVLA-S's LoRA (r=64 on every Dense of the 23 CLIP layers run and the 6 Pythia layers): the
  adapters, the projector and the head train; nothing else does."""
  d = presets.model_preset("s").to_dict()
  d["head"].update(action_dim=10, state_dim=7)
  config = VLAConfig.from_dict(d)
  counts, trainable = component_counts(config), component_counts(config, frozen=())
  # Adapters r * (in + out): CLIP q,k,v,o 4 x 64 * 2048, fc1/fc2 2 x 64 * 5120 per layer;
  # Pythia-70M query_key_value 64 * 2048, dense 64 * 1024, MLP 2 x 64 * 2560 per layer.
  vision_lora, language_lora = 23 * 64 * (4 * 2048 + 2 * 5120), 6 * 64 * (2048 + 1024 + 2 * 2560)
  assert (trainable["vision"], trainable["language"]) == (vision_lora, language_lora)
  assert counts["vision"] == 290_909_184 + vision_lora and counts["language"] == 44_670_976 + language_lora
  assert trainable["action head"] == counts["action head"] == 72_831_498
  assert trainable["projector"] == counts["projector"]
  assert trainable["total"] == vision_lora + language_lora + counts["projector"] + counts["action head"]
  frozen_vision = component_counts(config, frozen=("vision",))
  assert frozen_vision["vision"] == 0 and frozen_vision["language"] == language_lora


def test_cli_prints_the_table():
  out = subprocess.run([sys.executable, "-m", "tinyvla_jax.summary", "--config", "configs/fixed.py:tiny"],
                       capture_output=True, text=True, check=True,
                       cwd=pathlib.Path(__file__).resolve().parents[1]).stdout
  for row in ("vision", "projector", "language", "action head", "total", "trainable"):
    assert row in out


@pytest.mark.parametrize("args,expected", [
    (["--config", "configs/fixed.py:huge"], "unknown preset 'huge'"),
    (["--config", "configs/fixed.py:tiny", "--config.model.head.horizn=16"], "Did you mean \"horizon\""),
    (["--config", "configs/fixed.py:tiny", "--config.model.head.horizon=10"], "model.head.horizon=10 must be"),
])
def test_cli_errors_are_one_line(args, expected):
  proc = subprocess.run([sys.executable, "-m", "tinyvla_jax.summary", *args], capture_output=True, text=True,
                        cwd=pathlib.Path(__file__).resolve().parents[1])
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and expected in last, proc.stderr
