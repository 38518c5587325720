"""Compile time dominates these small-array tests: the whole directory uses fast_compile."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _fast_compile_everywhere(fast_compile):
  yield
