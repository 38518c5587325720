"""Input checks shared by :mod:`dtl_jax.instance` and :mod:`dtl_jax.stats`.

Shape checks are static (they work under ``jax.jit``); value checks (label ranges) run
only when the array is concrete, i.e. outside a trace.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
  """True when ``x`` holds values (not a tracer inside ``jit``/``vmap``/``grad``)."""
  return not isinstance(x, jax.core.Tracer)


def as_float_array(x, name: str) -> jax.Array:
  """``x`` as a floating JAX array (integers become the default float dtype)."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def check_matrix(x, name: str, *, min_rows: int = 1) -> jax.Array:
  """Checks ``x`` is ``[n, d]`` with ``n >= min_rows`` and ``d >= 1``; returns it as a float array."""
  x = as_float_array(x, name)
  if x.ndim != 2:
    raise ValueError(f"`{name}` must have shape [n, d]; got shape {tuple(x.shape)}.")
  if x.shape[0] < min_rows:
    raise ValueError(
        f"`{name}` must have at least {min_rows} row(s) ([n, d] with n >= {min_rows}); "
        f"got shape {tuple(x.shape)} (empty input).")
  if x.shape[1] < 1:
    raise ValueError(f"`{name}` must have at least one feature column; got shape {tuple(x.shape)}.")
  return x


def check_same_dim(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
  if a.shape[1] != b.shape[1]:
    raise ValueError(
        f"`{name_a}` [n, d] and `{name_b}` [m, d] must have the same feature dimension d; "
        f"got {a.shape[1]} and {b.shape[1]}.")


def check_labels(y, name: str, n: int, num_classes: int | None = None) -> tuple[jax.Array, int]:
  """Checks integer labels ``[n]`` in ``[0, num_classes)``; infers ``num_classes`` if concrete.

  Returns the labels as an int32 array and the number of classes.
  """
  y = jnp.asarray(y)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(f"`{name}` must have shape [{n}] (one label per row); got shape {tuple(y.shape)}.")
  if n == 0:
    raise ValueError(f"`{name}` is empty; at least one labelled example is needed.")
  if jnp.issubdtype(y.dtype, jnp.floating):
    if is_concrete(y):
      yn = np.asarray(y)
      if not np.all(yn == np.round(yn)):
        raise ValueError(f"`{name}` must hold integer class labels; got non-integer values.")
  elif not jnp.issubdtype(y.dtype, jnp.integer) and y.dtype != jnp.bool_:
    raise ValueError(f"`{name}` must hold integer class labels; got dtype {y.dtype}.")
  if is_concrete(y):
    yn = np.asarray(y)
    lo, hi = int(yn.min()), int(yn.max())
    if num_classes is None:
      num_classes = hi + 1
    if lo < 0 or hi >= num_classes:
      raise ValueError(
          f"`{name}` must hold labels in [0, {num_classes}) (num_classes={num_classes}); "
          f"got values in [{lo}, {hi}].")
  elif num_classes is None:
    raise ValueError(f"`num_classes` must be given when `{name}` is traced (under jit/vmap).")
  if num_classes < 1:
    raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
  return y.astype(jnp.int32), int(num_classes)
