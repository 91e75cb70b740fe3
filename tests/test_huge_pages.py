"""The CLIs' restart with huge-page malloc: when it happens, what it keeps, how to turn it off."""

import os
import subprocess
import sys
import textwrap

from tinyvla_jax import huge_pages


def test_off_switch_and_existing_choice_win():
  assert not huge_pages.wanted({"TINYVLA_HUGE_PAGES": "0"})
  assert not huge_pages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})  # the user's own setting


def test_tunable_is_appended_to_the_users_tunables():
  env = huge_pages.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "KEEP": "1"})
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1" and env["KEEP"] == "1"
  assert huge_pages.with_tunable({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def _run_cli(tmp_path, **env):
  script = tmp_path / "cli_probe.py"
  script.write_text(textwrap.dedent("""
      import os, sys
      from tinyvla_jax import cli
      def main(argv):
        print(os.getpid(), os.environ.get("GLIBC_TUNABLES"), argv[1:])
      cli.run(main)
  """))
  env = {**os.environ, **env}
  env.pop("GLIBC_TUNABLES", None)
  out = subprocess.run([sys.executable, str(script), "extra"], env=env, capture_output=True, text=True, check=True)
  return out.stdout.split(maxsplit=1)[1].strip()


def test_a_cli_restarts_once_with_the_tunable_and_its_arguments(tmp_path):
  expected = "glibc.malloc.hugetlb=1" if huge_pages.wanted({}) else "None"
  assert _run_cli(tmp_path) == f"{expected} ['extra']"
  assert _run_cli(tmp_path, TINYVLA_HUGE_PAGES="0") == "None ['extra']"
