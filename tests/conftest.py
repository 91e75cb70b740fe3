"""Test-wide JAX settings: exact float32 matmuls, and compile-time savings for a 2-core CPU.

The suite compiles many programs and runs each a few times, so compile time dominates: fewer XLA
optimization passes, and a persistent compilation cache shared by the whole session (tests that
build the same train step again -- e.g. a resumed run -- then reuse the compiled program).
"""

import os
import tempfile

os.environ.setdefault("MUJOCO_GL", "osmesa")  # headless rendering, before anything imports MuJoCo

import jax

jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_disable_most_optimizations", True)
_CACHE = os.environ.get("TINYVLA_TEST_XLA_CACHE") or tempfile.mkdtemp(prefix="tinyvla_xla_cache_")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# TINYVLA_NO_SKIPS=1 (CI sets it): a skipped test fails the session, so a missing extra cannot quietly
# shrink the suite that CI reports as passing.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
  if report.skipped and os.environ.get("TINYVLA_NO_SKIPS"):
    _SKIPPED.append(f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else ''}")


def pytest_sessionfinish(session, exitstatus):
  if _SKIPPED:
    print(f"\nTINYVLA_NO_SKIPS: {len(_SKIPPED)} tests skipped:\n  " + "\n  ".join(_SKIPPED[:20]))
    session.exitstatus = 1


def make_tiny_inference_policy(obs_steps: int = 1, seed: int = 0, cameras=("corner2",)):
  """A served policy over the tiny preset at its random init (byte tokenizer, identity statistics, 32 px
  frames, 2 DDIM steps): what the serving and evaluation tests drive."""
  import numpy as np

  from tinyvla_jax import presets
  from tinyvla_jax.data.byte_tokenizer import ByteTokenizer
  from tinyvla_jax.data.normalize import NormStats
  from tinyvla_jax.data.preprocess import Preprocessor
  from tinyvla_jax.diffusion.config import DiffusionConfig
  from tinyvla_jax.models.config import VLAConfig
  from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params
  from tinyvla_jax.serving.inference import InferencePolicy

  d = presets.model_preset("tiny").to_dict()
  d.update(obs_steps=obs_steps, num_cameras=len(cameras))
  d["head"]["readout"] = "spatial_softmax"
  model = UnifiedTinyVLAModel(VLAConfig.from_dict(d))
  params = jax.jit(lambda r: init_params(model, r, text_len=48))(jax.random.key(0))
  stats = NormStats(action_min=-2 * np.ones(4, np.float32), action_max=np.ones(4, np.float32),
                    state_mean=np.zeros(4, np.float32), state_std=np.ones(4, np.float32))
  preprocess = Preprocessor(stats=stats, tokenizer=ByteTokenizer(), max_text_len=48, obs_steps=obs_steps)
  data_info = dict(card=dict(cameras=list(cameras)), image_size=32, tasks=["drawer-open-v3"])
  return InferencePolicy.for_run(model=model, params=params, preprocess=preprocess,
                                 diffusion=DiffusionConfig(num_inference_steps=2), data_info=data_info, seed=seed,
                                 info=dict(example_prompt="open the drawer"))
