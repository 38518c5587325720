"""Validation helpers for the transferability scores (shared with :mod:`dtl_jax.instance`)."""

from __future__ import annotations

import numpy as np

from dtl_jax.instance._validation import (as_float_array, check_labels, check_matrix,  # noqa: F401
                                          check_same_dim, is_concrete)


def check_probabilities(p, name: str):
  """Checks ``[n, Z]`` rows are probability vectors (values checked only when concrete)."""
  p = check_matrix(p, name)
  if is_concrete(p):
    pn = np.asarray(p, np.float64)
    if np.any(pn < 0) or not np.allclose(pn.sum(axis=1), 1.0, atol=1e-4):
      raise ValueError(
          f"`{name}` must hold probabilities over the source classes ([n, Z], non-negative "
          "rows summing to 1); pass softmax(logits), not logits.")
  return p
