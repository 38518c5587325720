"""Input validation shared by the adversarial, distillation and entropy losses.

Shape checks are static (they read ``.shape`` / ``.ndim``), so they also run when a
loss is traced under ``jax.jit`` or ``jax.vmap``. Value checks (probabilities that sum
to one, non-negative weights) need concrete numbers: they run only on concrete inputs
(eager calls) and are skipped for tracers, so jitted code never syncs with the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def as_float_array(name: str, x: jax.typing.ArrayLike) -> jax.Array:
  """``jnp.asarray`` that keeps floating dtypes and promotes ints/bools to float."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
      raise ValueError(f"`{name}` must be real-valued, got dtype {x.dtype}.")
    x = x.astype(jnp.result_type(float))
  return x


def check_rank(name: str, x: jax.Array, ranks: tuple[int, ...], shape_doc: str) -> None:
  if x.ndim not in ranks:
    raise ValueError(
        f"`{name}` must have shape {shape_doc} (rank {' or '.join(map(str, ranks))}), "
        f"got shape {tuple(x.shape)}.")


def check_nonempty(name: str, x: jax.Array) -> None:
  if x.ndim == 0 or x.shape[0] == 0:
    raise ValueError(f"`{name}` must have a non-empty batch axis, got shape {tuple(x.shape)}.")


def domain_logits(name: str, x: jax.typing.ArrayLike) -> jax.Array:
  """Validates binary domain logits ``[n]`` or ``[n, 1]`` and returns them as ``[n]``."""
  x = as_float_array(name, x)
  if not (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)):
    raise ValueError(
        f"`{name}` must be binary domain logits of shape [n] or [n, 1] (one logit per "
        f"example, before the sigmoid), got shape {tuple(x.shape)}.")
  check_nonempty(name, x)
  return x.reshape(x.shape[0])


def class_logits(name: str, x: jax.typing.ArrayLike, *, min_classes: int = 1) -> jax.Array:
  """Validates class logits / probabilities of shape ``[n, C]``."""
  x = as_float_array(name, x)
  check_rank(name, x, (2,), "[n, C]")
  check_nonempty(name, x)
  if x.shape[1] < min_classes:
    raise ValueError(
        f"`{name}` must have at least {min_classes} classes on its last axis, got shape "
        f"{tuple(x.shape)}.")
  return x


def same_batch(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
  if a.shape[0] != b.shape[0]:
    raise ValueError(
        f"`{name_a}` and `{name_b}` must have the same batch size, got {a.shape[0]} and "
        f"{b.shape[0]} (shapes {tuple(a.shape)} and {tuple(b.shape)}).")


def same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
  if a.shape != b.shape:
    raise ValueError(
        f"`{name_a}` and `{name_b}` must have the same shape, got {tuple(a.shape)} and "
        f"{tuple(b.shape)}.")


def positive(name: str, value) -> None:
  """Raises if a (static or concrete) hyperparameter is not > 0; tracers pass through."""
  if isinstance(value, jax.core.Tracer):
    return
  v = np.asarray(value)
  if v.size != 1 or not np.isfinite(v).all() or not (v > 0).all():
    raise ValueError(f"`{name}` must be a finite positive scalar, got {value!r}.")


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def probabilities(name: str, p: jax.Array) -> None:
  """Eager-only check that rows of ``p`` are probability vectors (>= 0, sum to 1).

  Skipped when ``p`` is a tracer (inside ``jit`` / ``vmap`` / ``grad``); the tolerance
  follows the dtype (1e-6 for float64, 1e-3 for lower precision).
  """
  if not is_concrete(p):
    return
  v = np.asarray(p, dtype=np.float64)
  tol = 1e-6 if p.dtype == jnp.float64 else 1e-3
  if not np.isfinite(v).all() or (v < -tol).any():
    raise ValueError(f"`{name}` must hold probabilities (finite, >= 0); got negative or "
                     "non-finite entries. Pass logits to a `from_logits` variant instead?")
  sums = v.sum(axis=-1)
  if (np.abs(sums - 1.0) > tol * max(1, v.shape[-1])).any():
    worst = sums.flat[np.argmax(np.abs(sums - 1.0))]
    raise ValueError(f"`{name}` must hold probabilities whose last axis sums to 1; found a "
                     f"row summing to {worst:.6g}.")


def example_weights(name: str, w, n: int, dtype) -> jax.Array | None:
  """Validates optional per-example weights of shape ``[n]`` (``[n, 1]`` accepted)."""
  if w is None:
    return None
  w = as_float_array(name, w)
  if w.ndim == 2 and w.shape[1] == 1:
    w = w.reshape(w.shape[0])
  if w.shape != (n,):
    raise ValueError(f"`{name}` must have shape [{n}] (one weight per example), got shape "
                     f"{tuple(w.shape)}.")
  if is_concrete(w) and (np.asarray(w) < 0).any():
    raise ValueError(f"`{name}` must be non-negative.")
  return w.astype(dtype)


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
  """``mean(w * values)`` over the batch axis, TLlib's convention (not divided by sum w)."""
  if weights is None:
    return jnp.mean(values)
  return jnp.mean(weights * values)
