"""MMD permutation test: statistic vs NumPy, calibration under H0, power under a mean shift."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtl_jax.losses.kernels import GaussianKernel, LinearKernel
from dtl_jax.stats import mmd_statistic_from_gram, mmd_test


def _gauss(a, b, sigma2):
  return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * sigma2))


def _mmd2_reference(x, y, sigma2, unbiased):
  kxx, kyy, kxy = _gauss(x, x, sigma2), _gauss(y, y, sigma2), _gauss(x, y, sigma2)
  n, m = len(x), len(y)
  if not unbiased:
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()
  return (
    (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    - 2 * kxy.mean()
  )


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_statistic_matches_reference(rng, key, estimator):
  x, y = rng.normal(size=(30, 3)), rng.normal(size=(25, 3)) + 0.3
  res = mmd_test(
    x, y, key=key, num_permutations=50, kernel=GaussianKernel(sigma2=1.5), estimator=estimator
  )
  np.testing.assert_allclose(
    float(res.statistic), _mmd2_reference(x, y, 1.5, estimator == "unbiased"), rtol=1e-10
  )


def test_median_heuristic_default_and_linear_kernel(rng, key):
  x, y = rng.normal(size=(20, 2)), rng.normal(size=(15, 2))
  z = np.concatenate([x, y])
  d = ((z[:, None] - z[None]) ** 2).sum(-1)
  sigma2 = np.median(d[np.triu_indices(35, 1)])
  res = mmd_test(x, y, key=key, num_permutations=10)
  np.testing.assert_allclose(float(res.statistic), _mmd2_reference(x, y, sigma2, False), rtol=1e-10)
  lin = mmd_test(x, y, key=key, num_permutations=10, kernel=LinearKernel())
  np.testing.assert_allclose(float(lin.statistic), np.sum((x.mean(0) - y.mean(0)) ** 2), rtol=1e-10)


def test_p_value_equals_permutation_count(rng, key):
  """The p-value is (1 + #{null >= observed}) / (1 + P) over index permutations."""
  x, y = rng.normal(size=(6, 1)), rng.normal(size=(5, 1)) + 0.5
  sigma2 = 1.0
  k = _gauss(np.concatenate([x, y]), np.concatenate([x, y]), sigma2)
  num_permutations = 400
  res = mmd_test(
    x, y, key=key, num_permutations=num_permutations, kernel=GaussianKernel(sigma2=sigma2)
  )
  # The exact permutation distribution over all C(11, 6) = 462 splits.
  import itertools

  observed = _mmd2_reference(x, y, sigma2, False)
  null = []
  for idx in itertools.combinations(range(11), 6):
    a = np.zeros(11)
    a[list(idx)] = 1
    v = a / 6 - (1 - a) / 5
    null.append(v @ k @ v)
  exact_p = np.mean(np.asarray(null) >= observed - 1e-12)
  # Monte Carlo p-value with 400 draws: within 4 binomial standard errors of the exact one.
  assert abs(float(res.p_value) - exact_p) < 4 * np.sqrt(exact_p * (1 - exact_p) / 400) + 1 / 401
  # Granularity: p * (1 + P) is an integer in [1, 1 + P].
  count = float(res.p_value) * (1 + num_permutations)
  assert abs(count - round(count)) < 1e-6 and 1 <= round(count) <= 1 + num_permutations


@pytest.fixture(scope="module")
def trials_fn():
  return jax.jit(jax.vmap(lambda k, a, b: mmd_test(a, b, key=k, num_permutations=200).p_value))


def test_type_one_error_is_calibrated(trials_fn):
  """200 seeded trials under H0 at alpha = 0.05: rejection rate within [0.02, 0.09]."""
  rng = np.random.default_rng(123)
  x = jnp.asarray(rng.normal(size=(200, 40, 2)))
  y = jnp.asarray(rng.normal(size=(200, 40, 2)))
  p = np.asarray(trials_fn(jax.random.split(jax.random.key(7), 200), x, y))
  rate = np.mean(p <= 0.05)
  assert 0.02 <= rate <= 0.09, rate
  # Roughly uniform p-values: each quarter of [0, 1] gets a fair share.
  hist = np.histogram(p, bins=4, range=(0, 1))[0]
  assert hist.min() >= 30, hist


def test_power_for_half_sigma_mean_shift(trials_fn):
  """n = 200 per sample, mean shift of 0.5 sigma: the test rejects (almost) always."""
  rng = np.random.default_rng(321)
  x = jnp.asarray(rng.normal(size=(10, 200, 1)))
  y = jnp.asarray(rng.normal(size=(10, 200, 1)) + 0.5)
  p = np.asarray(trials_fn(jax.random.split(jax.random.key(8), 10), x, y))
  assert np.mean(p <= 0.05) >= 0.9, p


def test_float32_and_gram_helper(rng, key):
  x = rng.normal(size=(10, 2)).astype(np.float32)
  y = rng.normal(size=(12, 2)).astype(np.float32)
  res = mmd_test(x, y, key=key, num_permutations=20)
  assert res.statistic.dtype == jnp.float32 and res.p_value.dtype == jnp.float32
  z = np.concatenate([x, y]).astype(np.float64)
  k = _gauss(z, z, 2.0)
  got = mmd_statistic_from_gram(
    jnp.asarray(k), jnp.arange(22) < 10, num_source=10, estimator="unbiased"
  )
  np.testing.assert_allclose(
    float(got), _mmd2_reference(x.astype(np.float64), y.astype(np.float64), 2.0, True), rtol=1e-10
  )


def test_errors(rng, key):
  x = rng.normal(size=(10, 2))
  with pytest.raises(ValueError, match="source"):
    mmd_test(np.zeros((0, 2)), x, key=key)
  with pytest.raises(ValueError, match="target"):
    mmd_test(x, np.zeros((1, 2)), key=key)
  with pytest.raises(ValueError, match="same feature dimension"):
    mmd_test(x, x[:, :1], key=key)
  with pytest.raises(ValueError, match="num_permutations"):
    mmd_test(x, x, key=key, num_permutations=0)
  with pytest.raises(ValueError, match="estimator"):
    mmd_test(x, x, key=key, estimator="linear")
  with pytest.raises(ValueError, match="kernel"):
    mmd_test(x, x, key=key, kernel="laplace")
