"""A tiny served policy for the serving and evaluation tests (a module of its own: `conftest` names
several files in this tree)."""

import jax


def make_tiny_inference_policy(obs_steps: int = 1, seed: int = 0, cameras=("corner2",), image_history: bool = True):
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
  d.update(obs_steps=obs_steps, num_cameras=len(cameras), image_history=image_history)
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
