"""Shared test set-up.

* 8 fake CPU devices for the multi-device tests (must happen before any JAX work).
* float64 enabled so that float64 NumPy references can be matched at 1e-10; tests that
  check float32 behaviour pass float32 arrays explicitly.
* One persistent XLA compilation cache per test session, shared by the xdist workers
  and the child processes tests start (``JAX_COMPILATION_CACHE_DIR``): many tests
  compile the same small training steps, and compile time dominates them. A cached
  executable is the one XLA would compile again (same HLO, options and flags).
"""

import os
import tempfile

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_enable_x64", True)

# Compile time, not run time, dominates the small arrays of almost every test: XLA's
# backend optimizations are off for the whole session (and the processes tests start),
# except in the modules that request ``xla_optimizations`` (flop counts, fusion checks).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
jax.config.update(
  "jax_disable_most_optimizations", os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1"
)

_SESSION = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"dtl_jax_tests_{_SESSION}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
  "jax_persistent_cache_min_compile_time_secs",
  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
  """A seeded NumPy generator: tests are deterministic."""
  return np.random.default_rng(0)


@pytest.fixture
def key() -> jax.Array:
  return jax.random.key(0)


@pytest.fixture(scope="module")
def xla_optimizations():
  """XLA's optimizations on for one module (what they change is what it tests)."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def fast_compile():
  """Compiles with most XLA optimizations off for one test module, then restores them.

  Compile time, not run time, dominates the small arrays of most tests. Opt in with
  ``pytestmark = pytest.mark.usefixtures("fast_compile")`` (a whole directory: an
  autouse fixture in its conftest that requests this one).
  """
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)
