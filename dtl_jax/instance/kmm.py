"""Kernel mean matching (Huang, Smola, Gretton, Borgwardt & Schölkopf, NIPS 2006/2007).

Source importance weights ``w ≈ p_T(x) / p_S(x)`` that make the weighted source kernel
mean match the target kernel mean in the RKHS:

  minimize_w  ½ wᵀ K w − κᵀ w
  subject to  0 ≤ w_i ≤ B,   |Σ_i w_i − n_s| ≤ n_s ε,

with ``K_ij = k(x_i, x_j)`` over source points and
``κ_i = (n_s / n_t) Σ_j k(x_i, x'_j)`` (target points ``x'``); up to a constant this is
``n_s²/2 · MMD²`` between the ``w``-weighted source and the target. Solved in JAX by
accelerated projected gradient (FISTA) with step ``1/λ_max(K)``; the projection onto
the box ∩ slab is ``clip(v − λ, 0, B)`` with the scalar ``λ`` found by bisection.

The weights plug into ``source_weights`` of the discrepancy losses (mean-one
convention) and into the ``instance_weighted`` method.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dtl_jax import _validation as V
from dtl_jax.losses import kernels


def project_box_sum(
  v: jax.Array, *, upper: float, sum_low, sum_high, num_bisection: int = 100
) -> jax.Array:
  """Euclidean projection of ``v [n]`` onto ``{w : 0 ≤ w ≤ upper, sum_low ≤ Σw ≤ sum_high}``.

  The KKT conditions give ``w = clip(v − λ, 0, upper)`` with ``λ = 0`` when that already
  satisfies the sum constraint, else ``λ`` solving ``Σ clip(v − λ, 0, upper) = bound`` for
  the violated bound (monotone in λ, found by bisection). Requires
  ``sum_low ≤ n·upper``.
  """

  def s(lam):
    return jnp.sum(jnp.clip(v - lam, 0.0, upper))

  total = s(0.0)
  target = jnp.where(total > sum_high, sum_high, sum_low)
  lo = jnp.min(v) - upper  # s(lo) = n * upper  (largest)
  hi = jnp.max(v)  # s(hi) = 0

  def body(_, bounds):
    a, b = bounds
    mid = 0.5 * (a + b)
    too_big = s(mid) > target
    return jnp.where(too_big, mid, a), jnp.where(too_big, b, mid)

  a, b = jax.lax.fori_loop(0, num_bisection, body, (lo, hi))
  lam = jnp.where((total >= sum_low) & (total <= sum_high), 0.0, 0.5 * (a + b))
  return jnp.clip(v - lam, 0.0, upper)


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def kmm_solve(
  k_ss: jax.Array, kappa: jax.Array, *, upper: float, epsilon: float, num_iterations: int = 1000
) -> jax.Array:
  """Solves the KMM QP for a given source Gram ``k_ss [n, n]`` and ``kappa [n]`` (FISTA)."""
  n = k_ss.shape[0]
  lipschitz = jnp.maximum(jnp.linalg.eigvalsh(k_ss)[-1], jnp.finfo(k_ss.dtype).tiny)
  lo, hi = n * (1.0 - epsilon), n * (1.0 + epsilon)
  project = functools.partial(project_box_sum, upper=upper, sum_low=lo, sum_high=hi)
  w0 = project(jnp.ones((n,), k_ss.dtype))

  def body(_, carry):
    w, y, t = carry
    w_new = project(y - (k_ss @ y - kappa) / lipschitz)
    t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
    y_new = w_new + ((t - 1.0) / t_new) * (w_new - w)
    return w_new, y_new, t_new

  w, _, _ = jax.lax.fori_loop(0, num_iterations, body, (w0, w0, jnp.ones((), k_ss.dtype)))
  return w


def kmm_weights(
  source: ArrayLike,
  target: ArrayLike,
  *,
  sigma2: float | None = None,
  upper: float = 1000.0,
  epsilon: float | None = None,
  num_iterations: int = 1000,
) -> jax.Array:
  """Kernel-mean-matching importance weights for the source examples.

  Args:
    source: source features ``[n_s, d]``.
    target: target features ``[n_t, d]``.
    sigma2: Gaussian bandwidth σ² in ``k(x, y) = exp(−‖x − y‖²/(2σ²))``; default: the
      median heuristic (:func:`dtl_jax.losses.kernels.median_heuristic`) of the pooled sample.
    upper: the box bound ``B`` (``0 ≤ w ≤ B``); must be ≥ 1.
    epsilon: the slack ``ε`` of ``|mean(w) − 1| ≤ ε``; default ``(√n_s − 1)/√n_s`` (Huang et al.).
    num_iterations: FISTA iterations.

  Returns:
    Weights ``[n_s]`` in the dtype of ``source``.
  """
  xs = V.check_matrix(source, "source")
  xt = V.check_matrix(target, "target").astype(xs.dtype)
  V.check_same_dim(xs, "source", xt, "target")
  n_s = xs.shape[0]
  if epsilon is None:
    epsilon = (math.sqrt(n_s) - 1.0) / math.sqrt(n_s)
  if not epsilon >= 0:
    raise ValueError(f"`epsilon` must be >= 0; got {epsilon}.")
  if not upper >= 1.0:
    raise ValueError(
      f"`upper` (the bound B) must be >= 1 so that mean(w) = 1 is feasible; got {upper}."
    )
  if sigma2 is not None and not (math.isfinite(sigma2) and sigma2 > 0):
    raise ValueError(f"`sigma2` must be a finite positive bandwidth; got {sigma2}.")
  return _kmm(xs, xt, sigma2, upper=upper, epsilon=epsilon, num_iterations=num_iterations)


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def _kmm(xs, xt, sigma2, *, upper, epsilon, num_iterations):
  n_s, n_t = xs.shape[0], xt.shape[0]
  pooled = jnp.concatenate([xs, xt])
  d = kernels.pairwise_sq_distances(pooled, pooled)
  s2 = kernels.median_heuristic(pooled) if sigma2 is None else jnp.asarray(sigma2, xs.dtype)
  k = kernels.gaussian_kernels(d, s2)
  k_ss, k_st = k[:n_s, :n_s], k[:n_s, n_s:]
  kappa = (n_s / n_t) * jnp.sum(k_st, axis=1)
  return kmm_solve(k_ss, kappa, upper=upper, epsilon=epsilon, num_iterations=num_iterations)
