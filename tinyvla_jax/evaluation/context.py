"""What an evaluation needs to know about the training data: tasks, cameras, image size, instructions,
and the setups the data used (so evaluation picks others). From a checkpoint's `data` asset, or from a
dataset directory (for the expert and random baselines)."""

from __future__ import annotations

from tinyvla_jax.errors import UserError


def check_trained_on(requested: list[str], trained: list[str]) -> None:
  """--tasks may name only tasks the checkpoint was trained on: one line naming those it was not."""
  missing = [t for t in requested if t not in trained]
  if missing:
    raise UserError(f"--tasks: the checkpoint was not trained on {missing} (it has {', '.join(trained)})")


def data_context(info: dict) -> dict:
  """Tasks, cameras, image size, instructions and used setups from a checkpoint's `data` asset."""
  card = info.get("card")
  if info.get("source") != "metaworld" or not card:
    raise UserError(f"this checkpoint was trained on data.source={info.get('source')!r}: closed-loop evaluation "
                     "needs a MetaWorld-trained checkpoint (data.source=metaworld)")
  return dict(tasks=info.get("tasks") or list(card["tasks"]), cameras=card["cameras"], image_size=card["image_size"],
              instructions={t: v["instructions"] for t, v in card["tasks"].items()},
              exclude_seeds=info.get("setup_seeds") or {})


def dataset_context(path: str | None) -> dict:
  from tinyvla_jax.data import sources
  from tinyvla_jax.data.store import EpisodeStore
  store = EpisodeStore(path or sources.SHIPPED_DATASET)
  return dict(tasks=list(store.task_names), cameras=list(store.cameras), image_size=store.card["image_size"],
              instructions={t: v["instructions"] for t, v in store.card["tasks"].items()},
              exclude_seeds={k: sorted(v) for k, v in store.setup_seeds().items()})
