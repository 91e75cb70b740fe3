"""Closed-loop evaluation in MetaWorld: `python -m tinyvla_jax.evaluate --workdir DIR`.

  python -m tinyvla_jax.evaluate --workdir workdirs/cpu                       # the trained policy
  python -m tinyvla_jax.evaluate --workdir workdirs/cpu --execution ensemble  # TinyVLA's temporal ensembling
  python -m tinyvla_jax.evaluate --policy expert --episodes 20                # the harness's ceiling ...
  python -m tinyvla_jax.evaluate --policy random --episodes 20                # ... and its floor
  python -m tinyvla_jax.evaluate --policy remote --server ws://127.0.0.1:8000 --workdir workdirs/cpu
                                  # through a policy server (python -m tinyvla_jax.serve): same outcomes

Tasks, cameras, image size, instructions and the setups to avoid come from the checkpoint (the data
it was trained on); without --workdir, from --data (default: the shipped dataset). The defaults are the
project's protocol (evaluation/protocol.py: 20 unseen setups per task, 200-step cap, receding horizon
8 of 16), the same the training run uses for its own evaluations. Writes summary.json (success rates
with 95% Wilson intervals) and one GIF per task under --out (default
<workdir>/eval/<policy>-step<N>-<execution>-seed<S>).
Needs the `sim` extra and a GL library (Debian: libosmesa6).
"""

from __future__ import annotations

from tinyvla_jax import huge_pages

if __name__ == "__main__":
  # Before the imports below (a second of JAX, Flax, Orbax): the restart would pay for them twice.
  huge_pages.restart_with_huge_pages()

import os

from absl import flags

from tinyvla_jax import cli
from tinyvla_jax.errors import UserError
from tinyvla_jax.evaluation import policies, rollout
from tinyvla_jax.evaluation import protocol as protocol_lib
from tinyvla_jax.evaluation.context import data_context, dataset_context

_DEFAULT = protocol_lib.DEFAULT
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir whose checkpoint is evaluated.")
_POLICY = flags.DEFINE_enum("policy", "vla", ["vla", "remote", "expert", "random"],
                            "Which policy acts: a workdir's checkpoint, a policy server's (--server), or a baseline.")
_SERVER = flags.DEFINE_string("server", None, "--policy remote: the server's URL, e.g. ws://127.0.0.1:8000.")
_API_KEY = flags.DEFINE_string("api_key", None, "--policy remote: the server's API key, if it has one.")
_SERVER_WAIT = flags.DEFINE_float("server_wait_s", 60.0, "--policy remote: how long to wait for a server that is "
                                  "still starting.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest readable).")
_TASKS = flags.DEFINE_string("tasks", None, "Comma-separated tasks (default: those of the training data).")
_EPISODES = flags.DEFINE_integer("episodes", _DEFAULT.episodes, "Rollouts per task, each on an unseen setup.")
_SEED = flags.DEFINE_integer("seed", _DEFAULT.seed, "Seed of the evaluation setups and the policy's sampling "
                             "noise (collection uses 0).")
_EXECUTION = flags.DEFINE_enum("execution", _DEFAULT.execution, ["receding", "ensemble"],
                               "Receding horizon (Diffusion Policy) or temporal ensembling (ACT/TinyVLA).")
_ACTION_STEPS = flags.DEFINE_integer("action_steps", _DEFAULT.action_steps, "Receding horizon: actions executed per chunk.")
_ENSEMBLE_K = flags.DEFINE_float("ensemble_k", _DEFAULT.ensemble_k, "Temporal ensembling: weights exp(-k i), i=0 oldest.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", _DEFAULT.max_steps, "Step limit per episode (MetaWorld's own is 500; "
                                  "3D Diffusion Policy's protocol 200).")
_DATA = flags.DEFINE_string("data", None, "Dataset whose tasks/cameras/setups apply without --workdir "
                            "(default: the shipped one; --policy remote: pass the served run's --workdir to "
                            "get its exact setups).")
_OUT = flags.DEFINE_string("out", None, "Output directory for summary.json and videos.")
_VIDEO = flags.DEFINE_bool("video", True, "Write one GIF per task (its first episode).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  protocol = protocol_lib.Protocol(episodes=_EPISODES.value, seed=_SEED.value, max_steps=_MAX_STEPS.value,
                                   execution=_EXECUTION.value, action_steps=_ACTION_STEPS.value,
                                   ensemble_k=_ENSEMBLE_K.value)
  tasks = _TASKS.value.split(",") if _TASKS.value else None
  if _POLICY.value == "vla":
    if not _WORKDIR.value:
      raise UserError("pass --workdir DIR (a training workdir), or --policy expert|random")
    summary, out = protocol_lib.evaluate_checkpoint(_WORKDIR.value, step=_STEP.value, tasks=tasks, protocol=protocol,
                                                    out=_OUT.value, video=_VIDEO.value, progress=_PROGRESS.value)
  elif _POLICY.value == "remote":
    summary, out = _remote(tasks, protocol)
  else:
    summary, out = _baseline(_POLICY.value, tasks, protocol)
  print(rollout.format_table({summary["policy"]: summary}))
  print(f"summary: {os.path.join(out, 'summary.json')} ({summary['wall_s']} s)")


def _context() -> dict:
  """A dataset's tasks and setups, or exactly a checkpoint's (with --workdir)."""
  if not _WORKDIR.value:
    return dataset_context(_DATA.value)
  from tinyvla_jax.checkpoints import Checkpointer
  with Checkpointer(_WORKDIR.value) as checkpointer:
    return data_context(checkpointer.restore_json(_STEP.value)[0].get("data", {}))


def _remote(tasks, protocol) -> tuple[dict, str]:
  """The policy a server serves, on the setups of --workdir's checkpoint (or of --data)."""
  if not _SERVER.value:
    raise UserError("--policy remote needs --server ws://HOST:PORT (python -m tinyvla_jax.serve --workdir W)")
  policy = policies.VLAPolicy.remote(_SERVER.value, seed=protocol.seed, api_key=_API_KEY.value,
                                     connect_timeout_s=_SERVER_WAIT.value)
  protocol_lib.check_action_steps(protocol, policy.horizon)
  step = policy.backend.metadata.get("step")
  name = protocol_lib.run_name("remote", step, protocol)
  out = _OUT.value or os.path.join(os.path.join(_WORKDIR.value, "eval") if _WORKDIR.value else "eval", name)
  summary = protocol_lib.run(policy, _context(), protocol=protocol, tasks=tasks, out_dir=out, video=_VIDEO.value,
                             progress=_PROGRESS.value, label=name,
                             meta=dict(workdir=_WORKDIR.value, step=step, server=_SERVER.value))
  return summary, out


def _baseline(policy_name: str, tasks, protocol) -> tuple[dict, str]:
  """The expert or the random policy, on a dataset's tasks, or on exactly a checkpoint's setups."""
  context = _context()
  policy = policies.ExpertPolicy() if policy_name == "expert" else policies.RandomPolicy(seed=protocol.seed)
  name = protocol_lib.run_name(policy_name, None, protocol)
  out = _OUT.value or os.path.join(os.path.join(_WORKDIR.value, "eval") if _WORKDIR.value else "eval", name)
  summary = protocol_lib.run(policy, context, protocol=protocol, tasks=tasks, out_dir=out, video=_VIDEO.value,
                             progress=_PROGRESS.value, label=name, meta=dict(workdir=_WORKDIR.value, step=None))
  return summary, out


if __name__ == "__main__":
  cli.run(main)
