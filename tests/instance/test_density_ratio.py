"""KLIEP against a float64 NumPy re-implementation; density ratios against the true ratio."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtl_jax.instance import domain_classifier_weights, kliep_weights


def _gauss(a, b, sigma2):
  return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * sigma2))


def _reference_kliep(xs, xt, sigma2, max_iterations=100):
  """Sugiyama et al. (2008), Fig. 2, with the authors' step-size schedule 1e3 ... 1e-3."""
  a = _gauss(xt, xt, sigma2)  # centres = all target points
  b = _gauss(xs, xt, sigma2).mean(0)

  def project(alpha):
    alpha = alpha + (1 - b @ alpha) * b / (b @ b)
    alpha = np.maximum(0, alpha)
    return alpha / (b @ alpha)

  alpha = project(np.ones(len(xt)))
  score = np.mean(np.log(a @ alpha))
  for eta in 10.0 ** np.arange(3, -4, -1):
    for _ in range(max_iterations):
      new = project(alpha + eta * a.T @ (1 / (a @ alpha)))
      new_score = np.mean(np.log(a @ new))
      if new_score <= score:
        break
      alpha, score = new, new_score
  return _gauss(xs, xt, sigma2) @ alpha


def _true_log_ratio(x, mu):
  """log N(x; mu, I) / N(x; 0, I)."""
  return x @ mu - 0.5 * mu @ mu


def test_kliep_matches_numpy_reference(rng):
  xs = rng.normal(size=(80, 2))
  xt = rng.normal(size=(40, 2)) + np.array([0.7, 0.0])
  got = np.asarray(kliep_weights(xs, xt, sigma2=0.8))
  ref = _reference_kliep(xs, xt, 0.8)
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
  assert got.mean() == pytest.approx(1.0, abs=1e-10)  # KLIEP's normalization constraint


def test_kliep_recovers_density_ratio(rng):
  mu = np.array([0.8, 0.0])
  xs = rng.normal(size=(200, 2))
  xt = rng.normal(size=(200, 2)) + mu
  # Default: bandwidth by likelihood cross-validation over multiples of the median heuristic.
  w = np.asarray(kliep_weights(xs, xt, key=jax.random.key(0), num_centers=50, num_folds=4))
  true = np.exp(_true_log_ratio(xs, mu))
  assert np.corrcoef(w, true)[0, 1] > 0.7
  assert w.mean() == pytest.approx(1.0, abs=1e-8)
  # Importance weighting moves the source mean onto the target mean (0 -> mu).
  np.testing.assert_allclose((w[:, None] * xs).mean(0), mu, atol=0.3)


@pytest.mark.parametrize("classifier", ["logistic", "mlp"])
def test_domain_classifier_recovers_log_ratio(rng, classifier):
  mu = np.array([0.8, -0.4])
  xs = rng.normal(size=(600, 2))
  xt = rng.normal(size=(600, 2)) + mu
  w = np.asarray(
    domain_classifier_weights(xs, xt, key=jax.random.key(1), classifier=classifier, max_weight=50.0)
  )
  assert w.mean() == pytest.approx(1.0, abs=1e-8)
  true = _true_log_ratio(xs, mu)
  slope, _ = np.polyfit(true, np.log(w), 1)
  assert np.corrcoef(np.log(w), true)[0, 1] > 0.95
  assert 0.7 < slope < 1.3, slope


def test_domain_classifier_clips_and_keeps_dtype(rng):
  xs = rng.normal(size=(100, 2)).astype(np.float32)
  xt = (rng.normal(size=(100, 2)) + 1.0).astype(np.float32)
  w = domain_classifier_weights(xs, xt, key=jax.random.key(0), max_weight=1.0)
  assert w.dtype == jnp.float32
  w = np.asarray(w)
  assert np.all(np.isfinite(w)) and np.all(w >= 0)
  # About a quarter of the ratios exceed 1 and are clipped to the same (largest) value.
  assert np.sum(np.isclose(w, w.max(), rtol=1e-5)) >= 5


def test_errors(rng):
  xs, xt = rng.normal(size=(10, 2)), rng.normal(size=(12, 2))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="source"):
    kliep_weights(np.zeros((0, 2)), xt)
  with pytest.raises(ValueError, match="key"):
    kliep_weights(xs, xt, num_centers=5)
  with pytest.raises(ValueError, match="same feature dimension"):
    kliep_weights(xs, xt[:, :1])
  with pytest.raises(ValueError, match="num_folds"):
    kliep_weights(xs, xt, num_folds=20)
  with pytest.raises(ValueError, match="sigma2"):
    kliep_weights(xs, xt, sigma2=[1.0, -1.0])
  with pytest.raises(ValueError, match="target"):
    domain_classifier_weights(xs, np.zeros((0, 2)), key=key)
  with pytest.raises(ValueError, match="classifier"):
    domain_classifier_weights(xs, xt, key=key, classifier="svm")
  with pytest.raises(ValueError, match="calibration_fraction"):
    domain_classifier_weights(xs, xt, key=key, calibration_fraction=1.0)
