"""dtl_jax: deep transfer learning in JAX/Flax.

Subpackages (see DESIGN.md for the layering):

* :mod:`dtl_jax.losses`   -- pure loss functions (MMD, JMMD, CORAL, adversarial, distillation).
* :mod:`dtl_jax.stats`    -- transferability and discrepancy measurement.
* :mod:`dtl_jax.instance` -- instance weighting (TrAdaBoost, KMM, density ratios).
* :mod:`dtl_jax.models`   -- Flax Linen backbones and heads, pretrained conversion.
* :mod:`dtl_jax.params`   -- frozen / trainable parameter groups as optax masks.
* :mod:`dtl_jax.data`     -- bundled offline domains, TFDS, image folders, samplers.
* :mod:`dtl_jax.methods`  -- transfer methods composed from the losses.
* :mod:`dtl_jax.train`    -- train state, jit / pmap / shard_map steps, the loop.

Only :mod:`dtl_jax.losses` is imported eagerly; the other subpackages load on first
attribute access, so ``import dtl_jax`` stays light and never imports torch or
tensorflow.
"""

import importlib as _importlib

from dtl_jax import losses

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("stats", "instance", "models", "params", "data", "methods", "train", "cli")


def __getattr__(name: str):
  if name in _LAZY_SUBMODULES:
    module = _importlib.import_module(f"dtl_jax.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module 'dtl_jax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_LAZY_SUBMODULES))


__all__ = ["losses", "__version__", *_LAZY_SUBMODULES]
