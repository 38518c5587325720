"""Gradient reversal and GRL schedules (dtl_jax/losses/grl.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dtl_jax.losses import dann_schedule, gradient_reverse, warm_start_schedule


def _f(x):
  """A non-linear scalar function with a non-trivial gradient."""
  return jnp.sum(jnp.sin(x) * x**2) + jnp.prod(jnp.cos(x[:2]))


def test_forward_is_identity(rng):
  x = rng.normal(size=(4, 3))
  np.testing.assert_array_equal(np.asarray(gradient_reverse(x, 0.7)), x)


@pytest.mark.parametrize("coeff", [0.0, 0.3, 1.0, 2.5])
def test_grad_is_minus_coeff_times_grad_with_traced_coeff(rng, coeff):
  x = jnp.asarray(rng.normal(size=(5,)))

  @jax.jit
  def reversed_grad(x, c):  # c is traced inside jit
    return jax.grad(lambda x: _f(gradient_reverse(x, c)))(x)

  expected = -coeff * np.asarray(jax.grad(_f)(x))
  np.testing.assert_allclose(np.asarray(reversed_grad(x, coeff)), expected, rtol=1e-12, atol=1e-14)


def test_schedule_coeff_traced_from_step_counter(rng):
  x = jnp.asarray(rng.normal(size=(5,)))
  schedule = dann_schedule(total_steps=100)

  @jax.jit
  def step(x, i):
    return jax.grad(lambda x: _f(gradient_reverse(x, schedule(i))))(x)

  for i in (0, 10, 55):
    lam = 2.0 / (1.0 + np.exp(-10.0 * i / 100)) - 1.0
    np.testing.assert_allclose(
      np.asarray(step(x, i)), -lam * np.asarray(jax.grad(_f)(x)), rtol=1e-12, atol=1e-14
    )


def test_coefficient_gets_zero_gradient(rng):
  x = jnp.asarray(rng.normal(size=(4,)))
  g_c = jax.grad(lambda c: _f(gradient_reverse(x * c, c)), argnums=0)(0.5)
  # d/dc f(R(x c)) only through x*c: -c * (x . grad f(x c)); nothing through coeff.
  expected = -0.5 * np.dot(np.asarray(x), np.asarray(jax.grad(_f)(x * 0.5)))
  np.testing.assert_allclose(float(g_c), expected, rtol=1e-12)
  g_only_coeff = jax.grad(lambda c: _f(gradient_reverse(x, c)))(0.5)
  assert float(g_only_coeff) == 0.0


def test_pytree_with_integer_leaf(rng):
  tree = {
    "a": jnp.asarray(rng.normal(size=(3,))),
    "b": (jnp.asarray(rng.normal(size=(2, 2))),),
    "n": jnp.arange(3),
  }

  def loss(t):
    return jnp.sum(t["a"] ** 3) + jnp.sum(jnp.exp(t["b"][0])) + jnp.sum(t["n"])

  out = gradient_reverse(tree, 2.0)
  assert jax.tree.structure(out) == jax.tree.structure(tree)
  np.testing.assert_array_equal(np.asarray(out["n"]), np.arange(3))
  g = jax.grad(lambda t: loss(gradient_reverse(t, 2.0)), allow_int=True)(tree)
  np.testing.assert_allclose(np.asarray(g["a"]), -2.0 * 3 * np.asarray(tree["a"]) ** 2)
  np.testing.assert_allclose(np.asarray(g["b"][0]), -2.0 * np.exp(np.asarray(tree["b"][0])))
  assert g["n"].dtype == jax.dtypes.float0


def test_float32_preserved_and_vmap(rng):
  x = jnp.asarray(rng.normal(size=(3, 4)), dtype=jnp.float32)
  assert gradient_reverse(x, 1.0).dtype == jnp.float32
  g = jax.grad(lambda x: jnp.sum(gradient_reverse(x, 0.5) ** 2))(x)
  assert g.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(g), -np.asarray(x), rtol=1e-6)
  coeffs = jnp.asarray([0.0, 1.0, 3.0])
  per_row = jax.vmap(jax.grad(lambda r, c: jnp.sum(gradient_reverse(r, c) ** 2)))(x, coeffs)
  np.testing.assert_allclose(
    np.asarray(per_row), -2 * np.asarray(coeffs)[:, None] * np.asarray(x), rtol=1e-6
  )


def test_check_grads_reversed(rng):
  x = jnp.asarray(rng.normal(size=(4,)))
  # check_grads compares against numerical derivatives of the (identity) forward pass,
  # so the reversed gradient must be undone by coeff = -1 to match: R_{-1} has dR/dx = I.
  check_grads(lambda x: _f(gradient_reverse(x, -1.0)), (x,), order=1, modes=("rev",))


def test_non_scalar_coeff_raises():
  with pytest.raises(ValueError, match="coeff"):
    gradient_reverse(jnp.ones(3), jnp.ones(2))


@pytest.mark.parametrize(
  "hi,lo,alpha,max_iters", [(1.0, 0.0, 1.0, 1000), (0.1, 0.0, 1.0, 1000), (2.0, 0.5, 10.0, 300)]
)
def test_warm_start_schedule_formula(hi, lo, alpha, max_iters):
  schedule = warm_start_schedule(hi=hi, lo=lo, alpha=alpha, max_iters=max_iters)
  steps = np.array([0, 1, 50, 299, 1000, 5000])
  expected = 2.0 * (hi - lo) / (1.0 + np.exp(-alpha * steps / max_iters)) - (hi - lo) + lo
  got = np.array([float(schedule(int(s))) for s in steps])
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(
    np.asarray(jax.jit(schedule)(jnp.asarray(steps))), expected, rtol=1e-12, atol=1e-15
  )
  assert float(schedule(0)) == pytest.approx(lo)


def test_dann_schedule_formula():
  schedule = dann_schedule(total_steps=500, gamma=10.0)
  steps = np.array([0, 1, 100, 250, 499, 500])
  p = steps / 500
  expected = 2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0
  np.testing.assert_allclose(
    np.asarray(jax.jit(schedule)(jnp.asarray(steps))), expected, rtol=1e-12, atol=1e-15
  )
  # progress is clipped at 1 after total_steps
  assert float(schedule(10_000)) == pytest.approx(expected[-1], rel=1e-12)
  # DANN's schedule is TLlib's warm start with lo=0, hi=1, alpha=gamma, N=total_steps
  warm = warm_start_schedule(hi=1.0, lo=0.0, alpha=10.0, max_iters=500)
  np.testing.assert_allclose(float(schedule(123)), float(warm(123)), rtol=1e-12)


def test_schedule_bad_arguments():
  with pytest.raises(ValueError, match="total_steps"):
    dann_schedule(total_steps=0)
  with pytest.raises(ValueError, match="max_iters"):
    warm_start_schedule(max_iters=-1)
