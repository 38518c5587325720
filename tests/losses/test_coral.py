"""Tests for dtl_jax.losses.coral against float64 NumPy references."""

import jax
import numpy as np
import pytest
from jax.test_util import check_grads

from dtl_jax.losses import coral, coral_tllib


def np_cov(x, w=None):
  x = np.asarray(x, np.float64)
  if w is None:
    return np.cov(x, rowvar=False, ddof=1)
  return np.cov(x, rowvar=False, aweights=np.asarray(w, np.float64), ddof=1)


def np_coral(s, t, ws=None, wt=None):
  d = s.shape[1]
  return np.sum((np_cov(s, ws) - np_cov(t, wt)) ** 2) / (4 * d * d)


def _data(rng, n_s, n_t, d, dtype=np.float64):
  s = rng.normal(size=(n_s, d))
  t = rng.normal(size=(n_t, d)) @ rng.normal(size=(d, d)) + 0.5
  return s.astype(dtype), t.astype(dtype)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_coral_matches_numpy(rng, dtype, rtol):
  s, t = _data(rng, 9, 6, 4, dtype)
  got = coral(s, t)
  assert got.dtype == dtype and got.shape == ()
  np.testing.assert_allclose(got, np_coral(s, t), rtol=rtol)


def test_coral_weighted_matches_numpy(rng):
  s, t = _data(rng, 8, 7, 3)
  ws, wt = rng.uniform(0.1, 2.0, 8), rng.uniform(0.1, 2.0, 7)
  # np.cov(aweights=w, ddof=1) is the reliability-weighted unbiased covariance.
  np.testing.assert_allclose(
    coral(s, t, source_weights=ws, target_weights=wt), np_coral(s, t, ws, wt), rtol=1e-10
  )
  np.testing.assert_allclose(
    coral(s, t, source_weights=np.full(8, 3.0)), np_coral(s, t), rtol=1e-10
  )


def test_coral_is_zero_for_shifted_copies(rng):
  s, _ = _data(rng, 10, 2, 5)
  np.testing.assert_allclose(coral(s, s + 3.0), 0.0, atol=1e-20)
  assert float(coral_tllib(s, s + 3.0)) > 8.9  # TLlib's mean term sees the shift: 3^2


def test_coral_tllib_matches_numpy(rng):
  s, t = _data(rng, 9, 6, 4)
  ref = np.mean((s.mean(0) - t.mean(0)) ** 2) + np.mean((np_cov(s) - np_cov(t)) ** 2)
  np.testing.assert_allclose(coral_tllib(s, t), ref, rtol=1e-10)


def test_coral_grads_vmap_jit(rng):
  s, t = _data(rng, 5, 4, 3)
  check_grads(coral, (s, t), order=2, modes=("rev",))
  check_grads(
    lambda a, b, w: coral(a, b, source_weights=w),
    (s, t, rng.uniform(0.5, 1, 5)),
    order=2,
    modes=("rev",),
  )
  sb, tb = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 6, 2))
  np.testing.assert_allclose(
    jax.vmap(coral)(sb, tb), [coral(sb[i], tb[i]) for i in range(3)], rtol=1e-12
  )
  traces = []

  def f(a, b):
    traces.append(1)
    return coral(a, b)

  jf = jax.jit(f)
  for shift in (0.0, 1.0):
    jf(s + shift, t)
  assert len(traces) == 1 and jf._cache_size() == 1


def test_coral_errors(rng):
  s, t = _data(rng, 5, 4, 3)
  with pytest.raises(ValueError, match=r"`source` must have shape \[n_s, d\]"):
    coral(s[0], t)
  with pytest.raises(ValueError, match="same feature dimension"):
    coral(s, t[:, :2])
  with pytest.raises(ValueError, match="non-empty"):
    coral(s, t[:0])
  with pytest.raises(ValueError, match="at least 2 rows"):
    coral(s[:1], t)
  with pytest.raises(ValueError, match=r"`target_weights` must have shape \[4\]"):
    coral(s, t, target_weights=np.ones(5))
  with pytest.raises(ValueError, match="non-negative"):
    coral(s, t, source_weights=-np.ones(5))


# ------------------------------------------------------------ the Gram formulation (n << d)


@pytest.mark.parametrize("weighted", [False, True])
def test_coral_gram_matches_numpy(rng, weighted):
  s, t = _data(rng, 7, 5, 40)
  ws, wt = (rng.uniform(0.1, 2.0, 7), rng.uniform(0.1, 2.0, 5)) if weighted else (None, None)
  ref = np_coral(s, t, ws, wt)
  for method in ("gram", "covariance", "auto"):
    got = coral(s, t, source_weights=ws, target_weights=wt, method=method)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
  check_grads(
    lambda a, b: coral(a, b, source_weights=ws, target_weights=wt, method="gram"),
    (s, t),
    order=1,
    modes=("rev",),
  )


def test_coral_auto_never_forms_d_by_d_matrices_when_n_is_small(rng):
  s, t = _data(rng, 6, 6, 64)
  shapes = {
    tuple(v.aval.shape) for eqn in jax.make_jaxpr(jax.grad(coral))(s, t).eqns for v in eqn.outvars
  }
  assert (64, 64) not in shapes and (6, 6) in shapes
  shapes_cov = {
    tuple(v.aval.shape)
    for eqn in jax.make_jaxpr(jax.grad(lambda a, b: coral(a, b, method="covariance")))(s, t).eqns
    for v in eqn.outvars
  }
  assert (64, 64) in shapes_cov


def test_coral_gram_float32_gradient_stays_accurate_when_covariances_are_close(rng):
  """The documented accuracy: close covariances (1 % apart) cost the Gram form's value
  some relative accuracy, but its gradient stays close to the float64 reference."""
  s = rng.normal(size=(64, 512))
  t = 1.01 * s + 0.01 * rng.normal(size=(64, 512))
  ref = np_coral(s, t)
  g_ref = jax.grad(lambda a, b: coral(a, b, method="covariance"))(s, t)
  s32, t32 = s.astype(np.float32), t.astype(np.float32)
  val = float(coral(s32, t32, method="gram"))
  g = np.asarray(jax.grad(lambda a, b: coral(a, b, method="gram"))(s32, t32), np.float64)
  assert abs(val - ref) / ref < 2e-3
  assert np.linalg.norm(g - g_ref) / np.linalg.norm(g_ref) < 1e-4


def test_coral_method_error(rng):
  s, t = _data(rng, 5, 5, 3)
  with pytest.raises(ValueError, match="method must be one of"):
    coral(s, t, method="fast")
