"""Wasserstein distance guided representation learning (WDGRL) and sliced Wasserstein.

Shen et al., "Wasserstein Distance Guided Representation Learning for Domain
Adaptation", AAAI 2018. A domain critic :math:`f_w` estimates the Wasserstein-1
distance between feature distributions; the critic maximises
``wasserstein_critic_loss - gp_weight * gradient_penalty`` and the feature extractor
minimises ``wasserstein_critic_loss``.

:func:`sliced_wasserstein` is the critic-free alternative: the mean over random 1-D
projections of the closed-form 1-D optimal transport cost.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from dtl_jax import _validation as V


def _critic_values(x, name: str) -> jax.Array:
  x = V.as_float_array(x, name)
  if not (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)):
    raise ValueError(
      f"`{name}` must be critic outputs of shape [n] or [n, 1], got shape {tuple(x.shape)}."
    )
  V.check_nonempty(x, name)
  return x.reshape(x.shape[0])


def wasserstein_critic_loss(
  critic_source: jax.typing.ArrayLike,
  critic_target: jax.typing.ArrayLike,
  *,
  source_weights: jax.typing.ArrayLike | None = None,
  target_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""WDGRL's domain critic loss :math:`\mathcal{L}_{wd}` (Shen et al., AAAI 2018, Eq. 4).

  .. math::
      \mathcal{L}_{wd} = \frac1{n_s}\sum_i w^s_i f_w(h^s_i) - \frac1{n_t}\sum_j w^t_j f_w(h^t_j)

  the empirical Kantorovich-Rubinstein estimate of :math:`W_1` when :math:`f_w` is
  1-Lipschitz. The critic *maximises* :math:`\mathcal{L}_{wd} - \gamma\,\mathcal{L}_{grad}`
  (so its optimiser minimises the negative); the features minimise
  :math:`\mathcal{L}_{wd}`.

  Args:
    critic_source: critic outputs on source features, ``[n_s]`` or ``[n_s, 1]``.
    critic_target: critic outputs on target features, ``[n_t]`` or ``[n_t, 1]``.
    source_weights: optional ``[n_s]`` weights.
    target_weights: optional ``[n_t]`` weights.

  Returns:
    Scalar estimate (may be negative for a poor critic).
  """
  cs = _critic_values(critic_source, "critic_source")
  ct = _critic_values(critic_target, "critic_target")
  ws = V.check_weights(source_weights, "source_weights", cs.shape[0], cs.dtype)
  wt = V.check_weights(target_weights, "target_weights", ct.shape[0], ct.dtype)
  return V.weighted_mean(cs, ws) - V.weighted_mean(ct, wt)


def _paired(source, target) -> tuple[jax.Array, jax.Array]:
  s = V.as_float_array(source, "source")
  t = V.as_float_array(target, "target")
  V.check_rank(s, "source", (2,), "[n, d]")
  V.check_rank(t, "target", (2,), "[n, d]")
  V.check_nonempty(s, "source")
  if s.shape[0] != t.shape[0]:
    raise ValueError(
      "`source` and `target` must have the same batch size (examples are "
      f"paired), got {s.shape[0]} and {t.shape[0]}."
    )
  if s.shape[1] != t.shape[1]:
    raise ValueError(
      "`source` and `target` must have the same feature dimension, got "
      f"{s.shape[1]} and {t.shape[1]}."
    )
  return s, t.astype(s.dtype)


