"""LEEP, LogME and H-score against float64 NumPy references (rtol 1e-5), under jit, and ranking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtl_jax.stats import h_score, leep, logme

NUM_CLASSES = 3


# ----------------------------------------------------------------------------- references


def _leep_reference(theta, y):
  """Nguyen et al. (2020), Eqs. (1)-(3)."""
  n, z = theta.shape
  joint = np.zeros((y.max() + 1, z))
  for i in range(n):
    joint[y[i]] += theta[i] / n
  cond = joint / joint.sum(0, keepdims=True)
  return np.mean([np.log(cond[y[i]] @ theta[i]) for i in range(n)])


def _each_evidence_reference(y_, f, fh, v, s, vh, n, d):
  """The released LogME algorithm (You et al. 2021, LogME.py, ``each_evidence``)."""
  epsilon = 1e-5
  alpha, beta = 1.0, 1.0
  lam = alpha / beta
  tmp = vh @ (f @ y_)
  for _ in range(100):
    gamma = (s / (s + lam)).sum()
    m = v @ (tmp * beta / (alpha + beta * s))
    alpha_de = (m * m).sum()
    alpha = gamma / (alpha_de + epsilon)
    beta_de = ((y_ - fh @ m) ** 2).sum()
    beta = (n - gamma) / (beta_de + epsilon)
    new_lam = alpha / beta
    if np.abs(new_lam - lam) / lam < 0.01:
      break
    lam = new_lam
  evidence = (
    d / 2.0 * np.log(alpha)
    + n / 2.0 * np.log(beta)
    - 0.5 * np.sum(np.log(alpha + beta * s))
    - beta / 2.0 * (beta_de + epsilon)
    - alpha / 2.0 * (alpha_de + epsilon)
    - n / 2.0 * np.log(2 * np.pi)
  )
  return evidence / n


def _logme_reference(features, y):
  fh = features
  f = features.T
  d, n = f.shape
  v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
  return np.mean(
    [
      _each_evidence_reference((y == c).astype(np.float64), f, fh, v, s, vh, n, d)
      for c in range(y.max() + 1)
    ]
  )


def _h_score_reference(f, y):
  """Bao et al. (2019): tr(cov(f)^+ cov(E[f|y]))."""

  def cov(x):
    xc = x - x.mean(0, keepdims=True)
    return xc.T @ xc / (len(x) - 1)

  g = np.zeros_like(f)
  for c in np.unique(y):
    g[y == c] = f[y == c].mean(0)
  return np.trace(np.linalg.pinv(cov(f), rcond=1e-15) @ cov(g))


# ----------------------------------------------------------------------------- data


@pytest.fixture
def task(rng):
  n, d = 240, 6
  y = rng.integers(0, NUM_CLASSES, size=n)
  means = rng.normal(size=(NUM_CLASSES, d)) * 2.0
  good = means[y] + rng.normal(size=(n, d))
  bad = 0.3 * means[y] + rng.normal(size=(n, d)) * 2.0
  # Source classifiers with 5 source classes: one predicts a source class tied to y.
  src_of = np.array([0, 2, 4])
  good_logits = 3.0 * np.eye(5)[src_of[y]] + rng.normal(size=(n, 5))
  bad_logits = rng.normal(size=(n, 5))

  def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)

  return dict(
    y=y, good=good, bad=bad, good_probs=softmax(good_logits), bad_probs=softmax(bad_logits)
  )


# ----------------------------------------------------------------------------- tests


def test_leep_matches_reference(task):
  for probs in (task["good_probs"], task["bad_probs"]):
    got = leep(probs, task["y"])
    np.testing.assert_allclose(float(got), _leep_reference(probs, task["y"]), rtol=1e-5)


def test_logme_matches_released_algorithm(task):
  for feats in (task["good"], task["bad"]):
    got = logme(feats, task["y"])
    np.testing.assert_allclose(float(got), _logme_reference(feats, task["y"]), rtol=1e-5)


def test_logme_regression_matches_reference(task, rng):
  feats = task["good"]
  targets = np.stack([feats @ rng.normal(size=6), rng.normal(size=240)], axis=1)
  f = feats.T
  v, s, vh = np.linalg.svd(f @ feats)
  ref = np.mean(
    [_each_evidence_reference(targets[:, k], f, feats, v, s, vh, 240, 6) for k in range(2)]
  )
  np.testing.assert_allclose(float(logme(feats, targets, regression=True)), ref, rtol=1e-5)


def test_h_score_matches_reference(task):
  for feats in (task["good"], task["bad"]):
    got = h_score(feats, task["y"], rtol=1e-15)
    np.testing.assert_allclose(float(got), _h_score_reference(feats, task["y"]), rtol=1e-5)


def test_scores_run_under_jit(task):
  y = jnp.asarray(task["y"])
  f = jnp.asarray(task["good"])
  p = jnp.asarray(task["good_probs"])
  jitted = jax.jit(
    lambda f, p, y: (
      leep(p, y, num_classes=NUM_CLASSES),
      logme(f, y, num_classes=NUM_CLASSES),
      h_score(f, y, num_classes=NUM_CLASSES, rtol=1e-15),
    )
  )
  got = jitted(f, p, y)
  refs = (
    _leep_reference(task["good_probs"], task["y"]),
    _logme_reference(task["good"], task["y"]),
    _h_score_reference(task["good"], task["y"]),
  )
  for g, r in zip(got, refs, strict=True):
    np.testing.assert_allclose(float(g), r, rtol=1e-5)


def test_float32_in_float32_out(task):
  y = task["y"]
  f32 = task["good"].astype(np.float32)
  assert logme(f32, y).dtype == jnp.float32
  assert h_score(f32, y).dtype == jnp.float32
  assert leep(task["good_probs"].astype(np.float32), y).dtype == jnp.float32
  np.testing.assert_allclose(float(logme(f32, y)), _logme_reference(task["good"], y), rtol=1e-3)


def test_better_features_rank_first(task):
  y = task["y"]
  assert float(logme(task["good"], y)) > float(logme(task["bad"], y))
  assert float(h_score(task["good"], y)) > float(h_score(task["bad"], y))
  assert float(leep(task["good_probs"], y)) > float(leep(task["bad_probs"], y))


def test_errors(task):
  y = task["y"]
  with pytest.raises(ValueError, match="features"):
    logme(np.zeros((0, 4)), np.zeros(0, int))
  with pytest.raises(ValueError, match="empty|features"):
    h_score(np.zeros((0, 4)), np.zeros(0, int))
  with pytest.raises(ValueError, match="source_probs"):
    leep(np.zeros((0, 5)), np.zeros(0, int))
  bad = y.copy()
  bad[3] = 7
  with pytest.raises(ValueError, match=r"labels.*\[0, 3\)"):
    logme(task["good"], bad, num_classes=3)
  with pytest.raises(ValueError, match="labels"):
    h_score(task["good"], -np.ones_like(y))
  with pytest.raises(ValueError, match=r"target_labels.*\[0, 2\)"):
    leep(task["good_probs"], y, num_classes=2)
  with pytest.raises(ValueError, match="logits"):
    leep(np.log(task["good_probs"]), y)
  with pytest.raises(ValueError, match=r"shape \[240\]"):
    logme(task["good"], y[:10])
  with pytest.raises(ValueError, match="num_classes"):
    jax.jit(lambda f, y: logme(f, y))(task["good"], y)
