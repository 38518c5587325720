"""Transferability of a pretrained model to a labelled target task, without training it.

* :func:`leep` -- Log Expected Empirical Prediction (Nguyen, Hassner, Seeger & Archambeau,
  ICML 2020).
* :func:`logme` -- log of maximum label evidence (You, Liu, Wang & Long, ICML 2021).
* :func:`h_score` -- H-score (Bao, Li, Huang, Wang, Wang & Tan, ICIP 2019).

All three are higher-is-better, run under ``jax.jit`` (pass ``num_classes`` there) and keep
the input dtype.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dtl_jax import _validation as V

_EPSILON = 1e-5  # LogME: as in the authors' released code


def leep(
  source_probs: ArrayLike, target_labels: ArrayLike, *, num_classes: int | None = None
) -> jax.Array:
  """LEEP score of a pretrained source classifier for a labelled target task (higher is better).

  With ``θ(x_i) ∈ Δ^Z`` the source model's predicted distribution over its ``Z`` classes:

    ``P̂(y, z) = (1/n) Σ_{i: y_i = y} θ(x_i)_z``,  ``P̂(y | z) = P̂(y, z) / Σ_y' P̂(y', z)``,
    ``LEEP = (1/n) Σ_i log Σ_z P̂(y_i | z) θ(x_i)_z``.

  Args:
    source_probs: ``[n, Z]`` softmax outputs of the source model on the target inputs.
    target_labels: ``[n]`` integer target labels in ``[0, num_classes)``.
    num_classes: number of target classes (inferred from the labels when concrete;
      required under ``jit``).

  Returns:
    Scalar, ``≤ 0``.
  """
  theta = V.check_matrix(source_probs, "source_probs", shape_doc="[n, Z]")
  V.check_probabilities(
    theta,
    "source_probs",
    atol=1e-4,
    hint="Pass softmax(logits) over the source classes, not logits.",
  )
  y, num_classes = V.check_labels(target_labels, "target_labels", theta.shape[0], num_classes)
  return _leep(theta, y, num_classes=num_classes)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _leep(theta, y, *, num_classes):
  n = theta.shape[0]
  onehot = jax.nn.one_hot(y, num_classes, dtype=theta.dtype)  # [n, C]
  joint = onehot.T @ theta / n  # [C, Z]
  marginal = jnp.sum(joint, axis=0)  # [Z]
  cond = joint / jnp.where(marginal > 0, marginal, 1.0)  # P(y | z), [C, Z]
  eep = jnp.sum(theta * cond[y], axis=1)  # [n]
  return jnp.mean(jnp.log(eep))


LOGME_VARIANTS = ("fixed_point", "icml")
#: The released code's stopping rules: ``|t' - t| / t <= 1e-3`` (fixed point) and
#: ``|λ' - λ| / λ < 0.01`` (ICML), at most 11 iterations for both.
_LOGME_TOL = {"fixed_point": 1e-3, "icml": 0.01}
LOGME_MAX_ITERATIONS = 11


def logme(
  features: ArrayLike,
  labels: ArrayLike,
  *,
  num_classes: int | None = None,
  regression: bool = False,
  variant: str = "fixed_point",
  max_iterations: int = LOGME_MAX_ITERATIONS,
  tol: float | None = None,
) -> jax.Array:
  """LogME score of features for a target task (higher is better), as its authors compute it.

  For each target column ``y`` (one-hot column per class for classification, each output
  for regression), a Bayesian linear model ``y ~ N(F m, β⁻¹ I)``, ``m ~ N(0, α⁻¹ I)`` on the
  features ``F [n, D]``; its log evidence, maximized over ``(α, β)`` by MacKay's fixed
  point from ``α = β = 1``, divided by ``n``. The score is the mean over the columns (one
  ``vmap`` of a ``lax.while_loop``). Both of the authors' released algorithms
  (``thuml/LogME``, ``LogME.py``) are offered, each with its own stopping rule and the
  released cap of 11 iterations:

  * ``variant="fixed_point"`` (default; the released ``LogME.fit`` since the authors'
    "Ranking and Tuning Pre-trained Models", You et al., arXiv 2110.10545, JMLR 2022):
    with the SVD ``F = U diag(s) Vᵀ`` (for ``n > D``, from ``FᵀF``, keeping the ``k``
    singular values ``> 1e-10``; for ``n ≤ D``, all ``k = n``), ``σ = s²``,
    ``x = Uᵀy``, ``t = α/β``, iterate

      ``γ = Σ σ/(σ + t)``,  ``m² = Σ σ x²/(t + σ)²``,
      ``r² = Σ x²/(1 + σ/t)² + (‖y‖² − Σ x²)``,
      ``α ← γ / (m² + ε)``,  ``β ← (n − γ) / (r² + ε)``

    until ``|α/β − t| / t ≤ 1e-3``; then
    ``L = D/2 log α + n/2 log β − ½ Σ_k log(α + βσ) − β/2 r² − α/2 m² − n/2 log 2π``.
  * ``variant="icml"`` (You, Liu, Wang & Long, ICML 2021, ``LogME._fit_icml`` /
    ``each_evidence``): with ``FᵀF = V diag(σ) Vᵀ`` (all ``D`` eigenvalues), iterate

      ``γ = Σ σ/(σ + λ)``,  ``m = β V diag(1/(α + βσ)) Vᵀ Fᵀ y``,
      ``α ← γ / (mᵀm + ε)``,  ``β ← (n − γ) / (‖y − F m‖² + ε)``

    until ``λ = α/β`` changes by less than 1% relatively; then
    ``L = D/2 log α + n/2 log β − ½ Σ_D log(α + βσ) − β/2 (‖y − Fm‖² + ε) − α/2 (mᵀm + ε)
    − n/2 log 2π``.

  ``ε = 1e-5``. The two agree to about ``1e-3`` for ``n > D`` (different iterations and
  stopping rules); for ``n < D`` the fixed point sums ``log(α + βσ)`` over the ``n``
  singular values and the ICML form over all ``D`` eigenvalues (``D − n`` extra
  ``log α`` terms), so their values differ by far more, and only rankings by one variant
  are comparable.

  Args:
    features: ``[n, D]`` features of the target examples.
    labels: ``[n]`` integer labels (classification) or ``[n]`` / ``[n, K]`` real targets
      (``regression=True``).
    num_classes: number of classes (inferred from the labels when concrete).
    regression: treat ``labels`` as real-valued targets.
    variant: ``"fixed_point"`` (the authors' default) or ``"icml"``.
    max_iterations: iteration cap (the released code: 11).
    tol: relative-change stopping threshold; ``None``: the released one of ``variant``
      (``1e-3`` fixed point, ``0.01`` ICML).

  Returns:
    Scalar (average log evidence per example).
  """
  if variant not in LOGME_VARIANTS:
    raise ValueError(f"`variant` must be one of {LOGME_VARIANTS}; got {variant!r}.")
  if not isinstance(max_iterations, int) or max_iterations < 1:
    raise ValueError(f"`max_iterations` must be a positive int; got {max_iterations!r}.")
  tol = _LOGME_TOL[variant] if tol is None else tol
  V.check_positive(tol, "tol")
  f = V.check_matrix(features, "features")
  n = f.shape[0]
  if regression:
    y = V.as_float_array(labels, "labels").astype(f.dtype)
    if y.ndim == 1:
      y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
      raise ValueError(
        f"`labels` must have shape [{n}] or [{n}, K] for regression; "
        f"got {tuple(jnp.shape(labels))}."
      )
  else:
    yi, num_classes = V.check_labels(labels, "labels", n, num_classes)
    y = jax.nn.one_hot(yi, num_classes, dtype=f.dtype)
  if variant == "icml":
    return _logme_icml(f, y, max_iterations=max_iterations, tol=tol)
  return _logme_fixed_point(f, y, max_iterations=max_iterations, tol=tol)


def _log_evidence(alpha, beta, log_det, res2, m2, n, d):
  return (
    d / 2.0 * jnp.log(alpha)
    + n / 2.0 * jnp.log(beta)
    - 0.5 * log_det
    - beta / 2.0 * res2
    - alpha / 2.0 * m2
    - n / 2.0 * math.log(2.0 * math.pi)
  ) / n


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def _logme_fixed_point(f, y, *, max_iterations, tol):
  n, d = f.shape
  if n > d:  # the released truncated_svd: the SVD of FᵀF, rank-k part only
    _, sigma, vh = jnp.linalg.svd(f.T @ f)
    s = jnp.sqrt(sigma)
    keep = s > 1e-10
    u = jnp.where(keep, (f @ vh.T) / jnp.where(keep, s, 1.0), 0.0)  # [n, D], dropped: zero
    sigma = jnp.where(keep, s**2, 0.0)
  else:
    u, s, _ = jnp.linalg.svd(f, full_matrices=False)  # k = n
    keep = jnp.ones(s.shape, bool)
    sigma = s**2

  def evidence(y_col):
    x2 = (u.T @ y_col) ** 2  # [k]
    res_x2 = y_col @ y_col - jnp.sum(x2)
    one = jnp.ones((), f.dtype)

    def quantities(alpha, beta):
      t = alpha / beta
      gamma = jnp.sum(sigma / (sigma + t))
      m2 = jnp.sum(sigma * x2 / (t + sigma) ** 2)
      res2 = jnp.sum(x2 / (1.0 + sigma / t) ** 2) + res_x2
      return t, gamma, m2, res2

    def step(state):
      alpha, beta, _, _, it, _ = state
      t, gamma, m2, res2 = quantities(alpha, beta)
      alpha = gamma / (m2 + _EPSILON)
      beta = (n - gamma) / (res2 + _EPSILON)
      converged = jnp.abs(alpha / beta - t) / t <= tol
      return alpha, beta, m2, res2, it + 1, converged

    def cond(state):
      return (~state[-1]) & (state[-2] < max_iterations)

    init = (one, one, 0.0 * one, 0.0 * one, 0, False)
    alpha, beta, m2, res2, _, _ = jax.lax.while_loop(cond, step, init)
    log_det = jnp.sum(jnp.where(keep, jnp.log(alpha + beta * sigma), 0.0))
    return _log_evidence(alpha, beta, log_det, res2, m2, n, d)

  return jnp.mean(jax.vmap(evidence, in_axes=1)(y))


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def _logme_icml(f, y, *, max_iterations, tol):
  n, d = f.shape
  sigma, v = jnp.linalg.eigh(f.T @ f)
  sigma = jnp.maximum(sigma, 0.0)

  def evidence(y_col):
    tmp = v.T @ (f.T @ y_col)  # [D]
    one = jnp.ones((), f.dtype)

    def step(state):
      alpha, beta, lam, _, _, it, _ = state
      gamma = jnp.sum(sigma / (sigma + lam))
      m = v @ (tmp * beta / (alpha + beta * sigma))
      alpha_de = m @ m
      alpha = gamma / (alpha_de + _EPSILON)
      beta_de = jnp.sum((y_col - f @ m) ** 2)
      beta = (n - gamma) / (beta_de + _EPSILON)
      new_lam = alpha / beta
      converged = jnp.abs(new_lam - lam) / lam < tol
      return alpha, beta, jnp.where(converged, lam, new_lam), alpha_de, beta_de, it + 1, converged

    def cond(state):
      return (~state[-1]) & (state[-2] < max_iterations)

    init = (one, one, one, 0.0 * one, 0.0 * one, 0, False)
    alpha, beta, _, alpha_de, beta_de, _, _ = jax.lax.while_loop(cond, step, init)
    log_det = jnp.sum(jnp.log(alpha + beta * sigma))
    return _log_evidence(alpha, beta, log_det, beta_de + _EPSILON, alpha_de + _EPSILON, n, d)

  return jnp.mean(jax.vmap(evidence, in_axes=1)(y))


def h_score(
  features: ArrayLike,
  labels: ArrayLike,
  *,
  num_classes: int | None = None,
  rtol: float | None = None,
) -> jax.Array:
  """H-score of features for a labelled target task (higher is better).

    ``H(f) = tr( cov(f)⁺ · cov(E[f | y]) )``

  where ``cov`` is the sample covariance (``1/(n−1)``) over the ``n`` examples,
  ``E[f | y]`` replaces each example's feature by its class mean, and ``⁺`` is the
  pseudo-inverse (as in the authors' code).

  Args:
    features: ``[n, d]`` features of the target examples (n ≥ 2).
    labels: ``[n]`` integer labels in ``[0, num_classes)``.
    num_classes: inferred from the labels when concrete; required under ``jit``.
    rtol: relative cut-off of the pseudo-inverse (``jnp.linalg.pinv``'s default if None).

  Returns:
    Scalar in ``[0, d]``.
  """
  f = V.check_matrix(features, "features", min_rows=2)
  y, num_classes = V.check_labels(labels, "labels", f.shape[0], num_classes)
  return _h_score(f, y, num_classes=num_classes, rtol=rtol)


def _cov(x):
  xc = x - jnp.mean(x, axis=0, keepdims=True)
  return xc.T @ xc / (x.shape[0] - 1)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _h_score(f, y, *, num_classes, rtol):
  sums = jax.ops.segment_sum(f, y, num_segments=num_classes)  # [C, d]
  counts = jax.ops.segment_sum(jnp.ones_like(f[:, 0]), y, num_segments=num_classes)
  means = sums / jnp.maximum(counts, 1.0)[:, None]
  g = means[y]
  return jnp.trace(jnp.linalg.pinv(_cov(f), rtol=rtol) @ _cov(g))
