"""Kernel mean matching: constraints, QP optimality (SciPy SLSQP) and weighted-MMD reduction."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from dtl_jax.instance import kmm_weights, project_box_sum


def _gauss(a, b, sigma2):
  d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
  return np.exp(-d / (2 * sigma2))


def _weighted_mmd2(xs, xt, w, sigma2):
  """Biased MMD² between the w-weighted source (weights normalized to mean 1) and the target."""
  p = w / w.sum()
  q = np.full(len(xt), 1.0 / len(xt))
  return (
    p @ _gauss(xs, xs, sigma2) @ p
    + q @ _gauss(xt, xt, sigma2) @ q
    - 2 * p @ _gauss(xs, xt, sigma2) @ q
  )


@pytest.fixture
def shifted(rng):
  xs = rng.normal(size=(60, 2))
  xt = 0.6 * rng.normal(size=(50, 2)) + np.array([0.8, 0.0])
  return xs, xt


def test_constraints_hold_and_weighted_mmd_drops(shifted):
  xs, xt = shifted
  upper, eps = 6.0, 0.05
  w = np.asarray(kmm_weights(xs, xt, sigma2=1.0, upper=upper, epsilon=eps))
  assert w.shape == (60,)
  assert np.all(w >= 0) and np.all(w <= upper + 1e-9)
  assert abs(w.mean() - 1.0) <= eps + 1e-9
  before = _weighted_mmd2(xs, xt, np.ones(60), 1.0)
  after = _weighted_mmd2(xs, xt, w, 1.0)
  assert after < 0.25 * before, (before, after)


def test_matches_scipy_qp_solution(rng):
  xs = rng.normal(size=(20, 2))
  xt = rng.normal(size=(25, 2)) + np.array([0.7, 0.3])
  n_s, n_t, upper, eps, sigma2 = 20, 25, 4.0, 0.1, 0.8
  k = _gauss(xs, xs, sigma2)
  kappa = n_s / n_t * _gauss(xs, xt, sigma2).sum(1)
  obj = lambda b: 0.5 * b @ k @ b - kappa @ b
  cons = [
    {"type": "ineq", "fun": lambda b: n_s * (1 + eps) - b.sum()},
    {"type": "ineq", "fun": lambda b: b.sum() - n_s * (1 - eps)},
  ]
  ref = minimize(
    obj,
    np.ones(n_s),
    jac=lambda b: k @ b - kappa,
    bounds=[(0, upper)] * n_s,
    constraints=cons,
    method="SLSQP",
    options={"ftol": 1e-14, "maxiter": 1000},
  )
  assert ref.success
  w = np.asarray(kmm_weights(xs, xt, sigma2=sigma2, upper=upper, epsilon=eps, num_iterations=3000))
  assert obj(w) <= ref.fun + 1e-7 * abs(ref.fun)
  np.testing.assert_allclose(w, ref.x, atol=2e-3)


def test_projection_matches_scipy(rng):
  v = rng.normal(size=8) * 2.0
  for lo, hi in [(6.0, 7.0), (0.5, 1.0), (-1.0, 100.0)]:
    got = np.asarray(project_box_sum(jnp.asarray(v), upper=1.5, sum_low=lo, sum_high=hi))
    cons = [
      {"type": "ineq", "fun": lambda w, hi=hi: hi - w.sum()},
      {"type": "ineq", "fun": lambda w, lo=lo: w.sum() - lo},
    ]
    ref = minimize(
      lambda w: ((w - v) ** 2).sum(),
      np.clip(v, 0, 1.5),
      bounds=[(0, 1.5)] * 8,
      constraints=cons,
      method="SLSQP",
      options={"ftol": 1e-14},
    )
    np.testing.assert_allclose(got, ref.x, atol=1e-6)


def test_default_bandwidth_and_dtype(shifted):
  xs, xt = shifted
  w = kmm_weights(xs.astype(np.float32), xt.astype(np.float32), num_iterations=200)
  assert w.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(w)))
  eps = (np.sqrt(60) - 1) / np.sqrt(60)
  assert abs(float(w.mean()) - 1.0) <= eps + 1e-5


def test_errors(shifted):
  xs, xt = shifted
  with pytest.raises(ValueError, match="source"):
    kmm_weights(np.zeros((0, 2)), xt)
  with pytest.raises(ValueError, match="target"):
    kmm_weights(xs, np.zeros((0, 2)))
  with pytest.raises(ValueError, match="same feature dimension"):
    kmm_weights(xs, xt[:, :1])
  with pytest.raises(ValueError, match="upper"):
    kmm_weights(xs, xt, upper=0.5)
  with pytest.raises(ValueError, match="sigma2"):
    kmm_weights(xs, xt, sigma2=-1.0)


def test_weights_plug_into_mmd_loss(shifted):
  """KMM weights are the losses' `source_weights`: the weighted MMD loss drops."""
  from dtl_jax.losses import mmd
  from dtl_jax.losses.kernels import GaussianKernel

  xs, xt = shifted
  w = kmm_weights(xs, xt, sigma2=1.0)
  kernel = GaussianKernel(sigma2=1.0)
  weighted = float(mmd(xs, xt, kernel=kernel, source_weights=w))
  np.testing.assert_allclose(weighted, _weighted_mmd2(xs, xt, np.asarray(w), 1.0), rtol=1e-8)
  assert weighted < 0.25 * float(mmd(xs, xt, kernel=kernel))
