"""Where a train step's FLOPs and time go, per component, and examples/s against the batch size.

  python scripts/profile_step.py --config configs/fixed.py [--batches 4,16,32,64] [--repeats 5]

Prints one JSON object per line:
- `component`: forward+backward of the vision tower, the decoder (over the spliced sequence), the action
  head (condition readout + U-Net, all noise samples), the optimizer update (clip + AdamW + EMA), and the
  host (assembling a batch: indexing, crops, history), each timed alone at the config's batch size with
  XLA's FLOP count, as a share of the whole step;
- `step`: the whole jitted train step per batch size: ms, examples/s, GFLOP/s, and the fraction of this
  machine's matmul peak (a large float32 matmul measured in the same run).
Compile time is excluded (a warm-up call first); times are medians. The components are jitted apart, so
they do not add up exactly to the step (XLA fuses across them inside the step).
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from tinyvla_jax import cli, roofline
from tinyvla_jax.models.vla import UnifiedTinyVLAModel, splice_image_tokens
from tinyvla_jax.models.vision import CLIP_MEAN, CLIP_STD, preprocess_images
from tinyvla_jax.recipes import typed
from tinyvla_jax.run_config import with_backbones
from tinyvla_jax.training import loop
from tinyvla_jax.policy.diffusion_policy import DiffusionPolicy
from tinyvla_jax.training.optimizer import partition_of

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/fixed.py")
_BATCHES = flags.DEFINE_string("batches", "4,16,32,64", "Batch sizes for the examples/s sweep.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement (median).")


def timed(fn, *args, repeats: int) -> tuple[float, float]:
  """(median seconds per call, XLA FLOPs of one call) of a jitted fn, compile excluded."""
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), flops


def grad_of(loss):
  """fwd+bwd of a scalar function of the params (what the train step pays for a component)."""
  return jax.grad(loss)


def main(argv):
  del argv
  config = with_backbones(typed(_CONFIG.value))
  model_cfg = config.model
  data = loop.load_data(config)
  model = UnifiedTinyVLAModel(model_cfg)
  state, tx, lr = loop.build_state(config, model, total_steps=1000)
  ns = config.train.noise_samples
  peak = roofline.matmul_rate()
  reps = _REPEATS.value
  batch = jax.device_put(next(data.train.batches(0)))
  params = state.params
  cfg = model_cfg
  rng = jax.random.key(0)

  # Component by component, each differentiated with respect to its own parameters.
  def vision_loss(p, images):
    images = images[:, -cfg.encoded_views:]  # model.image_history=False encodes the newest step's views only
    flat = images.reshape((-1,) + images.shape[2:])
    pixels = preprocess_images(flat, image_size=cfg.vision.image_size, mean=CLIP_MEAN, std=CLIP_STD)
    return jnp.sum(model.apply({"params": p}, pixels, method=lambda m, x: m.projector(m.vision(x))))

  image_embeds = model.apply({"params": params}, batch["images"], method=model.encode_images)

  def language_loss(p, image_embeds, tokens, token_mask):
    def run(m):
      text = m.language.embed(tokens)
      embeds, mask = splice_image_tokens(text_embeds=text, text_mask=token_mask, tokens=tokens,
                                         image_embeds=image_embeds, image_token_id=cfg.image_token_id)
      return m.language(embeds, mask)
    return jnp.sum(model.apply({"params": p}, method=run))

  hidden, mask = model.apply({"params": params}, images=batch["images"], tokens=batch["tokens"],
                             token_mask=batch["token_mask"], method=model.encode)
  start = jnp.argmax(batch["tokens"] == cfg.image_token_id, axis=1)

  def head_loss(p, hidden, mask, start, image_embeds, b):
    def run(m):
      cond = m.head.encode_condition(hidden=hidden, mask=mask, state=b["state"], image_start=start,
                                     image_tokens=image_embeds)
      cond = jnp.tile(cond, (ns, 1))
      actions = jnp.tile(b["actions"], (ns, 1, 1))
      return m.head.predict_noise(noisy_actions=actions, timesteps=jnp.zeros((actions.shape[0],), jnp.int32),
                                  condition=cond)
    return jnp.sum(model.apply({"params": p}, method=run))

  policy = DiffusionPolicy.from_config(model, config.diffusion)
  partition = partition_of(tx)  # the step differentiates the trainable parameters only
  trainable, frozen = partition.split(params)
  grads = jax.grad(lambda t: policy.compute_loss(partition.merge(t, frozen), batch, rng, noise_samples=ns))(trainable)

  def optimizer_update(state, grads):
    trainable = partition.split(state.params)[0]
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    return jax.tree.map(lambda p, u: p + u, trainable, updates), opt_state

  step = loop.train_step_for(config, policy, tx, lr)
  whole, whole_flops = timed(step, state, batch, repeats=reps)
  parts = {
      "vision (ViT + projector)": timed(grad_of(vision_loss), params, batch["images"], repeats=reps),
      "decoder (GPT-NeoX)": timed(grad_of(language_loss), params, image_embeds, batch["tokens"], batch["token_mask"],
                                  repeats=reps),
      "action head (readout + U-Net)": timed(grad_of(head_loss), params, hidden, mask, start, image_embeds, batch,
                                                  repeats=reps),
      "optimizer (clip + AdamW)": timed(optimizer_update, state, grads, repeats=reps),
  }
  host = []
  for i, _ in zip(range(reps * 4), data.train.batches(1)):
    t0 = time.perf_counter()
    next(data.train.batches(2, start=i))
    host.append(time.perf_counter() - t0)
  parts["host (batch assembly)"] = (float(np.median(host)), 0.0)
  b = config.train.batch_size
  seq = int(hidden.shape[1])
  for name, (seconds, flops) in parts.items():
    print(json.dumps(dict(component=name, batch=b, ms=round(seconds * 1e3, 2), share_of_step=round(seconds / whole, 3),
                          gflop=round(flops / 1e9, 3), flop_share=round(flops / whole_flops, 3) if flops else 0.0,
                          decoder_sequence=seq)))
  print(json.dumps(dict(component="whole train step", batch=b, ms=round(whole * 1e3, 2), gflop=round(whole_flops / 1e9, 3),
                        gflop_per_example=round(whole_flops / b / 1e9, 3))))
  for bs in [int(x) for x in _BATCHES.value.split(",")]:
    loader = loop.load_data(config.replace(train=dataclasses.replace(config.train, batch_size=bs))).train
    bb = jax.device_put(next(loader.batches(0)))
    seconds, flops = timed(step, state, bb, repeats=reps)
    print(json.dumps(dict(step="train", batch=bs, ms=round(seconds * 1e3, 1), examples_per_s=round(bs / seconds, 1),
                          gflop_per_s=round(flops / seconds / 1e9, 1), peak_matmul_gflop_per_s=round(peak / 1e9, 1),
                          fraction_of_peak=round(flops / seconds / peak, 3))))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  cli.run(main)
