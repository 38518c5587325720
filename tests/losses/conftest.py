"""Fixtures shared by the loss tests."""

import jax
import pytest


@pytest.fixture(scope="module")
def fast_compile():
  """Compile with most XLA optimizations off for one test module (compile time, not run
  time, dominates these small tests); restores the previous setting afterwards."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)
