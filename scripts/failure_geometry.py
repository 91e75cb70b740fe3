"""Where a policy's reach / push / pick-place episodes go wrong, in metres (MetaWorld's privileged poses).

  python scripts/failure_geometry.py --workdir workdirs/mt10near --seed 10000
  python scripts/failure_geometry.py --workdir workdirs/mt10near --setups demos   # the demos' own setups

Re-runs the protocol's rollouts (`evaluate`'s setups and sampling noise for --seed, receding horizon) and
records the hand, object and goal every step. Per task it prints the success count and, over the failed
episodes, medians of:
  reach:            the hand's closest approach to the goal, split along the camera's ray through the goal
                    (depth, which one view cannot see directly) and across it (what the image shows);
  push, pick-place: the hand's closest approach to the object, how far the object moved and was lifted,
                    and the object's distance to the goal at the start and at the end.
`--setups demos` runs the setups the checkpoint's demos were recorded on (training and validation split):
success there and not on unseen setups means the policy fits its demos but does not interpolate between
them. Needs the `sim` extra. The measurements are tinyvla_jax/evaluation/failure_geometry.py.
"""

from __future__ import annotations

from absl import app, flags

from tinyvla_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir whose latest checkpoint is rolled out.")
_SEED = flags.DEFINE_integer("seed", 1000, "Evaluation seed (the setups and noise of `evaluate --seed`).")
_TASKS = flags.DEFINE_string("tasks", "", "Comma-separated tasks of reach-v3, push-v3, pick-place-v3 (default: those of "
                             "the three the checkpoint was trained on).")
_EPISODES = flags.DEFINE_integer("episodes", 20, "Episodes per task.")
_SETUPS = flags.DEFINE_enum("setups", "unseen", ["unseen", "demos"], "Unseen setups (evaluate's) or the demos'.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 200, "Step cap of an episode (the protocol's 200).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from tinyvla_jax.errors import UserError
  from tinyvla_jax.evaluation import failure_geometry as fg
  if not _WORKDIR.value:
    raise UserError("pass --workdir DIR (a training workdir with a checkpoint)")
  requested = [t for t in _TASKS.value.split(",") if t]
  fg.tasks_to_measure(requested, trained=None)  # an unsupported --tasks fails before the checkpoint loads
  from tinyvla_jax.evaluation.context import data_context
  from tinyvla_jax.evaluation.policies import VLAPolicy
  policy, info = VLAPolicy.from_workdir(_WORKDIR.value, seed=_SEED.value)
  context = data_context(info["assets"].get("data", {}))
  tasks = fg.tasks_to_measure(requested, trained=context["tasks"])
  print(f"{_WORKDIR.value} step {info['step']}, camera {context['cameras'][0]}, {_SETUPS.value} setups, "
        f"seed {_SEED.value}")
  for task in tasks:
    eps = fg.episodes_for(policy, context, task, seed=_SEED.value, episodes=_EPISODES.value, setups=_SETUPS.value,
                          max_steps=_MAX_STEPS.value)
    print(fg.describe(task, eps), flush=True)


if __name__ == "__main__":
  cli.run(main)