def _safe_norm(x: jax.Array) -> jax.Array:
  """Row-wise Euclidean norm with a finite (zero) gradient at 0."""
  sq = jnp.sum(x * x, axis=-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def gradient_penalty(
  critic_fn: Callable[[jax.Array], jax.Array],
  source: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  *,
  key: jax.Array,
) -> jax.Array:
  r"""Gradient penalty on random interpolates (Gulrajani et al., NeurIPS 2017; WDGRL Eq. 5).

  .. math::
      \hat h_i = \alpha_i h^s_i + (1 - \alpha_i) h^t_i,\ \ \alpha_i \sim U[0, 1], \qquad
      \mathcal{L}_{grad} = \frac1n \sum_i
          \big(\lVert \nabla_{\hat h} f_w(\hat h_i) \rVert_2 - 1\big)^2

  The input gradient is taken with ``jax.grad`` of ``sum(critic_fn(h))``, so
  ``critic_fn`` must act on each row independently (no batch statistics); the penalty
  is differentiable with respect to anything ``critic_fn`` closes over (double
  backprop). :math:`\alpha` is ``jax.random.uniform(key, (n, 1), dtype)``.

  Args:
    critic_fn: maps features ``[n, d]`` to critic outputs ``[n]`` or ``[n, 1]``.
    source: source features ``[n, d]``.
    target: target features ``[n, d]`` (same ``n``: examples are paired).
    key: PRNG key for the interpolation coefficients.

  Returns:
    Scalar penalty.
  """
  s, t = _paired(source, target)
  alpha = jax.random.uniform(key, (s.shape[0], 1), s.dtype)
  interpolates = alpha * s + (1.0 - alpha) * t

  def total_critic(h):
    out = jnp.asarray(critic_fn(h))
    if out.shape not in ((h.shape[0],), (h.shape[0], 1)):
      raise ValueError(
        f"`critic_fn` must return shape [n] or [n, 1] for input {h.shape}, got {out.shape}."
      )
    return jnp.sum(out)

  grads = jax.grad(total_critic)(interpolates)
  return jnp.mean((_safe_norm(grads) - 1.0) ** 2)


def sliced_wasserstein(
  source: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  *,
  key: jax.Array | None = None,
  num_projections: int = 128,
  projections: jax.typing.ArrayLike | None = None,
  p: float = 2.0,
) -> jax.Array:
  r"""Sliced Wasserstein discrepancy (Rabin et al., 2011; Bonneel et al., 2015).

  .. math::
      SW_p^p(\mu_s, \mu_t) = \frac1L \sum_{l=1}^{L} \frac1n \sum_{i=1}^{n}
        \big| (X_s\theta_l)_{(i)} - (X_t\theta_l)_{(i)} \big|^p

  where :math:`\theta_l` are unit directions drawn uniformly on the sphere and
  :math:`(\cdot)_{(i)}` is the i-th smallest value (1-D optimal transport of two
  empirical measures with ``n`` equal-mass points sorts both). Returns the p-th power
  :math:`SW_p^p` (smooth at 0, a convenient loss; take ``** (1 / p)`` for the distance),
  like ott-jax's ``sliced_wasserstein`` for the squared Euclidean cost.

  Args:
    source: ``[n, d]``.
    target: ``[n, d]`` (same ``n``).
    key: PRNG key for the directions: ``normal(key, (d, L))`` normalised per column
      (exclusive with ``projections``).
    num_projections: ``L`` when drawing from ``key``.
    projections: explicit directions ``[d, L]`` (used as given, not normalised).
    p: exponent (>= 1).

  Returns:
    Scalar :math:`SW_p^p`.
  """
  s, t = _paired(source, target)
  if p < 1:
    raise ValueError(f"`p` must be >= 1, got {p!r}.")
  if key is not None and projections is None:
    if not isinstance(num_projections, int) or num_projections <= 0:
      raise ValueError(f"`num_projections` must be a positive int, got {num_projections!r}.")
    theta = jax.random.normal(key, (s.shape[1], num_projections), s.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
  elif projections is not None and key is None:
    theta = V.as_float_array(projections, "projections")
    if theta.ndim != 2 or theta.shape[0] != s.shape[1]:
      raise ValueError(
        f"`projections` must have shape [d={s.shape[1]}, L], got {tuple(theta.shape)}."
      )
    theta = theta.astype(s.dtype)
  else:
    raise ValueError("Pass exactly one of `key` and `projections` to sliced_wasserstein.")
  proj_s = jnp.sort(s @ theta, axis=0)
  proj_t = jnp.sort(t @ theta, axis=0)
  return jnp.mean(jnp.abs(proj_s - proj_t) ** p)


__all__ = ["wasserstein_critic_loss", "gradient_penalty", "sliced_wasserstein"]
