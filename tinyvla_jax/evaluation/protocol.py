"""The closed-loop evaluation protocol, in one place: the `evaluate` CLI's defaults, the training run's
periodic evaluation (`eval.every_epochs`) and its closing evaluation (`eval.at_end`) all read it.

    episodes 20 per task, each on an unseen setup (the data's setup seeds are skipped), seed 1000,
    200 environment steps at most (3D Diffusion Policy's MetaWorld protocol), receding horizon with 4
    predicted actions executed per chunk (all of the `cpu` preset's chunk of 4; 4 of the paper presets' 16).

Why 4 and not Diffusion Policy's 8: replanning twice as often lets the policy correct a slip at the
handle or the button before it turns into a stuck episode. Measured on a horizon-16 checkpoint, the same
80 setups (seed 1000): 8 executed -> 77%, 4 -> 84% (temporal ensembling, a new chunk every step: 79%, at
4x the policy calls of 4). With the `cpu` preset's chunk of 4: all 4 -> 85%, 3 (3D Diffusion Policy's
n_action_steps) -> 82%. reports/metaworld has the confirmations on other seeds.

The protocol's numbers are run_config.Protocol (the `eval` section of a run config holds the same fields).
`evaluate_checkpoint` is what `python -m tinyvla_jax.evaluate --workdir W` and the end of
`python -m tinyvla_jax.train` run: a checkpoint's policy on the tasks of its training data.
"""

from __future__ import annotations

import os

from tinyvla_jax.errors import UserError
from tinyvla_jax.run_config import Protocol, RunConfig


DEFAULT = Protocol()


def run_name(policy: str, step: int | None, protocol: Protocol) -> str:
  """The folder name of one evaluation under <workdir>/eval/ (it names what differs between runs)."""
  execution = protocol.execution + (str(protocol.action_steps) if protocol.execution == "receding" else "")
  return f"{policy}{'' if step is None else f'-step{step}'}-{execution}-seed{protocol.seed}"


def evaluate_checkpoint(workdir: str, *, step: int | None = None, tasks=None, protocol: Protocol = DEFAULT,
                        out: str | None = None, video: bool = True, progress: bool = True) -> tuple[dict, str]:
  """Closed-loop rollouts of a workdir's checkpoint (its latest readable step by default) on the
  protocol's unseen setups. Returns (summary, output directory with summary.json and GIFs)."""
  from tinyvla_jax.evaluation.context import data_context
  from tinyvla_jax.evaluation.policies import VLAPolicy

  policy, info = VLAPolicy.from_workdir(workdir, step=step, seed=protocol.seed)
  check_action_steps(protocol, policy.horizon)
  context = data_context(info["assets"].get("data", {}))
  name = run_name("vla", info["step"], protocol)
  out = out or os.path.join(workdir, "eval", name)
  summary = run(policy, context, protocol=protocol, tasks=tasks, out_dir=out, video=video, progress=progress,
                label=name, meta=dict(workdir=workdir, step=info["step"]))
  return summary, out


def check_action_steps(protocol: Protocol, horizon: int) -> None:
  if protocol.execution == "receding" and protocol.action_steps > horizon:
    raise UserError(f"--action_steps={protocol.action_steps} exceeds the policy's chunk of {horizon} actions "
                    f"(model.head.horizon): pass --action_steps {horizon} or fewer")


def run(policy, context: dict, *, protocol: Protocol, tasks=None, out_dir: str | None, video: bool, progress: bool,
        label: str, meta: dict | None = None) -> dict:
  """The protocol's rollouts of any policy on the setups a dataset context allows (its tasks by default)."""
  from tinyvla_jax.evaluation import rollout
  return rollout.evaluate(
      policy, tasks=tasks or context["tasks"], episodes=protocol.episodes, seed=protocol.seed,
      cameras=context["cameras"], image_size=context["image_size"], instructions=context["instructions"],
      exclude_seeds=context["exclude_seeds"], execution=protocol.execution, action_steps=protocol.action_steps,
      ensemble_k=protocol.ensemble_k, max_steps=protocol.max_steps, out_dir=out_dir, video=video, progress=progress,
      label=label, meta=meta)


def evaluate_at_end(config: RunConfig, workdir: str) -> None:
  """The training run's closing closed-loop evaluation of its final checkpoint (`eval.at_end`), with this
  protocol; it prints the table, or a note saying why it cannot run here (no simulator for the data, or
  MetaWorld not installed) and the command to run later."""
  from tinyvla_jax.evaluation import rollout
  how = f"python -m tinyvla_jax.evaluate --workdir {workdir}"
  if config.data.source != "metaworld":
    print(f"closed-loop evaluation skipped: data.source={config.data.source!r} has no simulator")
    return
  try:
    from tinyvla_jax.sim.metaworld import require_metaworld
    require_metaworld()
  except ImportError as error:
    print(f"closed-loop evaluation skipped ({error}); afterwards: {how}")
    return
  ev = config.eval
  print(f"closed-loop evaluation of the final checkpoint ({how}; --config.eval.at_end=false skips it):")
  summary, out = evaluate_checkpoint(workdir, tasks=ev.task_list, protocol=ev.protocol, video=ev.video)
  print(rollout.format_table({summary["policy"]: summary}))
  print(f"summary: {out}/summary.json ({summary['wall_s']} s)")
