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


def logme(
  features: ArrayLike,
  labels: ArrayLike,
  *,
  num_classes: int | None = None,
  regression: bool = False,
  max_iterations: int = 100,
  tol: float = 0.01,
) -> jax.Array:
  """LogME score of features for a target task (higher is better).

  For each target column ``y`` (one-hot column per class for classification, each output
  for regression), a Bayesian linear model ``y ~ N(F m, β⁻¹ I)``, ``m ~ N(0, α⁻¹ I)`` on the
  features ``F [n, D]``. The evidence is maximized over ``(α, β)`` by MacKay's fixed point,
  exactly as in the authors' released algorithm (``LogME.each_evidence``): with the
  eigen-decomposition ``FᵀF = V diag(σ) Vᵀ``, iterate

    ``γ = Σ σ_k / (σ_k + α/β)``,  ``m = β V diag(1/(α + βσ)) Vᵀ Fᵀ y``,
    ``α ← γ / (mᵀm + ε)``,  ``β ← (n − γ) / (‖y − F m‖² + ε)``

  until ``α/β`` changes by less than ``tol`` relatively (at most ``max_iterations``), then

    ``L = D/2 log α + n/2 log β − ½ Σ log(α + βσ_k) − β/2 ‖y − Fm‖² − α/2 mᵀm − n/2 log 2π``.

  The score is the mean of ``L / n`` over the target columns; the columns run in one
  ``vmap`` of a ``lax.while_loop``.

  Args:
    features: ``[n, D]`` features of the target examples.
    labels: ``[n]`` integer labels (classification) or ``[n]`` / ``[n, K]`` real targets
      (``regression=True``).
    num_classes: number of classes (inferred from the labels when concrete).
    regression: treat ``labels`` as real-valued targets.
    max_iterations, tol: fixed-point stopping rule (the released code uses 100 and 0.01).

  Returns:
    Scalar (average log evidence per example).
  """
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
  return _logme(f, y, max_iterations=max_iterations, tol=tol)


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def _logme(f, y, *, max_iterations, tol):
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
    ev = (
      d / 2.0 * jnp.log(alpha)
      + n / 2.0 * jnp.log(beta)
      - 0.5 * jnp.sum(jnp.log(alpha + beta * sigma))
      - beta / 2.0 * (beta_de + _EPSILON)
      - alpha / 2.0 * (alpha_de + _EPSILON)
      - n / 2.0 * math.log(2.0 * math.pi)
    )
    return ev / n

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
