"""Our action head against LeRobot's PyTorch U-Net: train step and DDIM action chunk, same weights, one run.

  python scripts/benchmark_peer.py [--batches 4,64] [--ddim_steps 10] [--repeats 7] [--threads 2]
                                   [--conv_impl auto] [--inference_dtype float32|bfloat16] [--no_peer]

The network is Diffusion Policy's paper-size ConditionalUnet1D (down dims 256/512/1024, step embedding 128,
kernel 5, 8 groups, FiLM scale, horizon 16, action dim 4, global condition 512: 70.3M parameters). Our
weights are copied into LeRobot's `DiffusionConditionalUnet1d` (tinyvla_jax/pretrained/lerobot_unet.py);
the outputs are compared before anything is timed. Both sides train with the same optimizer: clip by
global norm 1.0, then AdamW (lr 1e-4 cosine, betas 0.9/0.95, eps 1e-8, weight decay 0.01), on the
epsilon-prediction loss at random timesteps. Sampling is DDIM with the squaredcos schedule (100 train
steps), LeRobot's way: diffusers' DDIMScheduler in a Python loop under torch.inference_mode; ours one
jitted lax.scan. Each side runs in its own worker process (two libraries' allocators and thread pools in
one process slow each other: measured 2.6x on ours right after a torch step, even after a 2 s pause); the
workers are driven in turn, one call at a time (ours, LeRobot's, ours, ...), so both see the same machine
load, and each figure is the median of `--repeats` calls. Both workers get the same environment,
including the huge-page malloc setting our CLIs use (tinyvla_jax/huge_pages.py). Compile time is
measured apart (a cold `lower().compile()`).

LeRobot needs torch, diffusers and lerobot in the same environment (README, "Performance"); without
them (or with --no_peer) only our figures are printed. Output: one JSON line per figure, then a summary
line with the ratios (LeRobot time / our time: > 1 means ours is faster) and, for our figures, the
fraction of the machine's measured memory bandwidth and matmul rate they reach (tinyvla_jax/roofline.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinyvla_jax import huge_pages, roofline
from tinyvla_jax.diffusion.samplers import ddim_sample_from
from tinyvla_jax.diffusion.schedule import make_schedule
from tinyvla_jax.models.action_head import ConditionalUnet1D
from tinyvla_jax.models.config import ActionHeadConfig
from tinyvla_jax.pretrained import lerobot_unet
from tinyvla_jax.run_config import OptimConfig
from tinyvla_jax.training.optimizer import make_optimizer

PAPER = dict(action_dim=4, horizon=16, down_dims=(256, 512, 1024), kernel_size=5, n_groups=8, step_embed_dim=128,
             cond_predict_scale=True)
COND_DIM = 512
TRAIN_STEPS = 100  # diffusion steps of the noise schedule
TOTAL_STEPS = 10_000  # optimizer steps the cosine schedule spans (its value does not change the cost)


def emit(**fields):
  print(json.dumps(fields), flush=True)


def inputs(batch: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  return dict(actions=rng.standard_normal((batch, PAPER["horizon"], PAPER["action_dim"]), np.float32).clip(-1, 1),
              noise=rng.standard_normal((batch, PAPER["horizon"], PAPER["action_dim"]), np.float32),
              timesteps=rng.integers(0, TRAIN_STEPS, (batch,)).astype(np.int32),
              cond=rng.standard_normal((batch, COND_DIM), np.float32))


class Ours:
  """Our U-Net, our optimizer chain (training/optimizer.py), jitted and donated as the trainer does."""

  def __init__(self, conv_impl: str, inference_dtype: str):
    self.unet = ConditionalUnet1D(ActionHeadConfig(**PAPER, conv_impl=conv_impl))
    self.infer_unet = ConditionalUnet1D(ActionHeadConfig(**PAPER, conv_impl=conv_impl), dtype=jnp.dtype(inference_dtype))
    example = inputs(1)
    self.params = jax.jit(self.unet.init)(jax.random.key(0), example["actions"], example["timesteps"], example["cond"])
    self.schedule = make_schedule(num_train_steps=TRAIN_STEPS)
    self.tx, _ = make_optimizer(OptimConfig(), total_steps=TOTAL_STEPS, params={"head": self.params})
    abar = self.schedule.alphas_cumprod

    def loss_fn(params, batch):
      a = abar[batch["timesteps"]][:, None, None]
      noisy = jnp.sqrt(a) * batch["actions"] + jnp.sqrt(1 - a) * batch["noise"]
      pred = self.unet.apply(params["head"], noisy, batch["timesteps"], batch["cond"])
      return jnp.mean((pred - batch["noise"]) ** 2)

    def train_step(params, opt_state, batch):
      loss, grads = jax.value_and_grad(loss_fn)(params, batch)
      updates, opt_state = self.tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
    self.opt_state = self.tx.init({"head": self.params})
    self.train_params = jax.tree.map(jnp.copy, {"head": self.params})

  def sampler(self, num_steps: int):
    unet, schedule = self.infer_unet, self.schedule

    @jax.jit
    def sample(params, x_T, cond):  # params already in the inference dtype (sample_cost casts them once)
      return ddim_sample_from(lambda x, t: unet.apply(params, x, t, cond), x_T=x_T, schedule=schedule,
                              num_inference_steps=num_steps)
    return sample

  def step(self, batch):
    self.train_params, self.opt_state, loss = self.train_step(self.train_params, self.opt_state, batch)
    return loss

  # The worker's commands (see `serve`): each returns plain Python / numpy values.
  def setup(self, weights_path: str, batches: list[int], ddim_steps: int) -> dict:
    np.savez(weights_path, **lerobot_unet.to_lerobot(jax.device_get(self.params)))
    self.limits = roofline.measure_limits()
    self.batches = {b: jax.device_put(inputs(b)) for b in batches}
    self.ddim_steps, self.sample = ddim_steps, self.sampler(ddim_steps)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(self.params))
    return dict(params_m=round(n_params / 1e6, 2), backend=jax.default_backend(), device=str(jax.devices()[0]),
                **{k: round(v, 1) for k, v in self.limits.items()})

  def forward(self, x, t, cond):
    return np.asarray(self.unet.apply(self.params, x, t, cond))

  def train_cost(self, batch: int) -> dict:
    seconds, compiled = compile_seconds(self.train_step, self.train_params, self.opt_state, self.batches[batch])
    return dict(compile_s=seconds, **roofline.cost(compiled))

  def train_time(self, batch: int) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(self.step(self.batches[batch]))
    return time.perf_counter() - t0

  def sample_cost(self, x_T, cond) -> dict:
    weights = jax.tree.map(lambda p: p.astype(self.infer_unet.dtype), self.params)  # what a server would hold
    self.weights = weights
    seconds, _ = compile_seconds(self.sample, weights, x_T, cond)
    # XLA's cost analysis counts a scan's body once: the chunk costs `ddim_steps` denoiser calls.
    _, one_call = compile_seconds(jax.jit(self.infer_unet.apply), weights, x_T, np.zeros(len(x_T), np.int32), cond)
    return dict(compile_s=seconds, **{k: v * self.ddim_steps for k, v in roofline.cost(one_call).items()})

  def sample_actions(self, x_T, cond):
    return np.asarray(self.sample(self.weights, x_T, cond))

  def sample_time(self, x_T, cond) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(self.sample(self.weights, x_T, cond))
    return time.perf_counter() - t0


class LeRobots:
  """LeRobot's DiffusionConditionalUnet1d with our weights, trained and sampled as LeRobot does."""

  def __init__(self, weights_path: str, threads: int):
    import torch
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionConditionalUnet1d

    torch.set_num_threads(threads)
    self.torch = torch
    # The module reads only these config fields; a full DiffusionConfig would also need dataset features.
    config = types.SimpleNamespace(
        action_feature=types.SimpleNamespace(shape=(PAPER["action_dim"],)), down_dims=PAPER["down_dims"],
        kernel_size=PAPER["kernel_size"], n_groups=PAPER["n_groups"],
        diffusion_step_embed_dim=PAPER["step_embed_dim"], use_film_scale_modulation=PAPER["cond_predict_scale"])
    with np.load(weights_path) as saved:
      state = {k: torch.from_numpy(saved[k]) for k in saved.files}
    # Two copies, as on our side: one trains, the other (the initial weights) samples.
    self.unet, self.sample_unet = (DiffusionConditionalUnet1d(config, global_cond_dim=COND_DIM) for _ in range(2))
    for unet in (self.unet, self.sample_unet):
      unet.load_state_dict(state, strict=True)
    self.scheduler = DDIMScheduler(num_train_timesteps=TRAIN_STEPS, beta_schedule="squaredcos_cap_v2",
                                   clip_sample=True, clip_sample_range=1.0, prediction_type="epsilon")
    self.abar = torch.from_numpy(np.array(make_schedule(num_train_steps=TRAIN_STEPS).alphas_cumprod))
    self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    self.lr = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=TOTAL_STEPS)

  def forward(self, x, t, cond):
    with self.torch.inference_mode():
      return self.sample_unet(*(self.torch.from_numpy(np.asarray(v)) for v in (x, t, cond))).numpy()

  def step(self, batch):
    torch = self.torch
    b = {k: torch.from_numpy(v) for k, v in batch.items()}
    a = self.abar[b["timesteps"].long()][:, None, None]
    noisy = a.sqrt() * b["actions"] + (1 - a).sqrt() * b["noise"]
    loss = torch.nn.functional.mse_loss(self.unet(noisy, b["timesteps"], b["cond"]), b["noise"])
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
    self.optimizer.step()
    self.lr.step()
    return loss.item()

  def setup(self, batches: list[int], ddim_steps: int) -> dict:
    self.batches = {b: inputs(b) for b in batches}
    self.ddim_steps = ddim_steps
    return dict(torch=self.torch.__version__, threads=self.torch.get_num_threads())

  def train_time(self, batch: int) -> float:
    t0 = time.perf_counter()
    self.step(self.batches[batch])
    return time.perf_counter() - t0

  def sample_actions(self, x_T, cond):
    return self.sample(x_T, cond, self.ddim_steps)

  def sample_time(self, x_T, cond) -> float:
    t0 = time.perf_counter()
    self.sample(x_T, cond, self.ddim_steps)
    return time.perf_counter() - t0

  def sample(self, x_T, cond, num_steps: int):
    torch = self.torch
    self.scheduler.set_timesteps(num_steps)
    x, cond = torch.from_numpy(np.asarray(x_T)), torch.from_numpy(np.asarray(cond))
    with torch.inference_mode():
      for t in self.scheduler.timesteps:
        eps = self.sample_unet(x, torch.full((x.shape[0],), int(t), dtype=torch.long), cond)
        x = self.scheduler.step(eps, t, x).prev_sample
    return x.numpy()


