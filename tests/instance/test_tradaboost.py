"""TrAdaBoost / TrAdaBoost.R2 against float64 NumPy re-implementations of the papers."""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from dtl_jax.instance import (
  LogisticRegression,
  RidgeRegression,
  TrAdaBoost,
  TrAdaBoostR2,
  tradaboost_beta,
)


def _reference_tradaboost(xs, ys, xt, yt, num_rounds, make_learner):
  """Dai et al. (2007), Algorithm 1, with unnormalized weights w^t (binary labels)."""
  n, m = len(xs), len(xt)
  x, y = np.concatenate([xs, xt]), np.concatenate([ys, yt]).astype(np.float64)
  w = np.ones(n + m)
  beta = 1.0 / (1.0 + np.sqrt(2.0 * np.log(n) / num_rounds))
  history, eps_list, beta_ts, hyps = [w / w.sum()], [], [], []
  for _ in range(num_rounds):
    p = w / w.sum()
    h = make_learner().fit(x, y.astype(int), sample_weight=p * (n + m))
    miss = np.abs(h.predict(x) - y)  # |h_t(x_i) - c(x_i)|
    eps = np.sum(w[n:] * miss[n:]) / np.sum(w[n:])
    eps = min(max(eps, 1e-10), 0.5)
    beta_t = eps / (1.0 - eps)
    w = np.concatenate([w[:n] * beta ** miss[:n], w[n:] * beta_t ** (-miss[n:])])
    history.append(w / w.sum())
    eps_list.append(eps)
    beta_ts.append(beta_t)
    hyps.append(h)

  def predict(xq):
    first = int(np.ceil(num_rounds / 2)) - 1
    lhs = np.prod([beta_ts[t] ** (-hyps[t].predict(xq)) for t in range(first, num_rounds)], axis=0)
    rhs = np.prod([beta_ts[t] ** (-0.5) for t in range(first, num_rounds)])
    return (lhs >= rhs).astype(int)

  return np.stack(history), np.array(eps_list), np.array(beta_ts), predict


def _noisy_binary(rng, n, shift):
  x = rng.normal(size=(n, 2)) + shift
  y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)
  return x, y


def test_weight_trajectory_matches_paper_step_by_step(rng):
  xs, ys = _noisy_binary(rng, 60, np.array([0.5, 0.0]))
  ys[:15] = 1 - ys[:15]  # some source examples disagree with the target concept
  xt, yt = _noisy_binary(rng, 15, np.array([0.0, 0.0]))
  make = lambda: DecisionTreeClassifier(max_depth=2, random_state=0)
  num_rounds = 8
  booster = TrAdaBoost(make(), num_rounds=num_rounds).fit(xs, ys, xt, yt)
  hist, eps, beta_ts, predict = _reference_tradaboost(xs, ys, xt, yt, num_rounds, make)
  assert booster.beta_ == pytest.approx(1.0 / (1.0 + np.sqrt(2.0 * np.log(60) / num_rounds)))
  np.testing.assert_allclose(booster.weights_history_, hist, rtol=1e-10, atol=1e-14)
  np.testing.assert_allclose(booster.errors_, eps, rtol=1e-10)
  np.testing.assert_allclose(booster.betas_, beta_ts, rtol=1e-10)
  xq = rng.normal(size=(200, 2))
  np.testing.assert_array_equal(booster.predict(xq), predict(xq))
  # The misfit source examples lost weight relative to the rest.
  assert booster.source_weights_[:15].mean() < booster.source_weights_[15:].mean()


def test_tradaboost_beta_formula():
  assert tradaboost_beta(100, 20) == pytest.approx(1 / (1 + np.sqrt(2 * np.log(100) / 20)))
  assert tradaboost_beta(1, 5) == 1.0  # ln 1 = 0: a single source example is never down-weighted


