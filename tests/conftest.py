"""Test-wide JAX settings: exact float32 matmuls, and compile-time savings for a 2-core CPU.

The suite compiles many programs and runs each a few times, so compile time dominates: fewer XLA
optimization passes, and a persistent compilation cache shared by the whole session (tests that
build the same train step again -- e.g. a resumed run -- then reuse the compiled program).
"""

import os
import tempfile

os.environ.setdefault("MUJOCO_GL", "osmesa")  # headless rendering, before anything imports MuJoCo

import jax

jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_disable_most_optimizations", True)
_CACHE = os.environ.get("TINYVLA_TEST_XLA_CACHE") or tempfile.mkdtemp(prefix="tinyvla_xla_cache_")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# TINYVLA_NO_SKIPS=1 (CI sets it): a skipped test fails the session, so a missing extra cannot quietly
# shrink the suite that CI reports as passing.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
  if report.skipped and os.environ.get("TINYVLA_NO_SKIPS"):
    _SKIPPED.append(f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else ''}")


def pytest_sessionfinish(session, exitstatus):
  if _SKIPPED:
    print(f"\nTINYVLA_NO_SKIPS: {len(_SKIPPED)} tests skipped:\n  " + "\n  ".join(_SKIPPED[:20]))
    session.exitstatus = 1

