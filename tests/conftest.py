"""Test-wide settings: fast compiles on CPU, deterministic float32."""

import os

# Fewer XLA optimization passes: the suite compiles many small programs and runs them once.
os.environ.setdefault("XLA_FLAGS", "")
import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
