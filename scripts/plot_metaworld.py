"""Closed-loop success against training time, from runs that evaluated during training.

  pip install -e '.[plots]'
  python scripts/plot_metaworld.py --runs workdirs/long,workdirs/fixed --out reports/metaworld/success_vs_time.png

Reads each workdir's metrics.jsonl: the `eval` records (success rates written by `eval.every_epochs`,
with the protocol of `python -m tinyvla_jax.evaluate`) and the `epoch` records (the seconds each epoch
trained, validation excluded, so evaluation time never counts as training time). A run's final
evaluation from `--extra NAME=WORKDIR/eval/.../summary.json` can be added as a point at its last step.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

_RUNS = flags.DEFINE_string("runs", None, "Comma-separated workdirs (label = folder name, or LABEL=DIR).")
_OUT = flags.DEFINE_string("out", "reports/metaworld/success_vs_time.png", "PNG to write.")
_EXTRA = flags.DEFINE_string("extra", "", "Comma-separated LABEL=summary.json points (a final evaluation).")


def curve(workdir: str) -> tuple[list[float], list[float], dict]:
  """(training minutes, mean success) at each evaluation of a run, and the per-task rates at the last."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
  minutes_at_step, total = {}, 0.0
  for r in records:
    if r.get("split") == "epoch":
      total += r["seconds"] / 60
      minutes_at_step[r["step"]] = total
  xs, ys, last = [], [], {}
  for r in records:
    if r.get("split") == "eval" and r["step"] in minutes_at_step:
      xs.append(minutes_at_step[r["step"]])
      ys.append(r["success/mean"])
      last = {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("success/") and k != "success/mean"}
  return xs, ys, last


def main(argv):
  del argv
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.2))
  for spec in _RUNS.value.split(","):
    label, _, path = spec.partition("=") if "=" in spec else (os.path.basename(spec.rstrip("/")), "", spec)
    xs, ys, _ = curve(path)
    ax.plot(xs, [100 * y for y in ys], marker="o", label=label)
  for spec in filter(None, _EXTRA.value.split(",")):
    label, _, path = spec.partition("=")
    with open(path) as f:
      s = json.load(f)
    lo, hi = s["mean_ci95"]
    minutes = float(label.split("@")[1]) if "@" in label else 0.0
    ax.errorbar([minutes], [100 * s["mean_success_rate"]], yerr=[[100 * (s["mean_success_rate"] - lo)],
                [100 * (hi - s["mean_success_rate"])]], fmt="s", capsize=4, label=label.split("@")[0])
  ax.axhline(80, color="gray", lw=0.8, ls="--")
  ax.axhline(95, color="gray", lw=0.8, ls=":")
  ax.set_xlabel("training minutes (2-core CPU; evaluation time excluded)")
  ax.set_ylabel("closed-loop success, mean over tasks (%)")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  fig.savefig(_OUT.value, dpi=120)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  flags.mark_flag_as_required("runs")
  app.run(main)
