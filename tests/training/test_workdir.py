"""A stored run's config against this one: what counts as a different run when resuming."""

from __future__ import annotations

import copy

from tinyvla_jax import presets, recipes
from tinyvla_jax.recipes import typed
from tinyvla_jax.training.workdir import config_differences


def current() -> dict:
  return typed(recipes.fixed_recipe(presets.model_preset("tiny"), preset="tiny")).to_dict()


def test_a_key_added_since_the_run_was_written_is_not_a_difference():
  stored = copy.deepcopy(current())
  del stored["model"]["obs_steps"]  # as written by a version without the key (its default applies)
  del stored["eval"]["video"]
  assert config_differences(stored, current()) == []


def test_real_differences_are_named():
  stored = copy.deepcopy(current())
  stored["optim"]["learning_rate"] = 0.5
  assert config_differences(stored, current()) == [f"optim.learning_rate: 0.5 -> {current()['optim']['learning_rate']!r}"]
  stored = copy.deepcopy(current())
  stored["model"]["obs_steps"] = 3  # a non-default value of a key, also when the current run omits nothing
  assert [d.split(":")[0] for d in config_differences(stored, current())] == ["model.obs_steps"]
  stored = copy.deepcopy(current())
  stored["train"]["removed_option"] = 1  # a key this version no longer knows: compared as written
  assert [d.split(":")[0] for d in config_differences(stored, current())] == ["train.removed_option"]
  stored = copy.deepcopy(current())
  stored["train"]["max_steps"] = 7  # resumable
  assert config_differences(stored, current()) == []
