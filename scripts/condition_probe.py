"""Does the action head's condition carry where the object and the goal are? A linear probe per task.

  python scripts/condition_probe.py --workdir workdirs/mt10near --tasks push-v3,reach-v3 --seed 9000

For each task, renders the first step of --setups unseen setups (`evaluate --seed`'s), computes the
condition vector the action head reads (the checkpoint's, and the same model at a fresh initialization
with train.seed), and prints the held-out R^2 of a 5-fold ridge regression from it to each object and goal
coordinate that varies across setups (MetaWorld's privileged poses). At the first step the robot's state
is the same in every setup, so whatever the probe finds came through the image. R^2 near 1: the head can
read the position linearly; near 0 or below: it cannot. Then the first move: the median angle in the table
plane between the policy's first chunk (its mean) and the scripted expert's first action, against the
median angle of one fixed direction (the expert's mean): a policy that ignores the image is no better than
the fixed direction (tasks whose expert starts the same way in every setup, e.g. drawer-close, get no
first-move line). Needs the `sim` extra. The measurement is
tinyvla_jax/evaluation/condition_probe.py.
"""

from __future__ import annotations

from absl import app, flags

from tinyvla_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir whose latest checkpoint is probed.")
_TASKS = flags.DEFINE_string("tasks", "", "Comma-separated MetaWorld tasks (default: the checkpoint's).")
_SEED = flags.DEFINE_integer("seed", 1000, "Evaluation seed whose unseen setups are probed.")
_SETUPS = flags.DEFINE_integer("setups", 100, "Setups per task (at least 10 for the 5 folds).")
_ALPHA = flags.DEFINE_float("alpha", 1.0, "Ridge penalty per example on standardized features.")
_INIT = flags.DEFINE_bool("init", True, "Also probe the same model at a fresh initialization (train.seed).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from tinyvla_jax.errors import UserError
  if not _WORKDIR.value:
    raise UserError("pass --workdir DIR (a training workdir with a checkpoint)")
  if _SETUPS.value < 10:
    raise UserError(f"--setups={_SETUPS.value} must be >= 10 (a 5-fold probe)")
  if _ALPHA.value <= 0:
    raise UserError(f"--alpha={_ALPHA.value} must be > 0")
  import jax

  from tinyvla_jax.evaluation import condition_probe
  from tinyvla_jax.evaluation.context import check_trained_on, data_context
  from tinyvla_jax.evaluation.policies import VLAPolicy
  from tinyvla_jax.models.vla import init_params
  policy, info = VLAPolicy.from_workdir(_WORKDIR.value, seed=_SEED.value)
  context = data_context(info["assets"].get("data", {}))
  tasks = [t for t in _TASKS.value.split(",") if t] or list(context["tasks"])
  check_trained_on(tasks, context["tasks"])
  fresh = None
  if _INIT.value:
    fresh = init_params(policy.backend.model, jax.random.key(info["config"].train.seed))
  print(f"{_WORKDIR.value} step {info['step']}, camera {context['cameras'][0]}, {_SETUPS.value} unseen setups "
        f"per task (seed {_SEED.value}); held-out R^2 of a linear probe from the head's condition at the first step")
  for task in tasks:
    r2 = condition_probe.probe(policy, context, task, seed=_SEED.value, setups=_SETUPS.value, init_params=fresh,
                               alpha=_ALPHA.value)
    for name, row in r2.items():
      print(f"{task} {name:10s} " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
  cli.run(main)
