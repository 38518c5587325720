"""TrAdaBoost (Dai et al., ICML 2007) and TrAdaBoost.R2 (Pardoe & Stone, ICML 2010).

Boosting over the union of ``n`` labelled source ("diff-distribution") examples and
``m`` labelled target ("same-distribution") examples. Each round trains the base learner
on the weighted union, measures its weighted error on the target part only, and then

* multiplies the weight of every misfit *source* example by ``β^{e_i}`` with the fixed
  ``β = 1 / (1 + √(2 ln n / N))`` (source examples that disagree with the target fade),
* multiplies the weight of every misfit *target* example by ``β_t^{-e_i}`` with
  ``β_t = ε_t / (1 − ε_t)`` (AdaBoost on the target),

where ``e_i ∈ [0, 1]`` is the example's error (0/1 for classification, the adjusted
AdaBoost.R2 error for regression) and ``N`` the number of rounds. The final model is a
vote over the second half of the rounds (``t ≥ ⌈N/2⌉``) with weights ``ln(1/β_t)``:
the paper's ``Π β_t^{-h_t(x)} ≥ Π β_t^{-1/2}`` rule for binary labels, a weighted median
of the ``h_t(x)`` for regression.

Base learners: any object with ``fit(x, y, sample_weight)`` and ``predict(x)``, e.g.
:class:`dtl_jax.instance.LogisticRegression`, :class:`~dtl_jax.instance.MLPClassifier`,
:class:`~dtl_jax.instance.RidgeRegression`, or a scikit-learn estimator. The learner is
cloned each round; one without ``sample_weight`` support is rejected up front.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dtl_jax import _validation as V


class BoostingUpdate(NamedTuple):
  """One round of the TrAdaBoost weight update."""

  source_weights: jax.Array  # [n]
  target_weights: jax.Array  # [m]
  error: jax.Array  # ε_t (after clipping), scalar
  beta_t: jax.Array  # ε_t / (1 − ε_t), scalar


def tradaboost_beta(num_source: int, num_rounds: int) -> float:
  """The fixed source factor ``β = 1 / (1 + √(2 ln n / N))`` of Dai et al. (2007)."""
  if num_source < 1:
    raise ValueError(f"`num_source` must be >= 1; got {num_source}.")
  if num_rounds < 1:
    raise ValueError(f"`num_rounds` must be >= 1; got {num_rounds}.")
  return 1.0 / (1.0 + math.sqrt(2.0 * math.log(num_source) / num_rounds))


@jax.jit
def tradaboost_update(
  source_weights: jax.Array,
  target_weights: jax.Array,
  source_errors: jax.Array,
  target_errors: jax.Array,
  *,
  beta: float,
  min_error: float = 1e-10,
  max_error: float = 0.5,
) -> BoostingUpdate:
  """One TrAdaBoost round of weight updates (Dai et al. 2007, Algorithm 1, steps 3-5).

  ``ε_t = Σ_{i∈T} w_i e_i / Σ_{i∈T} w_i`` (clipped to ``[min_error, max_error]``; the paper
  requires ``ε_t < 1/2``, and ``ε_t = 1/2`` makes the round a no-op with zero vote),
  ``β_t = ε_t / (1 − ε_t)``,
  ``w_i ← w_i β^{e_i}`` for source examples and ``w_i ← w_i β_t^{−e_i}`` for target ones.
  The returned weights are renormalized to sum to one over source and target together
  (the algorithm only ever uses ``w / Σw``).

  Args:
    source_weights: ``[n]``; target_weights: ``[m]`` (non-negative).
    source_errors: ``[n]``; target_errors: ``[m]``, per-example errors in ``[0, 1]``.
    beta: the source factor, see :func:`tradaboost_beta`.

  Returns:
    :class:`BoostingUpdate`.
  """
  eps = jnp.sum(target_weights * target_errors) / jnp.sum(target_weights)
  eps = jnp.clip(eps, min_error, max_error)
  beta_t = eps / (1.0 - eps)
  ws = source_weights * jnp.power(beta, source_errors)
  wt = target_weights * jnp.power(beta_t, -target_errors)
  z = jnp.sum(ws) + jnp.sum(wt)
  return BoostingUpdate(ws / z, wt / z, eps, beta_t)


def check_supports_sample_weight(learner: Any, name: str = "learner") -> None:
  """Raises ``ValueError`` unless ``learner`` has ``fit(x, y, sample_weight=...)``, ``predict``."""
  fit = getattr(learner, "fit", None)
  if not callable(fit) or not callable(getattr(learner, "predict", None)):
    raise ValueError(
      f"`{name}` must have fit(x, y, sample_weight) and predict(x) methods; "
      f"got {type(learner).__name__}."
    )
  try:
    params = inspect.signature(fit).parameters
  except (TypeError, ValueError):  # builtins without signatures: trust them
    return
  if "sample_weight" in params or any(
    p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
  ):
    return
  raise ValueError(
    f"`{name}` ({type(learner).__name__}) does not support per-example weights: its "
    f"fit{inspect.signature(fit)} has no `sample_weight` argument. Boosting re-weights "
    "the examples every round, so the base learner must accept fit(x, y, sample_weight); "
    "use e.g. dtl_jax.instance.LogisticRegression / MLPClassifier / RidgeRegression, or a "
    "scikit-learn estimator that takes sample_weight."
  )


def _clone(learner):
  if hasattr(learner, "get_params"):
    try:
      from sklearn.base import clone

      return clone(learner)
    except Exception:
      pass
  return copy.deepcopy(learner)


class _TrAdaBoostBase:
  def __init__(self, learner: Any, *, num_rounds: int = 20, min_error: float = 1e-10):
    check_supports_sample_weight(learner)
    if num_rounds < 1:
      raise ValueError(f"`num_rounds` must be >= 1; got {num_rounds}.")
    self.learner = learner
    self.num_rounds = num_rounds
    self.min_error = min_error

  def _inputs(self, source_x, source_y, target_x, target_y):
    xs = V.check_matrix(source_x, "source_x")
    xt = V.check_matrix(target_x, "target_x")
    V.check_same_dim(xs, "source_x", xt, "target_x")
    return np.asarray(xs), np.asarray(xt)

  def _errors(self, y, pred) -> np.ndarray:
    raise NotImplementedError

  def _boost(self, xs, ys, xt, yt):
    n, m = xs.shape[0], xt.shape[0]
    x = np.concatenate([xs, xt])
    y = np.concatenate([ys, yt])
    self.beta_ = tradaboost_beta(n, self.num_rounds)
    ws = jnp.full((n,), 1.0 / (n + m))
    wt = jnp.full((m,), 1.0 / (n + m))
    history = [np.concatenate([ws, wt])]
    self.learners_, errors, betas = [], [], []
    for _ in range(self.num_rounds):
      p = np.concatenate([np.asarray(ws), np.asarray(wt)])
      learner = _clone(self.learner)
      learner.fit(x, y, sample_weight=p * (n + m))
      e = self._errors(y, np.asarray(learner.predict(x)))
      upd = tradaboost_update(
        ws, wt, jnp.asarray(e[:n]), jnp.asarray(e[n:]), beta=self.beta_, min_error=self.min_error
      )
      ws, wt = upd.source_weights, upd.target_weights
      self.learners_.append(learner)
      errors.append(float(upd.error))
      betas.append(float(upd.beta_t))
      history.append(np.concatenate([np.asarray(ws), np.asarray(wt)]))
    self.errors_ = np.asarray(errors)
    self.betas_ = np.asarray(betas)
    self.weights_history_ = np.stack(history)  # [N + 1, n + m], each row sums to one
    self.source_weights_ = np.asarray(ws)
    self.target_weights_ = np.asarray(wt)
    first = math.ceil(self.num_rounds / 2) - 1  # 0-based index of round ⌈N/2⌉
    self.voters_ = self.learners_[first:]
    self.vote_weights_ = np.log(1.0 / self.betas_[first:])
    return self


class TrAdaBoost(_TrAdaBoostBase):
  """TrAdaBoost for classification.

  Dai, Yang, Xue & Yu, "Boosting for Transfer Learning", ICML 2007.

  Labels are integers in ``[0, num_classes)``. Per-example error ``e_i = [h_t(x_i) ≠ y_i]``
  (``= |h_t(x_i) − c(x_i)|`` for the paper's binary labels). Prediction for two classes is the
  paper's rule ``h_f(x) = 1 ⇔ Σ_{t≥⌈N/2⌉} ln(1/β_t) h_t(x) ≥ ½ Σ_{t≥⌈N/2⌉} ln(1/β_t)``; for more
  classes the natural extension ``argmax_k Σ_t ln(1/β_t) [h_t(x) = k]``.

  Attributes after ``fit``: ``beta_``, ``errors_`` ``[N]`` (ε_t), ``betas_`` ``[N]`` (β_t),
  ``weights_history_`` ``[N + 1, n + m]`` (normalized weights, source first),
  ``source_weights_``, ``target_weights_``, ``learners_``.

  Example::

    booster = TrAdaBoost(LogisticRegression(), num_rounds=20)
    booster.fit(source_x, source_y, target_x, target_y)
    accuracy = (booster.predict(test_x) == test_y).mean()
  """

  def __init__(
    self,
    learner: Any,
    *,
    num_rounds: int = 20,
    num_classes: int | None = None,
    min_error: float = 1e-10,
  ):
    super().__init__(learner, num_rounds=num_rounds, min_error=min_error)
    self.num_classes = num_classes

  def fit(self, source_x, source_y, target_x, target_y) -> TrAdaBoost:
    """Boosts on ``source_x [n, d]``, ``source_y [n]``, ``target_x [m, d]``, ``target_y [m]``."""
    xs, xt = self._inputs(source_x, source_y, target_x, target_y)
    _, c_s = V.check_labels(source_y, "source_y", xs.shape[0], self.num_classes)
    _, c_t = V.check_labels(target_y, "target_y", xt.shape[0], self.num_classes)
    self.num_classes_ = max(2, self.num_classes or max(c_s, c_t))
    ys = np.asarray(source_y).astype(np.int64)
    yt = np.asarray(target_y).astype(np.int64)
    return self._boost(xs, ys, xt, yt)

  def _errors(self, y, pred):
    return (np.asarray(pred).astype(np.int64) != y).astype(np.float64)

  def decision_function(self, x) -> np.ndarray:
    """Vote totals ``[n, num_classes]``: ``Σ_t ln(1/β_t) [h_t(x) = k]`` over the second half."""
    x = np.asarray(V.check_matrix(x, "x"))
    votes = np.zeros((x.shape[0], self.num_classes_))
    for a, h in zip(self.vote_weights_, self.voters_, strict=True):
      votes[np.arange(x.shape[0]), np.asarray(h.predict(x)).astype(np.int64)] += a
    return votes

  def predict(self, x) -> np.ndarray:
    votes = self.decision_function(x)
    if self.num_classes_ == 2:
      return (votes[:, 1] >= 0.5 * self.vote_weights_.sum()).astype(np.int64)
    return np.argmax(votes, axis=1)


_R2_LOSSES = ("linear", "square", "exponential")


class TrAdaBoostR2(_TrAdaBoostBase):
  """TrAdaBoost.R2 for regression (Pardoe & Stone, "Boosting for Regression Transfer", ICML 2010).

  Per-example adjusted error as in AdaBoost.R2 (Drucker 1997): ``D_t = max_j |y_j − h_t(x_j)|``
  over all ``n + m`` examples and ``e_i = L(|y_i − h_t(x_i)| / D_t)`` with ``L`` linear (``r``),
  square (``r²``) or exponential (``1 − e^{−r}``). Weight updates as in
  :func:`tradaboost_update`. Prediction: the weighted median of ``h_t(x)`` over
  ``t ≥ ⌈N/2⌉`` with weights ``ln(1/β_t)``.
  """

  def __init__(
    self, learner: Any, *, num_rounds: int = 20, loss: str = "linear", min_error: float = 1e-10
  ):
    if loss not in _R2_LOSSES:
      raise ValueError(f"`loss` must be one of {_R2_LOSSES}; got {loss!r}.")
    super().__init__(learner, num_rounds=num_rounds, min_error=min_error)
    self.loss = loss

  def fit(self, source_x, source_y, target_x, target_y) -> TrAdaBoostR2:
    """Boosts on ``source_x [n, d]``, ``source_y [n]``, ``target_x [m, d]``, ``target_y [m]``."""
    xs, xt = self._inputs(source_x, source_y, target_x, target_y)
    ys = np.asarray(source_y, np.float64)
    yt = np.asarray(target_y, np.float64)
    if ys.shape != (xs.shape[0],):
      raise ValueError(f"`source_y` must have shape [{xs.shape[0]}]; got {ys.shape}.")
    if yt.shape != (xt.shape[0],):
      raise ValueError(f"`target_y` must have shape [{xt.shape[0]}]; got {yt.shape}.")
    return self._boost(xs, ys, xt, yt)

  def _errors(self, y, pred):
    r = np.abs(y - np.asarray(pred, np.float64))
    d = r.max()
    r = r / d if d > 0 else np.zeros_like(r)
    if self.loss == "square":
      return r**2
    if self.loss == "exponential":
      return 1.0 - np.exp(-r)
    return r

  def predict(self, x) -> np.ndarray:
    x = np.asarray(V.check_matrix(x, "x"))
    preds = np.stack([np.asarray(h.predict(x), np.float64) for h in self.voters_], axis=1)
    a = self.vote_weights_ if self.vote_weights_.sum() > 0 else np.ones_like(self.vote_weights_)
    order = np.argsort(preds, axis=1)
    cdf = np.cumsum(a[order], axis=1)
    idx = np.argmax(cdf >= 0.5 * cdf[:, -1:], axis=1)
    return preds[np.arange(x.shape[0]), order[np.arange(x.shape[0]), idx]]


# --------------------------------------------------------------------------------------
# Fully jitted TrAdaBoost for pure JAX learners.
# --------------------------------------------------------------------------------------


class TrAdaBoostResult(NamedTuple):
  """Output of :func:`tradaboost_scan` (leading axis ``N`` = rounds where stacked)."""

  params: Any  # learner parameters, each leaf stacked over rounds [N, ...]
  errors: jax.Array  # ε_t [N]
  betas: jax.Array  # β_t [N]
  weights_history: jax.Array  # [N + 1, n + m], normalized weights, source first


def tradaboost_scan(
  fit_fn,
  predict_fn,
  source_x: jax.Array,
  source_y: jax.Array,
  target_x: jax.Array,
  target_y: jax.Array,
  *,
  num_rounds: int,
  num_classes: int | None = None,
  min_error: float = 1e-10,
) -> TrAdaBoostResult:
  """TrAdaBoost (Dai et al. 2007) as one ``lax.scan`` over rounds, for a pure JAX learner.

  Same updates as :class:`TrAdaBoost` (see :func:`tradaboost_update`), but every round runs
  inside one trace, so the whole boosting run is jit-compiled once and can be ``vmap``-ed
  over data sets, seeds or hyperparameters.

  Args:
    fit_fn: ``fit_fn(x [n+m, d], y [n+m], sample_weight [n+m]) -> params``, pure (e.g.
      ``functools.partial(fit_logistic_regression, num_classes=2)``).
    predict_fn: ``predict_fn(params, x [k, d]) -> labels [k]`` (integers).
    source_x: ``[n, d]``; source_y: ``[n]``; target_x: ``[m, d]``; target_y: ``[m]``.
    num_rounds: ``N`` (static).
    num_classes: if given, concrete labels are checked to lie in ``[0, num_classes)``.
    min_error: lower clip of ``ε_t``.

  Returns:
    :class:`TrAdaBoostResult`; predict with :func:`tradaboost_predict`.
  """
  xs = V.check_matrix(source_x, "source_x")
  xt = V.check_matrix(target_x, "target_x").astype(xs.dtype)
  V.check_same_dim(xs, "source_x", xt, "target_x")
  unchecked = 1 << 30  # traced labels: values cannot be checked, only shapes
  ys, _ = V.check_labels(
    source_y,
    "source_y",
    xs.shape[0],
    num_classes or (None if V.is_concrete(source_y) else unchecked),
  )
  yt, _ = V.check_labels(
    target_y,
    "target_y",
    xt.shape[0],
    num_classes or (None if V.is_concrete(target_y) else unchecked),
  )
  n, m = xs.shape[0], xt.shape[0]
  beta = tradaboost_beta(n, num_rounds)
  x = jnp.concatenate([xs, xt])
  y = jnp.concatenate([ys, yt])

  def round_(carry, _):
    ws, wt = carry
    p = jnp.concatenate([ws, wt])
    params = fit_fn(x, y, p * (n + m))
    e = (predict_fn(params, x) != y).astype(xs.dtype)
    upd = tradaboost_update(ws, wt, e[:n], e[n:], beta=beta, min_error=min_error)
    new = (upd.source_weights, upd.target_weights)
    return new, (params, upd.error, upd.beta_t, jnp.concatenate(new))

  init = (jnp.full((n,), 1.0 / (n + m), xs.dtype), jnp.full((m,), 1.0 / (n + m), xs.dtype))
  _, (params, errors, betas, hist) = jax.lax.scan(round_, init, None, length=num_rounds)
  hist = jnp.concatenate([jnp.concatenate(init)[None], hist])
  return TrAdaBoostResult(params, errors, betas, hist)


def tradaboost_predict(
  predict_fn, result: TrAdaBoostResult, x: jax.Array, *, num_classes: int = 2
) -> jax.Array:
  """The TrAdaBoost vote of a :func:`tradaboost_scan` result on ``x [k, d]`` -> labels ``[k]``.

  Binary: the paper's ``Σ_{t≥⌈N/2⌉} ln(1/β_t) h_t(x) ≥ ½ Σ_{t≥⌈N/2⌉} ln(1/β_t)``; more
  classes: ``argmax_k Σ_t ln(1/β_t) [h_t(x) = k]``.
  """
  num_rounds = result.betas.shape[0]
  first = math.ceil(num_rounds / 2) - 1
  params = jax.tree_util.tree_map(lambda leaf: leaf[first:], result.params)
  a = jnp.log(1.0 / result.betas[first:])
  preds = jax.vmap(lambda p: predict_fn(p, x))(params)  # [rounds, k]
  votes = jnp.einsum("r,rkc->kc", a, jax.nn.one_hot(preds, num_classes, dtype=a.dtype))
  if num_classes == 2:
    return (votes[:, 1] >= 0.5 * jnp.sum(a)).astype(jnp.int32)
  return jnp.argmax(votes, axis=1)
