"""Input validation shared by :mod:`dtl_jax.losses`, :mod:`dtl_jax.stats` and
:mod:`dtl_jax.instance`.

Every helper takes the value first and its argument name second, ``(x, name, ...)``
(two-array helpers: ``(a, name_a, b, name_b)``), and raises ``ValueError`` with a
message that names the argument and the expected shape or value.

Shape checks are static (they read ``.shape`` / ``.ndim``), so they also run when a
function is traced under ``jax.jit``, ``jax.vmap`` or ``jax.grad``. Value checks (label
ranges, probabilities that sum to one, non-negative weights) need concrete numbers: they
run only on concrete inputs (eager calls) and are skipped for tracers, so jitted code
never syncs with the host.

This is the lowest layer of the library: it imports only JAX and NumPy.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when ``x`` holds values (not a tracer inside ``jit`` / ``vmap`` / ``grad``)."""
  return not isinstance(x, jax.core.Tracer)


def as_float_array(x: jax.typing.ArrayLike, name: str) -> jax.Array:
  """``jnp.asarray(x)`` that keeps floating dtypes and promotes ints / bools to float."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
      raise ValueError(f"`{name}` must be real-valued, got dtype {x.dtype}.")
    x = x.astype(jnp.result_type(float))
  return x


# --------------------------------------------------------------------------------------
# Shapes (static: they also run under jit).
# --------------------------------------------------------------------------------------


def check_rank(x: jax.Array, name: str, ranks: tuple[int, ...], shape_doc: str) -> None:
  """Raises unless ``x.ndim`` is one of ``ranks``; ``shape_doc`` (e.g. ``"[n, C]"``) is shown."""
  if x.ndim not in ranks:
    raise ValueError(
      f"`{name}` must have shape {shape_doc} (rank {' or '.join(map(str, ranks))}), "
      f"got shape {tuple(x.shape)}."
    )


def check_nonempty(x: jax.Array, name: str) -> None:
  """Raises if ``x`` has no batch axis or an empty one."""
  if x.ndim == 0 or x.shape[0] == 0:
    raise ValueError(f"`{name}` must have a non-empty batch axis, got shape {tuple(x.shape)}.")


def check_matrix(
  x: jax.typing.ArrayLike, name: str, *, shape_doc: str = "[n, d]", min_rows: int = 1
) -> jax.Array:
  """Checks ``x`` is ``[n, d]`` with ``n >= min_rows`` and ``d >= 1``.

  Args:
    x: the array.
    name: the argument name shown in errors.
    shape_doc: the documented shape shown in errors (``"[n_s, d]"``, ``"[n, Z]"``).
    min_rows: the fewest rows accepted.

  Returns:
    ``x`` as a floating array (:func:`as_float_array`).
  """
  x = as_float_array(x, name)
  shape = tuple(x.shape)
  if x.ndim != 2:
    raise ValueError(f"`{name}` must have shape {shape_doc}, got shape {shape}.")
  if x.shape[0] < min_rows:
    if min_rows == 1:
      raise ValueError(f"`{name}` must be non-empty ({shape_doc} with n >= 1), got shape {shape}.")
    raise ValueError(
      f"`{name}` must have at least {min_rows} rows ({shape_doc} with "
      f"n >= {min_rows}), got shape {shape}."
    )
  if x.shape[1] < 1:
    raise ValueError(
      f"`{name}` must have at least one feature column ({shape_doc} with d >= 1), "
      f"got shape {shape}."
    )
  return x


def check_same_dim(a: jax.Array, name_a: str, b: jax.Array, name_b: str) -> None:
  """Raises unless the matrices ``a: [n, d]`` and ``b: [m, d]`` share the feature dimension."""
  if a.shape[1] != b.shape[1]:
    raise ValueError(
      f"`{name_a}` and `{name_b}` must have the same feature dimension d, got shapes "
      f"{tuple(a.shape)} and {tuple(b.shape)}."
    )


def check_same_batch(a: jax.Array, name_a: str, b: jax.Array, name_b: str) -> None:
  """Raises unless ``a`` and ``b`` have the same leading (batch) size."""
  if a.shape[0] != b.shape[0]:
    raise ValueError(
      f"`{name_a}` and `{name_b}` must have the same batch size, got {a.shape[0]} and "
      f"{b.shape[0]} (shapes {tuple(a.shape)} and {tuple(b.shape)})."
    )


def check_same_shape(a: jax.Array, name_a: str, b: jax.Array, name_b: str) -> None:
  """Raises unless ``a`` and ``b`` have the same shape."""
  if a.shape != b.shape:
    raise ValueError(
      f"`{name_a}` and `{name_b}` must have the same shape, got {tuple(a.shape)} and "
      f"{tuple(b.shape)}."
    )


def check_domain_logits(x: jax.typing.ArrayLike, name: str) -> jax.Array:
  """Validates binary domain logits ``[n]`` or ``[n, 1]`` and returns them as ``[n]``."""
  x = as_float_array(x, name)
  if not (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)):
    raise ValueError(
      f"`{name}` must be binary domain logits of shape [n] or [n, 1] (one logit per "
      f"example, before the sigmoid), got shape {tuple(x.shape)}."
    )
  check_nonempty(x, name)
  return x.reshape(x.shape[0])


def check_class_logits(x: jax.typing.ArrayLike, name: str, *, min_classes: int = 1) -> jax.Array:
  """Validates class logits / probabilities of shape ``[n, C]``; returns them as floats."""
  x = as_float_array(x, name)
  check_rank(x, name, (2,), "[n, C]")
  check_nonempty(x, name)
  if x.shape[1] < min_classes:
    raise ValueError(
      f"`{name}` must have at least {min_classes} classes on its last axis, got shape "
      f"{tuple(x.shape)}."
    )
  return x


# --------------------------------------------------------------------------------------
# Values (eager only: skipped for tracers).
# --------------------------------------------------------------------------------------


def check_positive(value: Any, name: str, *, scalar: bool = True) -> None:
  """Raises if a (static or concrete) ``value`` is not finite and > 0; tracers pass.

  Args:
    value: a Python number or an array.
    name: the argument name shown in errors.
    scalar: also require a single number (``False`` checks every entry of an array).
  """
  if not is_concrete(value):
    return
  v = np.asarray(value)
  if scalar and v.size != 1:
    raise ValueError(f"`{name}` must be a single number, got shape {v.shape}.")
  if not np.all(np.isfinite(v)) or np.any(v <= 0):
    raise ValueError(f"`{name}` must be finite and > 0, got {value!r}.")


def check_probabilities(
  p: jax.Array,
  name: str,
  *,
  atol: float | None = None,
  hint: str = "Pass softmax(logits), not logits.",
) -> None:
  """Eager-only check that the last axis of ``p`` holds probability vectors.

  Entries must be finite and ``>= -tol``, and every row must sum to 1 within ``tol``.
  Skipped when ``p`` is a tracer (inside ``jit`` / ``vmap`` / ``grad``).

  Args:
    p: ``[..., C]`` probabilities.
    name: the argument name shown in errors.
    atol: the tolerance ``tol``; ``None`` follows the dtype: ``1e-6`` for float64,
      ``1e-3`` for lower precision, times ``C`` for the row sums.
    hint: the last sentence of the error (what the caller probably meant).
  """
  if not is_concrete(p):
    return
  v = np.asarray(p, dtype=np.float64)
  if atol is None:
    tol = 1e-6 if p.dtype == jnp.float64 else 1e-3
    sum_tol = tol * max(1, v.shape[-1])
  else:
    tol = sum_tol = atol
  if not np.isfinite(v).all() or (v < -tol).any():
    raise ValueError(
      f"`{name}` must hold probabilities (finite, >= 0); got negative or non-finite entries. {hint}"
    )
  sums = v.sum(axis=-1)
  if (np.abs(sums - 1.0) > sum_tol).any():
    worst = sums.flat[np.argmax(np.abs(sums - 1.0))]
    raise ValueError(
      f"`{name}` must hold probabilities whose last axis sums to 1; found a "
      f"row summing to {worst:.6g}. {hint}"
    )


def check_labels(
  y: jax.typing.ArrayLike, name: str, n: int, num_classes: int | None = None
) -> tuple[jax.Array, int]:
  """Checks integer labels ``[n]`` in ``[0, num_classes)``; infers ``num_classes`` if concrete.

  Returns:
    The labels as an int32 array and the number of classes.
  """
  y = jnp.asarray(y)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(
      f"`{name}` must have shape [{n}] (one label per row); got shape {tuple(y.shape)}."
    )
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
        f"got values in [{lo}, {hi}]."
      )
  elif num_classes is None:
    raise ValueError(f"`num_classes` must be given when `{name}` is traced (under jit/vmap).")
  if num_classes < 1:
    raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
  return y.astype(jnp.int32), int(num_classes)


# --------------------------------------------------------------------------------------
# Per-example weights.
# --------------------------------------------------------------------------------------


def check_weights(
  w: jax.typing.ArrayLike | None,
  name: str,
  n: int,
  dtype: Any = None,
  *,
  positive_sum: bool = False,
  normalize: bool = False,
) -> jax.Array | None:
  """Validates optional per-example weights ``[n]`` (``[n, 1]`` is accepted).

  Values (eager only) must be finite and non-negative, and with ``positive_sum`` or
  ``normalize`` not all zero.

  Args:
    w: the weights, or ``None`` (returned as is: no weighting).
    name: the argument name shown in errors.
    n: the batch size the weights belong to.
    dtype: cast the weights to this dtype (``None``: keep a floating dtype).
    positive_sum: require ``sum(w) > 0``.
    normalize: return ``w / sum(w)`` (implies ``positive_sum``).

  Returns:
    ``[n]`` weights, or ``None`` when ``w`` is ``None``.
  """
  if w is None:
    return None
  w = as_float_array(w, name)
  if w.ndim == 2 and w.shape[1] == 1:
    w = w.reshape(w.shape[0])
  if w.shape != (n,):
    raise ValueError(
      f"`{name}` must have shape [{n}] (one weight per example), got shape {tuple(w.shape)}."
    )
  if is_concrete(w):
    v = np.asarray(w)
    if not np.all(np.isfinite(v)) or np.any(v < 0):
      raise ValueError(f"`{name}` must be finite and non-negative.")
    if (positive_sum or normalize) and not np.sum(v) > 0:
      raise ValueError(f"`{name}` must have a positive sum (not all zero).")
  if dtype is not None:
    w = w.astype(dtype)
  return w / jnp.sum(w) if normalize else w


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
  """``mean(w * values)`` over the batch axis, TLlib's convention (not divided by sum w)."""
  if weights is None:
    return jnp.mean(values)
  return jnp.mean(weights * values)