def _controlled_shift(seed):
  """Near source examples follow the target concept, far ones the opposite concept."""
  rng = np.random.default_rng(seed)
  rule = lambda x: (x[:, 0] > 0).astype(int)
  xt = rng.normal(size=(20, 2))
  x_test = rng.normal(size=(2000, 2))
  x_near = rng.normal(size=(100, 2))
  x_far = rng.normal(size=(80, 2)) + np.array([0.0, 4.0])
  xs = np.concatenate([x_near, x_far])
  ys = np.concatenate([rule(x_near), 1 - rule(x_far)])
  return xs, ys, xt, rule(xt), x_test, rule(x_test)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tradaboost_beats_source_plus_target_baseline(seed):
  xs, ys, xt, yt, x_test, y_test = _controlled_shift(seed)
  baseline = LogisticRegression().fit(np.concatenate([xs, xt]), np.concatenate([ys, yt]))
  acc_baseline = np.mean(np.asarray(baseline.predict(x_test)) == y_test)
  booster = TrAdaBoost(LogisticRegression(), num_rounds=10).fit(xs, ys, xt, yt)
  acc_boost = np.mean(booster.predict(x_test) == y_test)
  assert acc_boost > acc_baseline + 0.05, (acc_boost, acc_baseline)
  assert acc_boost > 0.9
  # The far (harmful) source examples end with much less weight than the near ones.
  assert booster.source_weights_[100:].sum() < 0.5 * booster.source_weights_[:100].sum()


def _reference_r2(xs, ys, xt, yt, num_rounds, make_learner, loss="linear"):
  """Pardoe & Stone (2010), TrAdaBoost.R2 with the AdaBoost.R2 (Drucker 1997) losses."""
  n, m = len(xs), len(xt)
  x, y = np.concatenate([xs, xt]), np.concatenate([ys, yt])
  w = np.full(n + m, 1.0 / (n + m))
  beta = 1.0 / (1.0 + np.sqrt(2.0 * np.log(n) / num_rounds))
  history, beta_ts, hyps = [w.copy()], [], []
  for _ in range(num_rounds):
    h = make_learner().fit(x, y, sample_weight=w * (n + m))
    r = np.abs(y - h.predict(x))
    e = {
      "linear": r / r.max(),
      "square": (r / r.max()) ** 2,
      "exponential": 1 - np.exp(-r / r.max()),
    }[loss]
    eps = np.sum(w[n:] * e[n:]) / np.sum(w[n:])
    eps = min(max(eps, 1e-10), 0.5)
    beta_t = eps / (1.0 - eps)
    w = np.concatenate([w[:n] * beta ** e[:n], w[n:] * beta_t ** (-e[n:])])
    w /= w.sum()
    history.append(w.copy())
    beta_ts.append(beta_t)
    hyps.append(h)

  def predict(xq):  # weighted median over the second half, weights ln(1/beta_t)
    first = int(np.ceil(num_rounds / 2)) - 1
    out = []
    for row in range(len(xq)):
      vals = np.array([hyps[t].predict(xq[row : row + 1])[0] for t in range(first, num_rounds)])
      a = np.log(1.0 / np.array(beta_ts[first:]))
      order = np.argsort(vals)
      c = np.cumsum(a[order])
      out.append(vals[order][np.searchsorted(c, 0.5 * c[-1])])
    return np.array(out)

  return np.stack(history), np.array(beta_ts), predict


@pytest.mark.parametrize("loss", ["linear", "square", "exponential"])
def test_r2_weight_trajectory_matches_paper(rng, loss):
  xs = rng.uniform(-2, 2, size=(50, 1))
  ys = np.sin(xs[:, 0]) + 0.5 * (xs[:, 0] > 1)
  xt = rng.uniform(-2, 2, size=(12, 1))
  yt = np.sin(xt[:, 0]) + 0.05 * rng.normal(size=12)
  make = lambda: DecisionTreeRegressor(max_depth=3, random_state=0)
  booster = TrAdaBoostR2(make(), num_rounds=6, loss=loss).fit(xs, ys, xt, yt)
  hist, beta_ts, predict = _reference_r2(xs, ys, xt, yt, 6, make, loss)
  np.testing.assert_allclose(booster.weights_history_, hist, rtol=1e-10, atol=1e-14)
  np.testing.assert_allclose(booster.betas_, beta_ts, rtol=1e-10)
  xq = rng.uniform(-2, 2, size=(40, 1))
  np.testing.assert_allclose(booster.predict(xq), predict(xq), rtol=1e-12)


