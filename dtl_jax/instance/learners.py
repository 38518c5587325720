"""Small jit-trained base learners that accept per-example weights.

They are the default weak learners of :mod:`dtl_jax.instance.tradaboost` and the
domain classifiers of :mod:`dtl_jax.instance.density_ratio` and
:func:`dtl_jax.stats.proxy_a_distance`.

Each learner has a pure, jit-compiled training function (``fit_logistic_regression``,
``fit_ridge_regression``, ``fit_mlp``) that can be ``jax.vmap``-ed over weight vectors
or data sets, and a thin scikit-learn-like wrapper with
``fit(x, y, sample_weight=None)`` / ``predict(x)`` so that boosting code treats them
and scikit-learn estimators alike.

All training objectives are weighted means,
``L(θ) = Σ_i w_i ℓ(f_θ(x_i), y_i) / Σ_i w_i + (λ/2)‖W‖²``, so only the relative
size of the weights matters.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dtl_jax import _validation as V

Params = Mapping[str, Any]  # a pytree of arrays keyed by name


def _normalized_weights(sample_weight: jax.Array | None, n: int, dtype) -> jax.Array:
  if sample_weight is None:
    return jnp.full((n,), 1.0 / n, dtype)
  w = jnp.asarray(sample_weight, dtype)
  return w / jnp.sum(w)


# --------------------------------------------------------------------------------------
# Weighted multinomial logistic regression.
# --------------------------------------------------------------------------------------


def _adam_scan(loss_fn, params: Params, *, learning_rate: float, num_steps: int) -> Params:
  """``num_steps`` full-batch Adam steps on ``loss_fn(params)`` inside one ``lax.scan``."""
  opt = optax.adam(learning_rate)

  def step(carry, _):
    params, state = carry
    grads = jax.grad(loss_fn)(params)
    updates, state = opt.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=num_steps)
  return params


@functools.partial(jax.jit, static_argnames=("num_classes", "num_steps"))
def fit_logistic_regression(
  x: jax.Array,
  y: jax.Array,
  sample_weight: jax.Array | None = None,
  *,
  num_classes: int,
  l2: float = 1e-3,
  num_steps: int = 300,
  learning_rate: float = 0.05,
) -> Params:
  """Weighted multinomial logistic regression, full-batch Adam inside one ``lax.scan``.

  Minimizes ``Σ_i p_i · CE(softmax(x_i W + b), y_i) + (l2/2)‖W‖²`` with
  ``p = sample_weight / Σ sample_weight``.

  Args:
    x: features ``[n, d]``.
    y: integer labels ``[n]`` in ``[0, num_classes)``.
    sample_weight: non-negative weights ``[n]`` (uniform if None).
    num_classes: number of classes C (static).
    l2: L2 penalty on ``W``.
    num_steps: Adam steps (static).
    learning_rate: Adam step size.

  Returns:
    ``{"w": [d, C], "b": [C]}``. Pure: vmappable over ``sample_weight`` or data sets.
  """
  n, d = x.shape
  p = _normalized_weights(sample_weight, n, x.dtype)
  onehot = jax.nn.one_hot(y, num_classes, dtype=x.dtype)
  params = {"w": jnp.zeros((d, num_classes), x.dtype), "b": jnp.zeros((num_classes,), x.dtype)}

  def loss_fn(params):
    logits = x @ params["w"] + params["b"]
    ce = -jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1)
    return jnp.sum(p * ce) + 0.5 * l2 * jnp.sum(params["w"] ** 2)

  return _adam_scan(loss_fn, params, learning_rate=learning_rate, num_steps=num_steps)


def logistic_regression_logits(params: Params, x: jax.Array) -> jax.Array:
  """Logits ``[n, C]`` of a fitted logistic regression."""
  return x @ params["w"] + params["b"]


# --------------------------------------------------------------------------------------
# Weighted ridge regression (closed form).
# --------------------------------------------------------------------------------------


@jax.jit
def fit_ridge_regression(
  x: jax.Array, y: jax.Array, sample_weight: jax.Array | None = None, *, l2: float = 1e-3
) -> Params:
  """Weighted ridge regression in closed form (intercept not penalized).

  With ``p = w / Σw``, ``x̄ = Σ p_i x_i`` and ``ȳ = Σ p_i y_i``:
  ``β = (X_cᵀ P X_c + l2·I)⁻¹ X_cᵀ P y_c`` and ``b = ȳ − x̄ᵀβ``.

  Args:
    x: ``[n, d]``; y: targets ``[n]``; sample_weight: ``[n]`` (uniform if None).

  Returns:
    ``{"w": [d], "b": []}``.
  """
  n, d = x.shape
  p = _normalized_weights(sample_weight, n, x.dtype)
  x_mean = p @ x
  y_mean = p @ y
  xc, yc = x - x_mean, y - y_mean
  gram = (xc * p[:, None]).T @ xc + l2 * jnp.eye(d, dtype=x.dtype)
  beta = jnp.linalg.solve(gram, (xc * p[:, None]).T @ yc)
  return {"w": beta, "b": y_mean - x_mean @ beta}


# --------------------------------------------------------------------------------------
# Small MLP (classification or regression).
# --------------------------------------------------------------------------------------


class MLP(nn.Module):
  """``x -> [Dense(h) -> relu]* -> Dense(num_outputs)``."""

  hidden_sizes: Sequence[int]
  num_outputs: int

  @nn.compact
  def __call__(self, x):
    for h in self.hidden_sizes:
      x = nn.relu(nn.Dense(h, dtype=x.dtype, param_dtype=x.dtype)(x))
    return nn.Dense(self.num_outputs, dtype=x.dtype, param_dtype=x.dtype)(x)


@functools.partial(jax.jit, static_argnames=("hidden_sizes", "num_outputs", "task", "num_steps"))
def fit_mlp(
  key: jax.Array,
  x: jax.Array,
  y: jax.Array,
  sample_weight: jax.Array | None = None,
  *,
  hidden_sizes: tuple[int, ...] = (32,),
  num_outputs: int,
  task: str = "classification",
  l2: float = 1e-4,
  num_steps: int = 300,
  learning_rate: float = 0.01,
) -> Params:
  """Trains a small MLP with a weighted loss by full-batch Adam in one ``lax.scan``.

  Loss: ``Σ_i p_i ℓ_i + (l2/2)‖θ‖²`` with ``ℓ`` the cross-entropy (``task="classification"``,
  ``y`` integer ``[n]``) or the squared error (``task="regression"``, ``y`` real ``[n]``).

  Args:
    key: PRNG key for the initialization.
    x: ``[n, d]``; y: ``[n]``; sample_weight: ``[n]`` (uniform if None).

  Returns:
    Flax variables of :class:`MLP`. Pure: vmappable over keys / weights / data sets.
  """
  n = x.shape[0]
  p = _normalized_weights(sample_weight, n, x.dtype)
  model = MLP(tuple(hidden_sizes), num_outputs)
  params = model.init(key, x[:1])

  def loss_fn(params):
    out = model.apply(params, x)
    if task == "classification":
      ell = -jnp.sum(jax.nn.one_hot(y, num_outputs, dtype=x.dtype) * jax.nn.log_softmax(out), -1)
    else:
      ell = (out[:, 0] - y) ** 2
    reg = sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(params))
    return jnp.sum(p * ell) + 0.5 * l2 * reg

  return _adam_scan(loss_fn, params, learning_rate=learning_rate, num_steps=num_steps)


# --------------------------------------------------------------------------------------
# scikit-learn-like wrappers.
# --------------------------------------------------------------------------------------


class LogisticRegression:
  """Weighted multinomial logistic regression with ``fit(x, y, sample_weight)`` / ``predict``.

  Training is :func:`fit_logistic_regression` (jit-compiled once per shape).
  """

  def __init__(
    self,
    *,
    num_classes: int | None = None,
    l2: float = 1e-3,
    num_steps: int = 300,
    learning_rate: float = 0.05,
  ):
    self.num_classes = num_classes
    self.l2 = l2
    self.num_steps = num_steps
    self.learning_rate = learning_rate

  def fit(self, x, y, sample_weight=None) -> LogisticRegression:
    x = V.check_matrix(x, "x")
    y, c = V.check_labels(y, "y", x.shape[0], self.num_classes)
    self.num_classes_ = max(c, 2)
    w = V.check_weights(sample_weight, "sample_weight", x.shape[0], positive_sum=True)
    self.params_ = fit_logistic_regression(
      x,
      y,
      w,
      num_classes=self.num_classes_,
      l2=self.l2,
      num_steps=self.num_steps,
      learning_rate=self.learning_rate,
    )
    return self

  def decision_function(self, x) -> jax.Array:
    return logistic_regression_logits(self.params_, V.as_float_array(x, "x"))

  def predict_proba(self, x) -> jax.Array:
    return jax.nn.softmax(self.decision_function(x), axis=-1)

  def predict(self, x) -> jax.Array:
    return jnp.argmax(self.decision_function(x), axis=-1)


class RidgeRegression:
  """Weighted ridge regression (:func:`fit_ridge_regression`), scikit-learn-like."""

  def __init__(self, *, l2: float = 1e-3):
    self.l2 = l2

  def fit(self, x, y, sample_weight=None) -> RidgeRegression:
    x = V.check_matrix(x, "x")
    y = V.as_float_array(y, "y").astype(x.dtype)
    if y.shape != (x.shape[0],):
      raise ValueError(f"`y` must have shape [{x.shape[0]}]; got shape {tuple(y.shape)}.")
    w = V.check_weights(sample_weight, "sample_weight", x.shape[0], positive_sum=True)
    self.params_ = fit_ridge_regression(x, y, w, l2=self.l2)
    return self

  def predict(self, x) -> jax.Array:
    x = V.as_float_array(x, "x")
    return x @ self.params_["w"] + self.params_["b"]


class _MLPBase:
  _task = "classification"

  def __init__(
    self,
    *,
    hidden_sizes: Sequence[int] = (32,),
    l2: float = 1e-4,
    num_steps: int = 300,
    learning_rate: float = 0.01,
    seed: int = 0,
  ):
    self.hidden_sizes = tuple(hidden_sizes)
    self.l2 = l2
    self.num_steps = num_steps
    self.learning_rate = learning_rate
    self.seed = seed

  def _fit(self, x, y, sample_weight, num_outputs):
    w = V.check_weights(sample_weight, "sample_weight", x.shape[0], positive_sum=True)
    self.params_ = fit_mlp(
      jax.random.key(self.seed),
      x,
      y,
      w,
      hidden_sizes=self.hidden_sizes,
      num_outputs=num_outputs,
      task=self._task,
      l2=self.l2,
      num_steps=self.num_steps,
      learning_rate=self.learning_rate,
    )
    self._num_outputs = num_outputs
    return self

  def _apply(self, x):
    x = V.as_float_array(x, "x")
    return MLP(self.hidden_sizes, self._num_outputs).apply(self.params_, x)


class MLPClassifier(_MLPBase):
  """Small weighted MLP classifier (:func:`fit_mlp`), scikit-learn-like; ``seed`` fixes the init."""

  def __init__(self, *, num_classes: int | None = None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes

  def fit(self, x, y, sample_weight=None) -> MLPClassifier:
    x = V.check_matrix(x, "x")
    y, c = V.check_labels(y, "y", x.shape[0], self.num_classes)
    self.num_classes_ = max(c, 2)
    return self._fit(x, y, sample_weight, self.num_classes_)

  def predict_proba(self, x) -> jax.Array:
    return jax.nn.softmax(self._apply(x), axis=-1)

  def predict(self, x) -> jax.Array:
    return jnp.argmax(self._apply(x), axis=-1)


class MLPRegressor(_MLPBase):
  """Small weighted MLP regressor (:func:`fit_mlp` with squared error), scikit-learn-like."""

  _task = "regression"

  def fit(self, x, y, sample_weight=None) -> MLPRegressor:
    x = V.check_matrix(x, "x")
    y = V.as_float_array(y, "y").astype(x.dtype)
    if y.shape != (x.shape[0],):
      raise ValueError(f"`y` must have shape [{x.shape[0]}]; got shape {tuple(y.shape)}.")
    return self._fit(x, y, sample_weight, 1)

  def predict(self, x) -> jax.Array:
    return self._apply(x)[:, 0]
