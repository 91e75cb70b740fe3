"""Train and evaluate named recipe variants on the shipped MetaWorld demos; write the ablation table.

  python scripts/metaworld_ablation.py --out reports/metaworld --runs workdirs/ablation [--only NAME,...]
      [--episodes 20] [--seed 1000]

Each variant is `python -m tinyvla_jax.train --config configs/fixed.py <overrides>` in its own workdir,
then `python -m tinyvla_jax.evaluate` of its final checkpoint (the project's protocol: unseen setups,
200-step cap, receding horizon 8/16). A variant already trained and evaluated is read back, not rerun,
so the script resumes after an interruption and `--only` adds rows one at a time. Training minutes are
the wall time of the train command (compile included), so compare them only between rows measured on
the same, otherwise idle machine. Writes <out>/ablation.md and <out>/ablation.json.

The variants (VARIANTS below) each change one thing against the final default and are read against it;
the "before" row is the recipe this project shipped before (mean pooling, bytes, batch 4, lr 1e-4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

_OUT = flags.DEFINE_string("out", "reports/metaworld", "Where ablation.md / ablation.json go.")
_RUNS = flags.DEFINE_string("runs", "workdirs/ablation", "Parent directory of the variants' workdirs.")
_ONLY = flags.DEFINE_string("only", None, "Comma-separated variant names (default: all).")
_EPISODES = flags.DEFINE_integer("episodes", 20, "Evaluation episodes per task.")
_SEED = flags.DEFINE_integer("seed", 1000, "Evaluation seed (setups and sampling noise).")

# name -> (what it changes, overrides). Each row differs from "default" in the named way only.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "default": ("configs/fixed.py as shipped", []),
    "before": ("the recipe before this change: TinyVLA mean readout, byte tokens, batch 4, lr 1e-4, no EMA, random crop",
               ["--config.model.head.readout=mean", "--config.data.tokenizer=byte", "--config.data.max_text_len=64",
                "--config.model.language.vocab_size=260", "--config.train.batch_size=4",
                "--config.optim.learning_rate=1e-4", "--config.optim.warmup_steps=0", "--config.train.ema_decay=None",
                "--config.train.ema_power=None", "--config.train.noise_samples=1", "--config.data.random_crop=true",
                "--config.model.vision.stem=patch", "--config.model.head.keypoint_source=decoder",
                "--config.model.vision.depth=4", "--config.model.language.hidden_size=256",
                "--config.model.language.num_hidden_layers=4", "--config.model.language.intermediate_size=1024",
                "--config.train.epochs=3"]),
    "mean_readout": ("TinyVLA's mean over all hidden states", ["--config.model.head.readout=mean"]),
    "random_crop": ("Diffusion Policy's random crop (64 of 72 px) at training", ["--config.data.random_crop=true"]),
    "patch_stem": ("CLIP's linear patch embedding instead of the conv stem", ["--config.model.vision.stem=patch"]),
    "decoder_keypoints": ("keypoints from the decoder's image positions", ["--config.model.head.keypoint_source=decoder"]),
    "no_ema": ("no EMA of the weights", ["--config.train.ema_decay=None", "--config.train.ema_power=None"]),
    "lr_3e-4": ("learning rate 3e-4", ["--config.optim.learning_rate=3e-4"]),
    "one_noise_sample": ("one noise sample per example", ["--config.train.noise_samples=1"]),
    "bigger_backbones": ("ViT 4 layers, decoder 4 layers (the sizes before), same recipe",
                         ["--config.model.vision.depth=4", "--config.model.language.num_hidden_layers=4"]),
    "obs_steps_2": ("two observation steps (Diffusion Policy's n_obs_steps)", ["--config.model.obs_steps=2"]),
}


def _run(cmd: list[str], log: str) -> float:
  t0 = time.perf_counter()
  with open(log, "w") as f:
    subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)
  return time.perf_counter() - t0


def run_variant(name: str, overrides: list[str]) -> dict:
  workdir = os.path.join(_RUNS.value, name)
  os.makedirs(workdir, exist_ok=True)
  done = os.path.join(workdir, "ablation_row.json")
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  py = sys.executable
  train_s = _run([py, "-m", "tinyvla_jax.train", "--config", "configs/fixed.py", "--workdir", workdir,
                  "--config.eval.at_end=false", *overrides], os.path.join(workdir, "train.log"))
  out = os.path.join(workdir, f"eval-seed{_SEED.value}")
  _run([py, "-m", "tinyvla_jax.evaluate", "--workdir", workdir, "--episodes", str(_EPISODES.value), "--seed",
        str(_SEED.value), "--out", out, "--video=false", "--progress=false"], os.path.join(workdir, "eval.log"))
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    epochs = [r for r in map(json.loads, f) if r.get("split") == "epoch"]
  row = dict(name=name, overrides=overrides, train_minutes=round(train_s / 60, 1), last_epoch=epochs[-1] if epochs else {},
             success={t: [r["successes"], r["episodes"]] for t, r in summary["tasks"].items()},
             mean_success=summary["mean_success_rate"], mean_ci95=summary["mean_ci95"])
  with open(done, "w") as f:
    json.dump(row, f, indent=1)
  return row


def table(rows: list[dict]) -> str:
  tasks = list(rows[0]["success"])
  short = [t.removesuffix("-v3") for t in tasks]
  lines = ["| variant | what changes | " + " | ".join(short) + " | mean [95% CI] | train min | val loss | "
           "sens. images / state / instr. |", "|---" * (len(tasks) + 6) + "|"]
  for r in rows:
    e = r["last_epoch"]
    sens = " / ".join(f"{e.get('sensitivity/' + k, float('nan')):.3f}" for k in ("images", "state", "instruction"))
    cells = [f"{s}/{n}" for s, n in (r["success"][t] for t in tasks)]
    lo, hi = r["mean_ci95"]
    lines.append(f"| {r['name']} | {VARIANTS[r['name']][0]} | " + " | ".join(cells)
                 + f" | {r['mean_success']:.0%} [{lo:.0%}-{hi:.0%}] | {r['train_minutes']} | "
                 f"{e.get('val_loss', float('nan')):.4f} | {sens} |")
  return "\n".join(lines)


def main(argv):
  del argv
  names = _ONLY.value.split(",") if _ONLY.value else list(VARIANTS)
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise app.UsageError(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS)}")
  rows = []
  for name in names:
    rows.append(run_variant(name, VARIANTS[name][1]))
    print(f"{name}: {rows[-1]['mean_success']:.0%} in {rows[-1]['train_minutes']} min", flush=True)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "ablation.json"), "w") as f:
    json.dump(rows, f, indent=1)
  text = table(rows)
  with open(os.path.join(_OUT.value, "ablation.md"), "w") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)
