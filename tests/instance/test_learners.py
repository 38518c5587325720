"""Weighted base learners against scikit-learn / closed forms; weights, vmap and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from dtl_jax.instance import (
  LogisticRegression,
  MLPClassifier,
  MLPRegressor,
  RidgeRegression,
  fit_logistic_regression,
  fit_mlp,
)


@pytest.fixture
def binary(rng):
  x = rng.normal(size=(120, 3))
  y = (x @ np.array([1.5, -1.0, 0.5]) + 0.5 * rng.normal(size=120) > 0).astype(int)
  w = rng.uniform(0.1, 2.0, size=120)
  return x, y, w


def test_weighted_logistic_regression_matches_sklearn(binary):
  x, y, w = binary
  l2 = 0.05
  ours = LogisticRegression(l2=l2, num_steps=2000, learning_rate=0.05).fit(x, y, sample_weight=w)
  # Ours: sum_i p_i CE_i + l2/2 ||W||^2 with W [d, 2]; at the optimum W = [-v/2, v/2], so the
  # binary weight v has penalty l2/4 ||v||^2. sklearn: 1/2 ||v||^2 + C sum_i w_i CE_i.
  sk = SkLogisticRegression(C=2.0 / (l2 * w.sum()), tol=1e-10, max_iter=10_000)
  sk.fit(x, y, sample_weight=w)
  np.testing.assert_allclose(np.asarray(ours.predict_proba(x)), sk.predict_proba(x), atol=2e-3)


def test_zero_weight_equals_dropping_examples(binary):
  x, y, _ = binary
  w = np.ones(120)
  w[80:] = 0.0
  a = fit_logistic_regression(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), num_classes=2)
  b = fit_logistic_regression(jnp.asarray(x[:80]), jnp.asarray(y[:80]), None, num_classes=2)
  for k in ("w", "b"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-8, atol=1e-10)


def test_fit_is_vmappable_over_weights(binary):
  x, y, _ = binary
  ws = jnp.asarray(np.random.default_rng(1).uniform(0, 1, size=(3, 120)))
  fit = lambda w: fit_logistic_regression(
    jnp.asarray(x), jnp.asarray(y), w, num_classes=2, num_steps=50
  )
  batched = jax.vmap(fit)(ws)
  for i in range(3):
    np.testing.assert_allclose(batched["w"][i], fit(ws[i])["w"], rtol=1e-6, atol=1e-9)


def test_weighted_ridge_matches_closed_form(rng):
  x = rng.normal(size=(50, 3))
  y = x @ np.array([1.0, -2.0, 0.5]) + 3.0 + 0.1 * rng.normal(size=50)
  w = rng.uniform(0.1, 3.0, size=50)
  l2 = 0.1
  got = RidgeRegression(l2=l2).fit(x, y, sample_weight=w)
  # Reference: minimize sum_i p_i (y_i - x_i b - c)^2 + l2 ||b||^2 via augmented normal equations.
  p = w / w.sum()
  xa = np.concatenate([x, np.ones((50, 1))], 1)
  reg = np.diag([l2, l2, l2, 0.0])
  coef = np.linalg.solve(xa.T @ (p[:, None] * xa) + reg, xa.T @ (p * y))
  np.testing.assert_allclose(np.asarray(got.params_["w"]), coef[:3], rtol=1e-8)
  np.testing.assert_allclose(float(got.params_["b"]), coef[3], rtol=1e-8)


def test_mlp_learners_fit_and_respect_weights(rng):
  x = rng.uniform(-2, 2, size=(200, 1))
  y_cls = (np.abs(x[:, 0]) > 1).astype(int)  # not linearly separable
  clf = MLPClassifier(hidden_sizes=(16,), num_steps=400, learning_rate=0.05).fit(x, y_cls)
  assert np.mean(np.asarray(clf.predict(x)) == y_cls) > 0.95
  y_reg = np.sin(2 * x[:, 0])
  w = (x[:, 0] > 0).astype(float)  # only the right half counts
  reg = MLPRegressor(hidden_sizes=(32,), num_steps=600, learning_rate=0.02).fit(
    x, y_reg, sample_weight=w
  )
  err = (np.asarray(reg.predict(x)) - y_reg) ** 2
  assert err[w > 0].mean() < 0.02 < err[w == 0].mean()
  params = jax.vmap(
    lambda k: fit_mlp(k, jnp.asarray(x), jnp.asarray(y_cls), num_outputs=2, num_steps=5)
  )(jax.random.split(jax.random.key(0), 2))
  assert jax.tree_util.tree_leaves(params)[0].shape[0] == 2


def test_dtype_and_errors(binary):
  x, y, _ = binary
  m = LogisticRegression(num_steps=5).fit(x.astype(np.float32), y)
  assert m.predict_proba(x.astype(np.float32)).dtype == jnp.float32
  with pytest.raises(ValueError, match="x"):
    LogisticRegression().fit(np.zeros((0, 3)), np.zeros(0, int))
  with pytest.raises(ValueError, match=r"y.*\[0, 2\)"):
    LogisticRegression(num_classes=2).fit(x, y + 1)
  with pytest.raises(ValueError, match="sample_weight"):
    LogisticRegression().fit(x, y, sample_weight=np.ones(5))
  with pytest.raises(ValueError, match="sample_weight"):
    LogisticRegression().fit(x, y, sample_weight=-np.ones(120))
  with pytest.raises(ValueError, match=r"y.*shape"):
    RidgeRegression().fit(x, np.ones(3))
