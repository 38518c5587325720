"""CORAL: correlation alignment of second-order statistics.

Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
Adaptation", ECCV Workshops 2016).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dtl_jax.losses import kernels as _k

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_HI = jax.lax.Precision.HIGHEST


def _prepare(source, target, source_weights, target_weights):
  source, target = jnp.asarray(source), jnp.asarray(target)
  _k._check_matrix("source", source, "[n_s, d]")
  _k._check_matrix("target", target, "[n_t, d]")
  if source.shape[1] != target.shape[1]:
    raise ValueError("source and target must have the same feature dimension d, got "
                     f"{tuple(source.shape)} and {tuple(target.shape)}.")
  for name, x in (("source", source), ("target", target)):
    if x.shape[0] < 2:
      raise ValueError(f"{name} needs at least 2 rows for a covariance, got {tuple(x.shape)}.")
  dtype = jnp.result_type(source, target)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.result_type(float)
  source, target = source.astype(dtype), target.astype(dtype)
  ws = _k._validate_weights("source_weights", source_weights, source.shape[0], dtype)
  wt = _k._validate_weights("target_weights", target_weights, target.shape[0], dtype)
  return source, target, ws, wt


def _mean_and_cov(x: Array, w: Array | None) -> tuple[Array, Array]:
  """Weighted mean ``[d]`` and unbiased covariance ``[d, d]``.

  Uniform: ``1/(n-1) sum_i (x_i - mu)(x_i - mu)^T``. Weighted (normalised ``w``):
  ``sum_i w_i (x_i - mu_w)(x_i - mu_w)^T / (1 - sum_i w_i^2)`` (reliability weights;
  equal weights give the uniform formula).
  """
  n = x.shape[0]
  if w is None:
    mu = jnp.mean(x, axis=0)
    xc = x - mu
    return mu, jnp.matmul(xc.T, xc, precision=_HI) / (n - 1)
  mu = jnp.matmul(w, x, precision=_HI)
  xc = x - mu
  cov = jnp.matmul((xc * w[:, None]).T, xc, precision=_HI)
  return mu, cov / (1.0 - jnp.sum(w * w))


def coral(
    source: ArrayLike,
    target: ArrayLike,
    *,
    source_weights: ArrayLike | None = None,
    target_weights: ArrayLike | None = None,
) -> Array:
  """Deep CORAL loss ``||C_s - C_t||_F^2 / (4 d^2)`` (Sun & Saenko, ECCV-W 2016).

  ``C_s = 1/(n_s - 1) (S - 1 mu_s^T)^T (S - 1 mu_s^T)`` is the unbiased ``[d, d]``
  source covariance (same for ``C_t``). With weights ``w`` (normalised to sum 1) the
  covariance is ``sum_i w_i (s_i - mu_w)(s_i - mu_w)^T / (1 - sum_i w_i^2)``, which
  equals the uniform one for equal weights.

  TLlib's ``CorrelationAlignmentLoss`` differs: it returns
  ``mean((mu_s - mu_t)^2) + mean((C_s - C_t)^2)``, i.e. it adds a mean-difference term
  and normalises by ``d^2`` (resp. ``d``) instead of ``4 d^2``; see :func:`coral_tllib`.

  Args:
    source: ``[n_s, d]``, ``n_s >= 2``.
    target: ``[n_t, d]``, ``n_t >= 2`` (``n_t != n_s`` allowed).
    source_weights: optional ``[n_s]`` non-negative weights.
    target_weights: optional ``[n_t]`` non-negative weights.

  Returns:
    Scalar with the dtype of the inputs.
  """
  source, target, ws, wt = _prepare(source, target, source_weights, target_weights)
  d = source.shape[1]
  _, c_s = _mean_and_cov(source, ws)
  _, c_t = _mean_and_cov(target, wt)
  diff = c_s - c_t
  return jnp.sum(diff * diff) / (4.0 * d * d)


def coral_tllib(
    source: ArrayLike,
    target: ArrayLike,
    *,
    source_weights: ArrayLike | None = None,
    target_weights: ArrayLike | None = None,
) -> Array:
  """TLlib's CORAL variant: ``mean_k (mu_s - mu_t)_k^2 + mean_{kl} (C_s - C_t)_{kl}^2``.

  (TLlib ``tllib.alignment.coral.CorrelationAlignmentLoss``; not part of
  ``dalib==0.2``.) Same covariances as :func:`coral`.

  Args:
    source: ``[n_s, d]``, ``n_s >= 2``.
    target: ``[n_t, d]``, ``n_t >= 2``.
    source_weights: optional ``[n_s]``.
    target_weights: optional ``[n_t]``.

  Returns:
    Scalar.
  """
  source, target, ws, wt = _prepare(source, target, source_weights, target_weights)
  mu_s, c_s = _mean_and_cov(source, ws)
  mu_t, c_t = _mean_and_cov(target, wt)
  return jnp.mean((mu_s - mu_t) ** 2) + jnp.mean((c_s - c_t) ** 2)

