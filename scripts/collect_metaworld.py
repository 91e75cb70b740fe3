"""Collect MetaWorld demonstrations from the scripted experts into an episode dataset.

  python scripts/collect_metaworld.py --tasks drawer-open-v3,window-open-v3 --episodes 20 \
      --cameras corner2 --size 72 --out data/metaworld_small
  python scripts/collect_metaworld.py --tasks MT10 --episodes 50 --out data/mt10_50     # bigger sets
  python scripts/collect_metaworld.py ... --pack      # one read-only episodes.zarr.zip, for shipping

Needs the `sim` extra and a GL library (Debian: apt-get install -y libosmesa6; MUJOCO_GL=osmesa is the
default here). Only successful demos are kept unless --keep-failures; the expert's success rate is
printed per task and recorded in the dataset's card.json. Re-running the same command on the same
--out resumes where it stopped; the same --seed gives the same dataset.
"""

from __future__ import annotations

from absl import flags

from tinyvla_jax import cli
from tinyvla_jax.data import store
from tinyvla_jax.errors import UserError
from tinyvla_jax.sim import collect

_TASKS = flags.DEFINE_string("tasks", None, "Comma-separated MetaWorld v3 tasks, or MT10 / MT50.")
_EPISODES = flags.DEFINE_integer("episodes", 20, "Successful demos to store per task.")
_CAMERAS = flags.DEFINE_string("cameras", "corner2", "Comma-separated cameras (corner, corner2, corner3, corner4, "
                               "topview, behindGripper, gripperPOV; corner2_near: corner2 moved closer, where "
                               "3D Diffusion Policy puts it).")
_SIZE = flags.DEFINE_integer("size", 72, "Square image size in pixels (the model crops/resizes to its own).")
_OUT = flags.DEFINE_string("out", None, "Dataset directory (created, or resumed if it exists).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the setups (object and goal placements) and instructions.")
_SETUPS = flags.DEFINE_enum("setups", "random", ["random", "spread"], "How each attempt's setup is chosen: "
                            "independent seeded draws, or a farthest-point order over 500 draws (demos that cover the "
                            "object placements evenly: the shipped dataset's).")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 500, "Step limit of one expert episode (MetaWorld's is 500).")
_MAX_ATTEMPTS = flags.DEFINE_integer("max_attempts", None, "Expert runs per task at most (default 3 x --episodes).")
_KEEP_FAILURES = flags.DEFINE_bool("keep_failures", False, "Also store episodes where the expert failed.")
_PACK = flags.DEFINE_bool("pack", False, "Pack the store into one read-only episodes.zarr.zip when done.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}")
  if not _TASKS.value or not _OUT.value:
    raise UserError("pass --tasks (e.g. drawer-open-v3,window-open-v3 or MT10) and --out DIR")
  report = collect.collect(tasks=_TASKS.value, episodes=_EPISODES.value, cameras=_CAMERAS.value.split(","),
                           image_size=_SIZE.value, out=_OUT.value, seed=_SEED.value, keep_failures=_KEEP_FAILURES.value,
                           max_steps=_MAX_STEPS.value, max_attempts=_MAX_ATTEMPTS.value, setups=_SETUPS.value,
                           progress=_PROGRESS.value)
  print(collect.format_report(report))
  if _PACK.value:
    print("packed:", store.pack(_OUT.value))
  dataset = store.EpisodeStore(_OUT.value)
  print(f"{_OUT.value}: {dataset.num_episodes} episodes, {dataset.num_steps} steps, cameras {dataset.cameras}, "
        f"{dataset.card['image_size']} px")


if __name__ == "__main__":
  cli.run(main)
