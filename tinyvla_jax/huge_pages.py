"""Back XLA's large host buffers with transparent huge pages: the CLIs restart themselves once with glibc's
`glibc.malloc.hugetlb=1` tunable.

Why: XLA:CPU allocates a step's gradients and temporaries afresh on every call (hundreds of MB for the
paper-size head), from memory glibc maps and unmaps each time, so every step first-touches ~150k new 4 KiB
pages. Measured on a 2-core VM with the paper-size U-Net (batch 4, clip + AdamW): 150k minor page faults
per step and 285 ms per step; with the tunable (glibc then asks for 2 MiB pages with madvise) 7k faults
and 205 ms. glibc reads its tunables only when a process starts, hence the restart (os.execv: same pid,
arguments and environment, before any work is done).

Nothing happens where it cannot help or is not wanted: not Linux or not glibc >= 2.35, transparent huge
pages set to "never" by the system, GLIBC_TUNABLES already naming the tunable (a user's choice, and the
marker that the restart happened), or TINYVLA_HUGE_PAGES=0.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version() -> tuple[int, int] | None:
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None
  except (AttributeError, ValueError, OSError):
    return None


def _thp_available() -> bool:
  try:
    with open(THP_SETTING) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def wanted(environ=os.environ) -> bool:
  """Whether a restart with the tunable would change anything here."""
  if environ.get("TINYVLA_HUGE_PAGES", "1") == "0" or TUNABLE in environ.get("GLIBC_TUNABLES", ""):
    return False
  version = _glibc_version()
  return sys.platform.startswith("linux") and version is not None and version >= (2, 35) and _thp_available()


def with_tunable(environ=os.environ) -> dict:
  env = dict(environ)
  env["GLIBC_TUNABLES"] = ":".join(filter(None, [environ.get("GLIBC_TUNABLES", ""), f"{TUNABLE}=1"]))
  return env


def restart_with_huge_pages() -> None:
  """Re-executes this process with the tunable set, when `wanted()`; returns otherwise."""
  if not wanted():
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, with_tunable())
