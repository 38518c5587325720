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


@functools.lru_cache(maxsize=1)
def _enabled() -> bool:
  import jax
  import jaxlib

  if os.environ.get(OPT_OUT_ENV, "1") == "0":
    return False
  if any(k in os.environ.get("XLA_FLAGS", "") for k in CPU_STEP_OPTIONS):
    return False
  if not jaxlib.__version__.startswith(MEASURED_JAXLIB):
    return False
  return jax.default_backend() == "cpu"


def step_compiler_options() -> dict[str, Any] | None:
  """``compiler_options`` for the library's ``jax.jit`` steps (``None``: XLA's defaults)."""
  return dict(CPU_STEP_OPTIONS) if _enabled() else None
