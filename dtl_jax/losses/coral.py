"""CORAL: correlation alignment of second-order statistics.

Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
Adaptation", ECCV Workshops 2016).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dtl_jax import _validation as V

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_HI = jax.lax.Precision.HIGHEST


def _prepare(
  source: ArrayLike,
  target: ArrayLike,
  source_weights: ArrayLike | None,
  target_weights: ArrayLike | None,
) -> tuple[Array, Array, Array | None, Array | None]:
  source = V.check_matrix(source, "source", shape_doc="[n_s, d]")
  target = V.check_matrix(target, "target", shape_doc="[n_t, d]")
  V.check_same_dim(source, "source", target, "target")
  for name, x in (("source", source), ("target", target)):
    if x.shape[0] < 2:
      raise ValueError(f"{name} needs at least 2 rows for a covariance, got {tuple(x.shape)}.")
  dtype = jnp.result_type(source, target)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.result_type(float)
  source, target = source.astype(dtype), target.astype(dtype)
  ws = V.check_weights(source_weights, "source_weights", source.shape[0], dtype, normalize=True)
  wt = V.check_weights(target_weights, "target_weights", target.shape[0], dtype, normalize=True)
  return source, target, ws, wt


def _centred(x: Array, w: Array | None) -> tuple[Array, Array, Array]:
  """``(mu, x - mu, z)``: the covariance is ``C = (x - mu)^T diag(w) (x - mu) / z``.

  Uniform (``w`` None): ``mu`` the mean, ``z = n - 1``. Weighted (normalised ``w``):
  ``mu = w^T x``, ``z = 1 - sum_i w_i^2`` (reliability weights; equal weights give the
  uniform formula).
  """
  if w is None:
    mu = jnp.mean(x, axis=0)
    return mu, x - mu, jnp.asarray(x.shape[0] - 1, x.dtype)
  mu = jnp.matmul(w, x, precision=_HI)
  return mu, x - mu, 1.0 - jnp.sum(w * w)


def _mean_and_cov(x: Array, w: Array | None) -> tuple[Array, Array]:
  """Weighted mean ``[d]`` and unbiased covariance ``[d, d]`` (see :func:`_centred`)."""
  mu, xc, z = _centred(x, w)
  left = xc if w is None else xc * w[:, None]
  return mu, jnp.matmul(left.T, xc, precision=_HI) / z


def _cov_inner(a: Array, wa: Array | None, b: Array, wb: Array | None) -> Array:
  """``z_a z_b <C_a, C_b>_F = sum_ij wa_i wb_j (a_i . b_j)^2`` from the ``[n_a, n_b]`` Gram."""
  k = jnp.matmul(a, b.T, precision=_HI)
  k2 = k * k
  if wb is not None:
    k2 = k2 @ wb
  else:
    k2 = jnp.sum(k2, axis=1)
  return jnp.sum(k2) if wa is None else jnp.dot(wa, k2)


CORAL_METHODS = ("auto", "covariance", "gram")


def coral(
  source: ArrayLike,
  target: ArrayLike,
  *,
  source_weights: ArrayLike | None = None,
  target_weights: ArrayLike | None = None,
  method: str = "auto",
) -> Array:
  """Deep CORAL loss ``||C_s - C_t||_F^2 / (4 d^2)`` (Sun & Saenko, ECCV-W 2016).

  ``C_s = 1/(n_s - 1) (S - 1 mu_s^T)^T (S - 1 mu_s^T)`` is the unbiased ``[d, d]``
  source covariance (same for ``C_t``). With weights ``w`` (normalised to sum 1) the
  covariance is ``sum_i w_i (s_i - mu_w)(s_i - mu_w)^T / (1 - sum_i w_i^2)``, which
  equals the uniform one for equal weights.

  TLlib's ``CorrelationAlignmentLoss`` differs: it returns
  ``mean((mu_s - mu_t)^2) + mean((C_s - C_t)^2)``, i.e. it adds a mean-difference term
  and normalises by ``d^2`` (resp. ``d``) instead of ``4 d^2``; see :func:`coral_tllib`.

  Two exact formulations (``method``), chosen by cost:

  * ``"covariance"``: forms the ``[d, d]`` covariances, ``O((n_s + n_t) d^2)``.
  * ``"gram"``: never forms them. With centred rows ``a_i`` of the source and ``b_j``
    of the target, ``||C_s - C_t||^2 = ||A A^T||^2 / z_s^2 + ||B B^T||^2 / z_t^2 -
    2 ||A B^T||^2 / (z_s z_t)`` from ``[n, n]`` Gram matrices, ``O((n_s + n_t)^2 d)``:
    far cheaper when ``n << d`` (a batch of 32 against 2048-d ResNet-50 features). The
    three terms cancel when the covariances are close, so in float32 the *value*
    loses relative accuracy as ``||C_s - C_t|| / ||C_s||`` shrinks (measured: ~2e-4
    relative error when the covariances differ by ~1 %, vs ~1e-7 for
    ``"covariance"``); the *gradient*, which training uses, stays within ~3e-5
    (``tests/losses/test_coral.py``). Use ``"covariance"`` to report small values.
  * ``"auto"`` (default): ``"gram"`` when ``n_s + n_t <= d / 2``, else
    ``"covariance"``.

  Args:
    source: ``[n_s, d]``, ``n_s >= 2``.
    target: ``[n_t, d]``, ``n_t >= 2`` (``n_t != n_s`` allowed).
    source_weights: optional ``[n_s]`` non-negative weights.
    target_weights: optional ``[n_t]`` non-negative weights.
    method: ``"auto"``, ``"covariance"`` or ``"gram"`` (same value up to rounding).

  Returns:
    Scalar with the dtype of the inputs.
  """
  if method not in CORAL_METHODS:
    raise ValueError(f"method must be one of {CORAL_METHODS}, got {method!r}.")
  source, target, ws, wt = _prepare(source, target, source_weights, target_weights)
  d = source.shape[1]
  if method == "gram" or (method == "auto" and 2 * (source.shape[0] + target.shape[0]) <= d):
    _, a, za = _centred(source, ws)
    _, b, zb = _centred(target, wt)
    sq = (
      _cov_inner(a, ws, a, ws) / (za * za)
      + _cov_inner(b, wt, b, wt) / (zb * zb)
      - 2.0 * _cov_inner(a, ws, b, wt) / (za * zb)
    )
    return sq / (4.0 * d * d)
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