def test_r2_beats_source_plus_target_ridge():
  rng = np.random.default_rng(3)
  f = lambda x: 2.0 * x[:, 0] - x[:, 1]
  xt = rng.normal(size=(15, 2))
  yt = f(xt) + 0.1 * rng.normal(size=15)
  x_near = rng.normal(size=(100, 2))
  x_far = rng.normal(size=(60, 2)) + np.array([4.0, 0.0])
  xs = np.concatenate([x_near, x_far])
  ys = np.concatenate([f(x_near), -f(x_far)]) + 0.1 * rng.normal(size=160)
  x_test = rng.normal(size=(1000, 2))
  baseline = RidgeRegression().fit(np.concatenate([xs, xt]), np.concatenate([ys, yt]))
  mse_baseline = np.mean((np.asarray(baseline.predict(x_test)) - f(x_test)) ** 2)
  booster = TrAdaBoostR2(RidgeRegression(), num_rounds=20).fit(xs, ys, xt, yt)
  mse_boost = np.mean((booster.predict(x_test) - f(x_test)) ** 2)
  assert mse_boost < 0.1 * mse_baseline, (mse_boost, mse_baseline)
  assert booster.source_weights_[100:].sum() < 0.2 * booster.source_weights_[:100].sum()


def test_learner_without_sample_weight_is_rejected():
  with pytest.raises(ValueError, match="sample_weight"):
    TrAdaBoost(KNeighborsClassifier())
  with pytest.raises(ValueError, match="sample_weight"):
    TrAdaBoostR2(object())


def test_empty_inputs_and_bad_labels(rng):
  xs, ys = _noisy_binary(rng, 20, 0.0)
  xt, yt = _noisy_binary(rng, 10, 0.0)
  booster = TrAdaBoost(LogisticRegression(), num_rounds=2, num_classes=2)
  with pytest.raises(ValueError, match="source_x"):
    booster.fit(np.zeros((0, 2)), np.zeros(0, int), xt, yt)
  with pytest.raises(ValueError, match="target_x"):
    booster.fit(xs, ys, np.zeros((0, 2)), np.zeros(0, int))
  bad = yt.copy()
  bad[0] = 2
  with pytest.raises(ValueError, match=r"target_y.*\[0, 2\)"):
    booster.fit(xs, ys, xt, bad)
  bad = ys.copy()
  bad[0] = -1
  with pytest.raises(ValueError, match="source_y"):
    booster.fit(xs, bad, xt, yt)
  with pytest.raises(ValueError, match="same feature dimension"):
    booster.fit(xs, ys, xt[:, :1], yt)
  with pytest.raises(ValueError, match="num_rounds"):
    TrAdaBoost(LogisticRegression(), num_rounds=0)
  with pytest.raises(ValueError, match="loss"):
    TrAdaBoostR2(RidgeRegression(), loss="huber")


def test_scan_version_matches_class_and_vmaps_over_seeds():
  import functools

  import jax
  import jax.numpy as jnp

  from dtl_jax.instance import (
    fit_logistic_regression,
    logistic_regression_logits,
    tradaboost_predict,
    tradaboost_scan,
  )

  fit = functools.partial(fit_logistic_regression, num_classes=2)
  predict = lambda params, x: jnp.argmax(logistic_regression_logits(params, x), axis=-1)
  data = [_controlled_shift(seed) for seed in (0, 1)]
  stacked = [jnp.asarray(np.stack([d[i] for d in data])) for i in range(6)]

  def run(xs, ys, xt, yt, x_test):
    res = tradaboost_scan(fit, predict, xs, ys, xt, yt, num_rounds=10)
    return res.weights_history, res.betas, tradaboost_predict(predict, res, x_test)

  hist, betas, preds = jax.jit(jax.vmap(run))(*stacked[:5])
  for i, (xs, ys, xt, yt, x_test, y_test) in enumerate(data):
    ref = TrAdaBoost(LogisticRegression(), num_rounds=10).fit(xs, ys, xt, yt)
    np.testing.assert_allclose(hist[i], ref.weights_history_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(betas[i], ref.betas_, rtol=1e-6)
    assert np.mean(np.asarray(preds[i]) == ref.predict(x_test)) > 0.999
    assert np.mean(np.asarray(preds[i]) == y_test) > 0.9
