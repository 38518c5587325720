"""XLA compiler options of the library's compiled steps (train, evaluation, initialization).

One measured default (``benchmarks/xla_flags.py``, issue 15): on the CPU backend of
jaxlib 0.10, XLA hands convolutions to YNNPACK (``ynn_fusion``), which was slower than
XLA's own (Eigen) convolution for every shape measured, forward + backward, one thread:
3.7x for the first convolution of DANN's MNIST network (3 -> 32 channels, 5x5), 1.4-1.8x
for LeNet's, 1.3-8.7x for ResNet-style 3x3 / 1x1 / 7x7 convolutions; the DANN MNIST
training step ran ~2x faster without it. YNNPACK stays on for matrix products and
reductions, where it is the faster one (1.6-2x for large GEMMs). The results agree to
~1e-6 relative (float32).

So :func:`step_compiler_options` returns, for ``jax.jit(..., compiler_options=...)``,

  ``xla_cpu_experimental_ynn_fusion_type = LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,
  LIBRARY_FUSION_TYPE_REDUCE``

(jaxlib 0.10.2's default set minus ``LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION``) --
only for computations the library compiles itself, and only where it is safe:

* the default backend is ``cpu`` (GPU / TPU compilations are untouched);
* jaxlib is 0.10.x, the version it was measured on (the option is experimental: other
  versions keep XLA's defaults);
* ``XLA_FLAGS`` does not already set ``xla_cpu_experimental_ynn_fusion_type`` (the
  user's choice wins);
* the environment variable ``DTL_JAX_XLA_DEFAULTS`` is not ``0`` (the opt-out).

``jax.pmap`` takes no compiler options: the ``pmap`` driver compiles with XLA's defaults.

A second default, under the same conditions, is for one-off start-up computations
(:func:`run_once`: initialization, key derivation, the optimizer's first state): they
compile with backend optimizations off and XLA:CPU's loop emitters
(:func:`init_compiler_options`, measured at :data:`CPU_INIT_OPTIONS`); an ``XLA_FLAGS``
that sets ``xla_cpu_use_fusion_emitters`` wins there too.
"""

from __future__ import annotations

import functools
import os
from typing import Any

#: The option and value (see the module docstring).
CPU_STEP_OPTIONS: dict[str, Any] = {
  "xla_cpu_experimental_ynn_fusion_type": (
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
  ),
}
MEASURED_JAXLIB = "0.10."
OPT_OUT_ENV = "DTL_JAX_XLA_DEFAULTS"


def _user_sets(options: dict[str, Any]) -> bool:
  """Whether ``XLA_FLAGS`` already sets one of ``options`` (the user's choice wins)."""
  return any(k in os.environ.get("XLA_FLAGS", "") for k in options)


@functools.lru_cache(maxsize=1)
def _enabled() -> bool:
  import jax
  import jaxlib

  if os.environ.get(OPT_OUT_ENV, "1") == "0":
    return False
  if _user_sets(CPU_STEP_OPTIONS):
    return False
  if not jaxlib.__version__.startswith(MEASURED_JAXLIB):
    return False
  return jax.default_backend() == "cpu"


def step_compiler_options() -> dict[str, Any] | None:
  """``compiler_options`` for the library's ``jax.jit`` steps (``None``: XLA's defaults)."""
  return dict(CPU_STEP_OPTIONS) if _enabled() else None


#: XLA options of one-off start-up computations (:func:`run_once`): model and extra-module
#: initialization, key derivation, the optimizer's initial state.
INIT_COMPILER_OPTIONS: dict[str, Any] = {
  "xla_backend_optimization_level": 0,
  "xla_llvm_disable_expensive_passes": True,
}
#: Added to :data:`INIT_COMPILER_OPTIONS` where the step options apply (CPU, jaxlib 0.10,
#: no opt-out, ``XLA_FLAGS`` not setting it): XLA:CPU's loop emitters instead of its
#: fusion emitters. Measured (2-core Intel Xeon, one thread, fresh processes): the DANN
#: MNIST network's initialization compiled in 0.55-0.67 s instead of 1.25-1.33 s, and
#: ``create_train_state`` (key derivation, the domain classifier's initialization, the
#: optimizer's state) in 0.44-0.52 s instead of 1.10-1.22 s, to bit-identical values.
#: Not used for the steps: there they cut compile time too, but ran LeNet's DANN step
#: ~8% slower at one thread (``python -m benchmarks.xla_flags --sets default
#: no_fusion_emitters``).
CPU_INIT_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}


def init_compiler_options() -> dict[str, Any]:
  """``compiler_options`` of :func:`run_once`'s start-up computations."""
  extra = CPU_INIT_OPTIONS if _enabled() and not _user_sets(CPU_INIT_OPTIONS) else {}
  return {**INIT_COMPILER_OPTIONS, **extra}


def run_once(fn: Any, /, *args: Any, static_argnums: tuple[int, ...] = ()) -> Any:
  """``fn(*args)`` compiled as ONE computation with XLA's backend optimizations off.

  For start-up work that runs once per run (initializers, random-key derivation, the
  optimizer's initial state): op by op, each such ``jax.numpy`` / ``jax.random`` call
  on a host-level array compiles a program of its own with XLA's full optimization
  (~0.1-0.2 s each for a threefry split on a 2-core CPU), for a computation that runs
  once. Integer work (keys) is bit-identical; floating-point results may differ from
  the optimized program's by a few ulps. Options: :func:`init_compiler_options`.

  Falls back to calling ``fn`` directly where ``jax.jit`` with compiler options cannot
  run it: inside a trace (a user's ``jit`` / ``eval_shape``: the outer computation
  compiles it) or when ``fn`` needs concrete values.
  """
  import jax

  try:
    return jax.jit(fn, static_argnums=static_argnums, compiler_options=init_compiler_options())(
      *args
    )
  except jax.errors.ConcretizationTypeError:
    return fn(*args)
  except ValueError as e:  # inside a trace: nested jits take no compiler options
    if "compiler_options" not in str(e):
      raise
    return fn(*args)


def _split_tuple(key: Any, num: int) -> tuple[Any, ...]:
  import jax

  return tuple(jax.random.split(key, num))


def split_keys(key: Any, num: int) -> tuple[Any, ...]:
  """``tuple(jax.random.split(key, num))`` as one start-up computation (:func:`run_once`):
  the same keys, without compiling the split and the unstacking with full optimization."""
  return run_once(_split_tuple, key, num, static_argnums=(1,))
