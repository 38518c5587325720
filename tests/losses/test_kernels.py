"""Tests for dtl_jax.losses.kernels against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtl_jax.losses import kernels as K


def np_sq_dists(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_pairwise_sq_distances_matches_numpy(rng, dtype, rtol):
  x = rng.normal(size=(7, 5)).astype(dtype)
  y = (rng.normal(size=(4, 5)) + 1.0).astype(dtype)
  got = K.pairwise_sq_distances(x, y)
  assert got.dtype == dtype and got.shape == (7, 4)
  np.testing.assert_allclose(got, np_sq_dists(x, y), rtol=rtol, atol=rtol)
  self_d = K.pairwise_sq_distances(x)
  np.testing.assert_allclose(self_d, np_sq_dists(x, x), rtol=rtol, atol=10 * rtol)
  assert np.all(np.asarray(self_d) >= 0)  # clamped although the Gram form can round below 0


def test_pairwise_sq_distances_never_builds_difference_tensor():
  x = jnp.ones((64, 32))
  jaxpr = jax.make_jaxpr(K.pairwise_sq_distances)(x, x)
  shapes = [tuple(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars]
  assert (64, 64, 32) not in shapes and max(len(s) for s in shapes) <= 2


def test_gaussian_kernels_all_bandwidths_from_one_matrix(rng):
  d2 = np_sq_dists(rng.normal(size=(6, 3)), rng.normal(size=(5, 3)))
  sig = np.array([0.3, 1.0, 4.0])
  got = K.gaussian_kernels(d2, sig)
  ref = np.exp(-d2[None] / (2 * sig[:, None, None]))
  assert got.shape == (3, 6, 5)
  np.testing.assert_allclose(got, ref, rtol=1e-12)
  np.testing.assert_allclose(K.gaussian_kernels(d2, 2.0), np.exp(-d2 / 4.0), rtol=1e-12)


@pytest.mark.parametrize(
  "multipliers", [(0.125, 0.25, 0.5, 1.0, 2.0), (1.0, 0.25), (0.3, 1.7), (1.0, 1.0, 0.5)]
)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_gaussian_kernel_sum_matches_separate_exps(rng, multipliers, dtype, rtol):
  # Includes distances large enough that the narrowest kernels underflow.
  d2 = (np_sq_dists(rng.normal(size=(9, 4)), rng.normal(size=(8, 4))) * 3.0).astype(dtype)
  sigma2 = 1.3
  got = K.gaussian_kernel_sum(d2, sigma2, multipliers=multipliers)
  ref = sum(np.exp(-d2.astype(np.float64) / (2 * m * sigma2)) for m in multipliers)
  assert got.dtype == dtype
  np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-30)


def _count_primitive(jaxpr, name: str) -> int:
  """Occurrences of a primitive in a jaxpr and all its sub-jaxprs (custom_jvp calls ...)."""
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == name
    for sub in jax.core.jaxprs_in_params(eqn.params):
      count += _count_primitive(sub, name)
  return count


def test_power_of_two_path_uses_one_exp():
  d2 = jnp.ones((4, 4))
  jaxpr = jax.make_jaxpr(
    lambda d: K.gaussian_kernel_sum(d, 1.0, multipliers=(0.125, 0.25, 0.5, 1.0, 2.0))
  )(d2)
  assert _count_primitive(jaxpr.jaxpr, "exp") == 1
  assert K.power_of_two_exponents((0.125, 0.25, 0.5, 1.0, 2.0)) == (4, 3, 2, 1, 0)
  assert K.power_of_two_exponents((0.3, 1.0)) is None


def test_mean_heuristic_is_mean_of_all_pairwise_distances(rng):
  z = rng.normal(size=(11, 4)) * 2.0 + 5.0
  np.testing.assert_allclose(K.mean_heuristic(z), np_sq_dists(z, z).mean(), rtol=1e-12)
  z32 = z.astype(np.float32)
  assert K.mean_heuristic(z32).dtype == np.float32
  np.testing.assert_allclose(K.mean_heuristic(z32), np_sq_dists(z, z).mean(), rtol=1e-5)
  # Under stop_gradient, as TLlib's `.detach()`.
  np.testing.assert_array_equal(jax.grad(lambda z: K.mean_heuristic(z))(z), 0.0)
  # Degenerate batch: 1 instead of 0 / 0.
  assert float(K.mean_heuristic(np.ones((3, 2)))) == 1.0


def test_median_heuristic_matches_numpy(rng):
  z = rng.normal(size=(10, 3))
  d2 = np_sq_dists(z, z)
  ref = np.median(d2[np.triu_indices(10, k=1)])
  np.testing.assert_allclose(K.median_heuristic(z), ref, rtol=1e-12)
  np.testing.assert_array_equal(jax.grad(lambda z: K.median_heuristic(z))(z), 0.0)


def test_gaussian_kernel_spec(rng):
  x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
  joint = np.concatenate([x, y])
  spec = K.GaussianKernel(multipliers=(0.5, 1.0, 2.0))
  s2 = np_sq_dists(joint, joint).mean()
  ref = sum(np.exp(-np_sq_dists(x, y) / (2 * m * s2)) for m in (0.5, 1.0, 2.0))
  np.testing.assert_allclose(spec(x, y), ref, rtol=1e-10)
  np.testing.assert_allclose(
    spec.bandwidths(jnp.asarray(joint)), s2 * np.array([0.5, 1.0, 2.0]), rtol=1e-12
  )
  fixed = K.GaussianKernel(sigma2=0.7)
  np.testing.assert_allclose(fixed(x, y), np.exp(-np_sq_dists(x, y) / 1.4), rtol=1e-10)
  med = K.GaussianKernel(rule="median")
  np.testing.assert_allclose(
    med.base_sigma2(jnp.asarray(joint)),
    np.median(np_sq_dists(joint, joint)[np.triu_indices(9, k=1)]),
    rtol=1e-12,
  )
  np.testing.assert_allclose(K.LinearKernel()(x, y), x @ y.T, rtol=1e-12)


def test_gaussian_kernel_is_a_pytree_vmappable_over_sigma2(rng):
  x = rng.normal(size=(4, 2))
  sig = jnp.array([0.5, 1.0, 3.0])
  got = jax.vmap(lambda s: K.GaussianKernel(sigma2=s)(x))(sig)
  for i, s in enumerate([0.5, 1.0, 3.0]):
    np.testing.assert_allclose(got[i], np.exp(-np_sq_dists(x, x) / (2 * s)), rtol=1e-10, atol=1e-14)


def test_errors(rng):
  x = rng.normal(size=(4, 3))
  with pytest.raises(ValueError, match=r"`x` must have shape \[n, d\]"):
    K.pairwise_sq_distances(x[0])
  with pytest.raises(ValueError, match="same feature dimension"):
    K.pairwise_sq_distances(x, x[:, :2])
  with pytest.raises(ValueError, match="non-empty"):
    K.pairwise_sq_distances(x[:0])
  with pytest.raises(ValueError, match="`sigma2s` must be finite and > 0"):
    K.gaussian_kernels(np_sq_dists(x, x), np.array([1.0, -1.0]))
  with pytest.raises(ValueError, match="`sigma2` must be finite and > 0"):
    K.GaussianKernel(sigma2=0.0)
  with pytest.raises(ValueError, match="sigma2 must be a scalar"):
    K.GaussianKernel(sigma2=np.ones(2))
  with pytest.raises(ValueError, match="multipliers must be"):
    K.GaussianKernel(multipliers=(1.0, -2.0))
  with pytest.raises(ValueError, match="multipliers must be"):
    K.GaussianKernel(multipliers=())
  with pytest.raises(ValueError, match="rule must be one of"):
    K.GaussianKernel(rule="max")
  with pytest.raises(ValueError, match="kernel must be"):
    K.as_kernel("rbf")
  with pytest.raises(ValueError, match="N >= 2"):
    K.median_heuristic(x[:1])
