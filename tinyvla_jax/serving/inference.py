"""A trained policy's inference, for a robot, a server or the evaluator:

    policy = tinyvla_jax.load_policy("workdirs/fixed")          # the latest readable checkpoint
    policy.metadata                                              # the observation schema, chunk size, tasks
    policy.infer({"images": {"corner2": frame}, "state": s, "prompt": "press the button"})["actions"]
                                                                 # float32 [horizon, action_dim], robot units

One path from a request to actions: the schema's checks (serving/schema.py), the checkpoint's
`Preprocessor` (the crops, normalization, prompt and history the training loader used), one jitted call
(vision + decoder once, the DDIM/DDPM loop in a scan), the actions mapped back to robot units. `prepare`
(checks + preprocessing, cheap, on the caller's thread) and `run` (the model, on a batch of prepared
requests) are separate so a server can check each request as it arrives and batch the model calls.

Batching: `run` on n > 1 requests makes one call of the per-example sampler vmapped over the batch, each
request with its own key, padded to the next power of two (at most log2(max_batch) + 1 compiled shapes).
A single request takes exactly the unbatched path the evaluator always used, so a remote evaluation and an
in-process one compute the same numbers.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

import jax
import numpy as np

from tinyvla_jax.data.preprocess import Preprocessor
from tinyvla_jax.diffusion.config import DiffusionConfig
from tinyvla_jax.errors import MissingFileError, UserError
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, init_params
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.run_config import RunConfig
from tinyvla_jax.serving.schema import Observation, ObservationError, ObservationSchema

PROTOCOL_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Prepared:
  """One checked request, preprocessed: the model's inputs (a batch of 1) and the sampler's key."""

  inputs: dict[str, np.ndarray]
  key: jax.Array


class InferencePolicy:

  def __init__(self, *, model: UnifiedTinyVLAModel, params, preprocess: Preprocessor, diffusion: DiffusionConfig,
               schema: ObservationSchema, seed: int = 0, info: dict | None = None):
    if preprocess.obs_steps != model.config.obs_steps:
      raise UserError(f"the preprocessing keeps {preprocess.obs_steps} observation steps, the model takes "
                       f"model.obs_steps={model.config.obs_steps}")
    self.model, self.params, self.preprocess, self.schema = model, params, preprocess, schema
    self.info = dict(info or {})  # plain data for the metadata: workdir, step, preset, tasks
    self.seed = seed
    self.run_config: RunConfig | None = None  # set by load_policy, with the checkpoint's assets and step
    self.assets: dict = {}
    self.step: int | None = None
    diffusion_policy = DiffusionPolicy.from_config(model, diffusion)
    self._sample = diffusion_policy.jitted_sampler()

    def sample_one(params, key, images, tokens, token_mask, state):
      return diffusion_policy.sample_actions(params, key, images=images, tokens=tokens, token_mask=token_mask,
                                             state=state)

    self._sample_each = jax.jit(jax.vmap(sample_one, in_axes=(None, 0, 0, 0, 0, 0)))
    self._own_key = jax.random.key(seed)
    self._calls = 0
    self._lock = threading.Lock()
    self._prompts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  @classmethod
  def for_run(cls, *, model: UnifiedTinyVLAModel, params, preprocess: Preprocessor, diffusion: DiffusionConfig,
              data_info: dict, seed: int = 0, info: dict | None = None) -> "InferencePolicy":
    """A policy over a run's model, with the schema of its training data (`data_info`: a checkpoint's
    assets["data"])."""
    return cls(model=model, params=params, preprocess=preprocess, diffusion=diffusion, seed=seed,
               schema=schema_for(model.config, data_info), info=dict(info or {}, tasks=data_info.get("tasks")))

  @property
  def metadata(self) -> dict[str, Any]:
    """What a client needs to know: the observation schema, the chunk, where the weights come from."""
    return {"policy": "tinyvla_jax", "protocol_version": PROTOCOL_VERSION, "observation": self.schema.describe(),
            "action_horizon": self.schema.horizon, "action_dim": self.schema.action_dim,
            **{k: v for k, v in self.info.items() if v is not None}}

  # --- the two halves of a request ---------------------------------------------------------------

  def prepare(self, obs: Any) -> Prepared:
    """Checks `obs` against the schema (ObservationError naming the key) and preprocesses it."""
    checked: Observation = self.schema.check(obs)
    prompt = self._prompts.get(checked.prompt)
    if prompt is None:
      try:
        prompt = self.preprocess.encode_prompt(checked.prompt)
      except UserError as error:
        raise ObservationError(f"'prompt': {error}") from None
      if len(self._prompts) < 1024:  # a robot repeats its few instructions; a client cycling them is bounded
        self._prompts[checked.prompt] = prompt
    inputs = self.preprocess.observation(list(checked.frames), list(checked.states), prompt)
    if checked.noise_key is not None:
      key = jax.random.wrap_key_data(checked.noise_key, impl="threefry2x32")
    else:
      with self._lock:
        key = jax.random.fold_in(self._own_key, self._calls)
        self._calls += 1
    return Prepared(inputs=inputs, key=key)

  def run(self, batch: list[Prepared]) -> list[np.ndarray]:
    """Action chunks [horizon, action_dim] in robot units, one per prepared request."""
    if not batch:
      return []
    if len(batch) == 1:
      chunks = np.asarray(self._sample(self.params, batch[0].key, **batch[0].inputs))  # [1, T, A]
    else:
      size = 1 << (len(batch) - 1).bit_length()  # the next power of two: few compiled shapes
      padded = batch + [batch[-1]] * (size - len(batch))
      keys = jax.numpy.stack([p.key for p in padded])
      inputs = {k: np.stack([p.inputs[k] for p in padded]) for k in padded[0].inputs}  # [n, 1, ...]
      chunks = np.asarray(self._sample_each(self.params, keys, inputs["images"], inputs["tokens"],
                                            inputs["token_mask"], inputs["state"]))[:len(batch), 0]
    return [self.preprocess.unnormalize_actions(c).astype(np.float32) for c in chunks]

  def infer(self, obs: Any) -> dict[str, np.ndarray]:
    return {"actions": self.run([self.prepare(obs)])[0]}

  def infer_batch(self, observations: list[Any]) -> list[dict[str, np.ndarray]]:
    return [{"actions": a} for a in self.run([self.prepare(o) for o in observations])]

  def example_observation(self) -> dict[str, Any]:
    """A valid observation (black frames, the state at the data's mean, the first task's instruction):
    what warm-up and smoke tests send."""
    h, w, c = self.schema.frame_shape
    k = self.schema.obs_steps
    return {"images": {name: np.zeros((k, h, w, c), np.uint8) for name in self.schema.cameras},
            "state": np.repeat(np.asarray(self.preprocess.stats.state_mean, np.float32)[None], k, 0),
            "prompt": self.info.get("example_prompt") or "do the task"}

  def warmup(self, max_batch: int = 1) -> None:
    """Compiles every batch shape `run` can use up to max_batch (the first request is then not slow)."""
    size, prepared = 1, self.prepare(self.example_observation())
    while True:
      self.run([prepared] * size)
      if size >= max_batch:
        break
      size *= 2


def schema_for(model_config, data_info: dict) -> ObservationSchema:
  card = data_info.get("card") or {}
  cameras = card.get("cameras") or [f"camera{i}" for i in range(model_config.num_cameras)]
  side = data_info.get("image_size") or card.get("image_size")
  if side is None:
    raise UserError("the checkpoint does not record its frames' size (assets['data']['image_size']); retrain "
                     "with this version to serve it")
  if len(cameras) != model_config.num_cameras:
    raise UserError(f"the checkpoint's data has cameras {cameras} but model.num_cameras={model_config.num_cameras}")
  head = model_config.head
  return ObservationSchema(cameras=tuple(cameras), frame_shape=(int(side), int(side), 3), state_dim=head.state_dim,
                           obs_steps=model_config.obs_steps, horizon=head.horizon, action_dim=head.action_dim,
                           resize_frames=card.get("format") == "lerobot")


def load_policy(workdir: str, step: int | None = None, *, seed: int = 0) -> InferencePolicy:
  """The policy of a training workdir's checkpoint (its latest readable step by default): the inference
  params (the EMA when trained with it) and the preprocessing stored with them, from the workdir alone."""
  from tinyvla_jax.checkpoints import Checkpointer
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise MissingFileError(f"no checkpoints under {workdir!r} (--workdir): train first with "
                            "python -m tinyvla_jax.train --config configs/fixed.py --workdir DIR")
  with Checkpointer(workdir) as checkpointer:
    assets, config = checkpointer.restore_json(step)
    config = RunConfig.from_dict(config)
    model = UnifiedTinyVLAModel(config.model)
    target = jax.eval_shape(lambda: init_params(model, jax.random.key(0), text_len=config.data.max_text_len))
    restored = checkpointer.restore(train_state_target=None, params_target=target, step=step)
  preprocess = Preprocessor.from_assets(restored.assets, max_text_len=config.data.max_text_len,
                                        obs_steps=config.model.obs_steps)
  data_info = restored.assets.get("data", {})
  instructions = [v["instructions"][0] for v in (data_info.get("card") or {}).get("tasks", {}).values()
                  if v.get("instructions")]
  info = dict(workdir=os.path.abspath(workdir), step=int(restored.step), preset=config.preset,
              example_prompt=instructions[0] if instructions else None)
  policy = InferencePolicy.for_run(model=model, params=restored.params, preprocess=preprocess,
                                   diffusion=config.diffusion, data_info=data_info, seed=seed, info=info)
  policy.run_config, policy.assets, policy.step = config, restored.assets, int(restored.step)
  return policy
