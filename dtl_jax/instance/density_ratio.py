"""Importance weights ``w(x) ≈ p_T(x) / p_S(x)`` for source examples.

* :func:`domain_classifier_weights` -- a probabilistic domain classifier, calibrated on
  held-out data (Platt scaling), ``w = p(target | x) / p(source | x)`` with balanced
  classes, clipped and renormalized (Bickel, Brückner & Scheffer, ICML 2007).
* :func:`kliep_weights` -- KLIEP (Sugiyama, Nakajima, Kashima, von Bünau & Kawanabe,
  NIPS 2007 / AISM 2008): a Gaussian-kernel model ``w(x) = Σ_l α_l k(x, c_l)`` centred on
  target points, fitted by maximizing ``Σ_j log w(x'_j)`` over target points subject to
  ``mean_i w(x_i) = 1`` over source points and ``α ≥ 0``.

The returned weights have mean one over the source sample (the convention of the losses'
``source_weights`` and of the ``instance_weighted`` method).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dtl_jax import _validation as V
from dtl_jax.instance import learners
from dtl_jax.losses import kernels


def _split(key, n: int, fraction: float):
  """Random split of ``range(n)`` into (train, held-out) index arrays, held-out ≥ 1, train ≥ 1."""
  perm = jax.random.permutation(key, n)
  n_held = min(max(1, int(round(fraction * n))), n - 1)
  return perm[n_held:], perm[:n_held]


@functools.partial(
  jax.jit, static_argnames=("classifier", "hidden_sizes", "num_steps", "calibration_fraction")
)
def _domain_logits(key, xs, xt, *, classifier, hidden_sizes, num_steps, calibration_fraction, l2):
  n_s, n_t = xs.shape[0], xt.shape[0]
  k_s, k_t, k_init = jax.random.split(key, 3)
  tr_s, ca_s = _split(k_s, n_s, calibration_fraction)
  tr_t, ca_t = _split(k_t, n_t, calibration_fraction)

  def balanced(a, b):  # each domain gets half of the total weight
    return jnp.concatenate([jnp.full((a,), 0.5 / a, xs.dtype), jnp.full((b,), 0.5 / b, xs.dtype)])

  x_tr = jnp.concatenate([xs[tr_s], xt[tr_t]])
  y_tr = jnp.concatenate([jnp.zeros(tr_s.shape, jnp.int32), jnp.ones(tr_t.shape, jnp.int32)])
  w_tr = balanced(tr_s.shape[0], tr_t.shape[0])
  if classifier == "logistic":
    params = learners.fit_logistic_regression(
      x_tr, y_tr, w_tr, num_classes=2, l2=l2, num_steps=num_steps
    )
    logit_fn = lambda x: learners.logistic_regression_logits(params, x)
  else:
    params = learners.fit_mlp(
      k_init,
      x_tr,
      y_tr,
      w_tr,
      hidden_sizes=hidden_sizes,
      num_outputs=2,
      task="classification",
      l2=l2,
      num_steps=num_steps,
    )
    model = learners.MLP(hidden_sizes, 2)
    logit_fn = lambda x: model.apply(params, x)

  def log_odds(x):
    z = logit_fn(x)
    return z[:, 1] - z[:, 0]

  # Platt scaling on the held-out part: p(target | x) = σ(a · z(x) + b).
  z_ca = jnp.concatenate([log_odds(xs[ca_s]), log_odds(xt[ca_t])])[:, None]
  y_ca = jnp.concatenate([jnp.zeros(ca_s.shape, jnp.int32), jnp.ones(ca_t.shape, jnp.int32)])
  platt = learners.fit_logistic_regression(
    z_ca, y_ca, balanced(ca_s.shape[0], ca_t.shape[0]), num_classes=2, l2=0.0, num_steps=num_steps
  )
  a = platt["w"][0, 1] - platt["w"][0, 0]
  b = platt["b"][1] - platt["b"][0]
  return a * log_odds(xs) + b


def domain_classifier_weights(
  source: ArrayLike,
  target: ArrayLike,
  *,
  key: jax.Array,
  classifier: str = "logistic",
  hidden_sizes: tuple[int, ...] = (32,),
  calibration_fraction: float = 0.3,
  max_weight: float = 20.0,
  l2: float = 1e-3,
  num_steps: int = 300,
) -> jax.Array:
  """Density-ratio weights from a calibrated source-vs-target classifier.

  A classifier ``p(target | x)`` is trained on ``1 − calibration_fraction`` of each domain
  with the two domains weighted equally (so the class prior is ½), calibrated by Platt
  scaling ``σ(a·z + b)`` on the held-out rest, and then

    ``w(x_i) = p(target | x_i) / p(source | x_i) = exp(a·z(x_i) + b)``,

  clipped to ``[0, max_weight]`` and renormalized to mean one over the source.

  Args:
    source: ``[n_s, d]`` (n_s ≥ 2); target: ``[n_t, d]`` (n_t ≥ 2).
    key: PRNG key for the split (and the MLP init).
    classifier: ``"logistic"`` (linear log-ratio) or ``"mlp"``.
    hidden_sizes: MLP hidden widths.
    calibration_fraction: share of each domain held out for calibration.
    max_weight: clip before renormalization (large ratios blow up the variance).

  Returns:
    Weights ``[n_s]``, mean one.
  """
  xs = V.check_matrix(source, "source", min_rows=2)
  xt = V.check_matrix(target, "target", min_rows=2).astype(xs.dtype)
  V.check_same_dim(xs, "source", xt, "target")
  if classifier not in ("logistic", "mlp"):
    raise ValueError(f"`classifier` must be 'logistic' or 'mlp'; got {classifier!r}.")
  if not 0.0 < calibration_fraction < 1.0:
    raise ValueError(f"`calibration_fraction` must be in (0, 1); got {calibration_fraction}.")
  if not max_weight > 0:
    raise ValueError(f"`max_weight` must be > 0; got {max_weight}.")
  log_ratio = _domain_logits(
    key,
    xs,
    xt,
    classifier=classifier,
    hidden_sizes=tuple(hidden_sizes),
    num_steps=num_steps,
    calibration_fraction=calibration_fraction,
    l2=l2,
  )
  w = jnp.clip(jnp.exp(jnp.minimum(log_ratio, jnp.log(max_weight))), 0.0, max_weight)
  return w / jnp.mean(w)


# --------------------------------------------------------------------------------------
# KLIEP
# --------------------------------------------------------------------------------------

KLIEP_STEP_SIZES = tuple(10.0**p for p in range(3, -4, -1))  # 1e3, 1e2, ..., 1e-3
KLIEP_BANDWIDTH_MULTIPLIERS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


@functools.partial(jax.jit, static_argnames=("max_iterations",))
def kliep_fit(
  a: jax.Array,
  b: jax.Array,
  *,
  step_sizes: jax.Array,
  max_iterations: int = 100,
  row_mask: jax.Array | None = None,
) -> jax.Array:
  """KLIEP's projected gradient ascent for the coefficients ``α [b]``.

  The algorithm of Sugiyama et al. (2008), Fig. 2.

  With ``A_jl = k(x'_j, c_l)`` ``[n_t, b]`` (target points × centres) and
  ``b_l = mean_i k(x_i, c_l)`` ``[b]`` (source), each step is
  ``α ← α + η Aᵀ(1 / Aα)``; ``α ← α + (1 − bᵀα) b / (bᵀb)``; ``α ← max(0, α)``;
  ``α ← α / (bᵀα)``. As in the authors' reference code, ``η`` runs over ``step_sizes``
  (large to small) and for each ``η`` the steps continue (at most ``max_iterations``) while
  the objective ``mean_j log (Aα)_j`` increases; a step that does not increase it is rejected.
  ``row_mask`` ``[n_t]`` (0/1) restricts the objective to some target rows (cross-validation).
  """
  mask = jnp.ones((a.shape[0],), a.dtype) if row_mask is None else row_mask.astype(a.dtype)

  def project(alpha):
    alpha = alpha + (1.0 - b @ alpha) * b / (b @ b)
    alpha = jnp.maximum(0.0, alpha)
    return alpha / (b @ alpha)

  def score(alpha):
    return jnp.sum(mask * jnp.log(a @ alpha)) / jnp.sum(mask)

  def stage(alpha, eta):
    def cond(state):
      _, _, it, improving = state
      return improving & (it < max_iterations)

    def body(state):
      alpha, s, it, _ = state
      new = project(alpha + eta * (a.T @ (mask / (a @ alpha))))
      s_new = score(new)
      better = s_new > s
      return jnp.where(better, new, alpha), jnp.where(better, s_new, s), it + 1, better

    alpha, _, _, _ = jax.lax.while_loop(cond, body, (alpha, score(alpha), 0, True))
    return alpha, None

  alpha0 = project(jnp.ones((a.shape[1],), a.dtype))
  alpha, _ = jax.lax.scan(stage, alpha0, step_sizes)
  return alpha


def kliep_weights(
  source: ArrayLike,
  target: ArrayLike,
  *,
  key: jax.Array | None = None,
  sigma2: float | Sequence[float] | None = None,
  num_centers: int = 100,
  num_folds: int = 5,
  max_iterations: int = 100,
) -> jax.Array:
  """KLIEP importance weights ``w(x_i) = Σ_l α_l exp(−‖x_i − c_l‖²/(2σ²))`` for the source.

  The bandwidth is chosen as in the paper by likelihood cross-validation: the target
  points are split into ``num_folds`` folds, KLIEP is fitted on all folds but one, and the
  σ² with the largest mean held-out ``log ŵ(x')`` wins; all candidates and folds run in
  one ``vmap``. The final weights are refitted on all target points.

  Args:
    source: ``[n_s, d]``; target: ``[n_t, d]`` (n_t ≥ num_folds for cross-validation).
    key: PRNG key choosing ``num_centers`` centres among the target points and the folds.
      Without a key all target points are centres (``n_t ≤ num_centers`` is then required)
      and folds are interleaved (``j mod num_folds``).
    sigma2: a fixed σ² (no cross-validation), a sequence of candidates, or None for the
      candidates ``m · median_heuristic`` with ``m`` in ``KLIEP_BANDWIDTH_MULTIPLIERS``.
    num_centers: number of Gaussian centres ``b``.
    num_folds: cross-validation folds.
    max_iterations: iteration cap per step size (see :func:`kliep_fit`).

  Returns:
    Weights ``[n_s]`` with ``mean(w) = 1`` over the source (KLIEP's constraint).
  """
  xs = V.check_matrix(source, "source")
  xt = V.check_matrix(target, "target").astype(xs.dtype)
  V.check_same_dim(xs, "source", xt, "target")
  if num_centers < 1:
    raise ValueError(f"`num_centers` must be >= 1; got {num_centers}.")
  n_t = xt.shape[0]
  fixed = sigma2 is not None and np.ndim(sigma2) == 0
  if fixed:
    if not float(np.asarray(sigma2)) > 0:
      raise ValueError(f"`sigma2` must be a positive bandwidth; got {sigma2}.")
    candidates = None
  else:
    if sigma2 is not None:
      candidates = jnp.asarray(sigma2, xs.dtype)
      if candidates.ndim != 1 or candidates.shape[0] < 1 or not bool(jnp.all(candidates > 0)):
        raise ValueError(
          "`sigma2` candidates must be a non-empty 1-D sequence of positive "
          f"bandwidths; got {sigma2}."
        )
    else:
      candidates = None
    if not 2 <= num_folds <= n_t:
      raise ValueError(
        f"`num_folds` must be in [2, n_t={n_t}] for cross-validation; got {num_folds}."
      )
  if n_t > num_centers:
    if key is None:
      raise ValueError("`key` is required to choose the KLIEP centres when n_t > num_centers.")
    k_c, k_f = jax.random.split(key)
    centres = xt[jax.random.choice(k_c, n_t, (num_centers,), replace=False)]
  else:
    centres = xt
    k_f = key
  folds = (jnp.arange(n_t) if k_f is None else jax.random.permutation(k_f, n_t)) % num_folds
  return _kliep(
    xs,
    xt,
    centres,
    sigma2 if fixed else candidates,
    folds,
    fixed=fixed,
    num_folds=num_folds,
    max_iterations=max_iterations,
  )


@functools.partial(jax.jit, static_argnames=("fixed", "num_folds", "max_iterations"))
def _kliep(xs, xt, centres, sigma2, folds, *, fixed, num_folds, max_iterations):
  steps = jnp.asarray(KLIEP_STEP_SIZES, xs.dtype)
  d_t = kernels.pairwise_sq_distances(xt, centres)
  d_s = kernels.pairwise_sq_distances(xs, centres)

  def fit(s2, mask=None):
    a = kernels.gaussian_kernels(d_t, s2)
    k_s = kernels.gaussian_kernels(d_s, s2)
    alpha = kliep_fit(
      a, jnp.mean(k_s, axis=0), step_sizes=steps, max_iterations=max_iterations, row_mask=mask
    )
    return a, k_s, alpha

  if not fixed:
    if sigma2 is None:
      sigma2 = kernels.median_heuristic(jnp.concatenate([xs, xt])) * jnp.asarray(
        KLIEP_BANDWIDTH_MULTIPLIERS, xs.dtype
      )

    def held_out_score(s2, fold):
      a, _, alpha = fit(s2, folds != fold)
      held = folds == fold
      return jnp.sum(jnp.where(held, jnp.log(a @ alpha), 0.0)) / jnp.sum(held)

    scores = jax.vmap(lambda s2: jax.vmap(lambda f: held_out_score(s2, f))(jnp.arange(num_folds)))(
      sigma2
    )  # [num_candidates, num_folds]
    sigma2 = sigma2[jnp.argmax(jnp.mean(scores, axis=1))]
  _, k_s, alpha = fit(sigma2)
  return k_s @ alpha
