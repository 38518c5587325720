"""Compile time dominates these small-array tests; XLA's heavy optimizations do not pay off."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)