def compile_seconds(jitted, *args) -> tuple[float, object]:
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return time.perf_counter() - t0, compiled


def serve(connection, side: str, args: dict) -> None:
  """A worker process: builds its side, then runs the commands it receives, one at a time."""
  try:
    if side == "ours":
      impl = Ours(args["conv_impl"], args["inference_dtype"])
    else:
      impl = LeRobots(args["weights_path"], args["threads"])
    connection.send(("ok", None))
  except ImportError as error:
    connection.send(("missing", str(error)))
    return
  while True:
    command, kwargs = connection.recv()
    if command == "stop":
      return
    connection.send(("ok", getattr(impl, command)(**kwargs)))


class Worker:
  def __init__(self, side: str, **args):
    self.connection, theirs = multiprocessing.get_context("spawn").Pipe()
    self.process = multiprocessing.get_context("spawn").Process(target=serve, args=(theirs, side, args), daemon=True)
    self.process.start()
    self.status, self.detail = self.connection.recv()

  def __call__(self, command: str, **kwargs):
    self.connection.send((command, kwargs))
    status, value = self.connection.recv()
    return value

  def stop(self):
    self.connection.send(("stop", {}))
    self.process.join()


def alternate(workers: dict, command: str, repeats: int, block: int, **kwargs) -> dict:
  """Median seconds of `command` on each worker. The workers take turns in blocks (ours `block` + 1 calls,
  LeRobot's `block` + 1 calls, ours ...) until each has `repeats` timed calls; only one runs at a time, so
  both see the same machine load. The first call of each block is not timed: right after the other side
  ran, a step was up to 2x slower (both sides; the other process's freed memory, caches and thread pools),
  which is a cost of taking turns, not of either implementation."""
  times = {name: [] for name in workers}
  while min(len(ts) for ts in times.values()) < repeats:
    for name, worker in workers.items():
      worker(command, **kwargs)  # after a switch (and the first time: warm-up, compile for ours)
      times[name] += [worker(command, **kwargs) for _ in range(block)]
  return {name: statistics.median(ts) for name, ts in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="4,64", help="train-step batch sizes, comma-separated")
  parser.add_argument("--ddim_steps", type=int, default=10)
  parser.add_argument("--sample_batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=9, help="timed calls per figure and side")
  parser.add_argument("--block", type=int, default=3, help="timed calls per turn (see `alternate`)")
  parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
  parser.add_argument("--conv_impl", default="auto", help="model.head.conv_impl for ours")
  parser.add_argument("--inference_dtype", default="float32", choices=("float32", "bfloat16"),
                      help="dtype our sampler computes and stores the weights in")
  parser.add_argument("--no_peer", action="store_true", help="our figures only")
  args = parser.parse_args()
  huge_pages.restart_with_huge_pages()  # as our CLIs do; the workers inherit the environment (both sides)
  batches = [int(b) for b in args.batches.split(",")]

  with tempfile.TemporaryDirectory() as tmp:
    weights_path = os.path.join(tmp, "unet.npz")
    ours = Worker("ours", conv_impl=args.conv_impl, inference_dtype=args.inference_dtype)
    setup = ours("setup", weights_path=weights_path, batches=batches, ddim_steps=args.ddim_steps)
    limits = {k: setup[k] for k in ("memory_gb_per_s", "matmul_gflop_per_s")}
    workers = {"ours": ours}
    if not args.no_peer:
      peer = Worker("lerobot", weights_path=weights_path, threads=args.threads)
      if peer.status == "ok":
        setup.update(peer("setup", batches=batches, ddim_steps=args.ddim_steps))
        workers["lerobot"] = peer
      else:
        emit(what="peer", skipped=f"LeRobot's U-Net is not importable here ({peer.detail}); ours only")
    emit(what="setup", conv_impl=args.conv_impl, inference_dtype=args.inference_dtype,
         glibc_tunables=os.environ.get("GLIBC_TUNABLES"), **setup)
    with_peer = "lerobot" in workers

    summary = {}
    if with_peer:
      probe = inputs(4, seed=1)
      args_ = dict(x=probe["actions"], t=probe["timesteps"], cond=probe["cond"])
      mine, theirs = ours("forward", **args_), workers["lerobot"]("forward", **args_)
      summary["forward_max_abs_diff"] = float(np.max(np.abs(mine - theirs)))
      emit(what="parity", forward_max_abs_diff=summary["forward_max_abs_diff"], output_scale=float(np.std(theirs)))

    for batch_size in batches:
      program = ours("train_cost", batch=batch_size)
      medians = alternate(workers, "train_time", args.repeats, args.block, batch=batch_size)
      row = dict(what="train_step", batch=batch_size, ours_ms=round(medians["ours"] * 1e3, 1),
                 compile_s=round(program["compile_s"], 1), **roofline.fractions(medians["ours"], program, limits))
      if with_peer:
        row.update(lerobot_ms=round(medians["lerobot"] * 1e3, 1), speedup=round(medians["lerobot"] / medians["ours"], 2))
      emit(**row)
      summary[f"train_b{batch_size}"] = row

    probe = inputs(args.sample_batch, seed=2)
    x_T = np.random.default_rng(3).standard_normal(probe["actions"].shape).astype(np.float32)
    program = ours("sample_cost", x_T=x_T, cond=probe["cond"])
    medians = alternate(workers, "sample_time", args.repeats, args.block, x_T=x_T, cond=probe["cond"])
    row = dict(what="ddim_chunk", batch=args.sample_batch, steps=args.ddim_steps, ours_ms=round(medians["ours"] * 1e3, 1),
               compile_s=round(program["compile_s"], 1), **roofline.fractions(medians["ours"], program, limits))
    if with_peer:
      mine = ours("sample_actions", x_T=x_T, cond=probe["cond"])
      reference = workers["lerobot"]("sample_actions", x_T=x_T, cond=probe["cond"])
      row.update(lerobot_ms=round(medians["lerobot"] * 1e3, 1), speedup=round(medians["lerobot"] / medians["ours"], 2),
                 actions_max_abs_diff=float(np.max(np.abs(mine - reference))))
    emit(**row)
    summary["ddim"] = row
    key = "speedup" if with_peer else "ours_ms"
    emit(what="summary", **{k: (v[key] if isinstance(v, dict) else v) for k, v in summary.items()})
    for worker in workers.values():
      worker.stop()


if __name__ == "__main__":
  main()
