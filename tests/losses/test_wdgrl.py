"""WDGRL critic loss, gradient penalty and sliced Wasserstein (dtl_jax/losses/wdgrl.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dtl_jax.losses import gradient_penalty, sliced_wasserstein, wasserstein_critic_loss

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_wasserstein_critic_loss(rng):
  cs, ct = rng.normal(size=(5, 1)), rng.normal(size=(3,))
  ws, wt = rng.uniform(size=5), rng.uniform(size=3)
  np.testing.assert_allclose(
    float(wasserstein_critic_loss(cs, ct)), cs.mean() - ct.mean(), rtol=1e-12
  )
  got = wasserstein_critic_loss(cs, ct, source_weights=ws, target_weights=wt)
  np.testing.assert_allclose(float(got), np.mean(ws * cs[:, 0]) - np.mean(wt * ct), rtol=1e-12)
  g_s, g_t = jax.grad(wasserstein_critic_loss, argnums=(0, 1))(jnp.asarray(cs), jnp.asarray(ct))
  np.testing.assert_allclose(np.asarray(g_s), np.full((5, 1), 1 / 5))
  np.testing.assert_allclose(np.asarray(g_t), np.full((3,), -1 / 3))
  with pytest.raises(ValueError, match="critic_source"):
    wasserstein_critic_loss(jnp.ones((5, 2)), jnp.ones(3))


def test_gradient_penalty_linear_critic(rng, key):
  s, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  w = jnp.asarray(rng.normal(size=(4,)))
  gp = lambda w: gradient_penalty(lambda h: h @ w + 0.3, s, t, key=key)
  norm = np.linalg.norm(np.asarray(w))
  np.testing.assert_allclose(float(gp(w)), (norm - 1) ** 2, rtol=1e-12)
  # differentiable w.r.t. the critic's parameters (double backprop)
  np.testing.assert_allclose(
    np.asarray(jax.grad(gp)(w)), 2 * (norm - 1) * np.asarray(w) / norm, rtol=1e-12
  )
  # zero gradient (constant critic): penalty 1, finite gradient
  zero = jnp.zeros(4)
  np.testing.assert_allclose(float(gp(zero)), 1.0)
  assert np.isfinite(np.asarray(jax.grad(gp)(zero))).all()


def test_gradient_penalty_quadratic_critic_matches_numpy(rng, key):
  n, d = 5, 3
  s, t = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  a = jnp.asarray(rng.normal(size=(d, d)))
  critic = lambda a: lambda h: 0.5 * jnp.sum((h @ a) * h, axis=-1, keepdims=True)
  got = gradient_penalty(critic(a), s, t, key=key)
  alpha = np.asarray(jax.random.uniform(key, (n, 1), jnp.float64))
  h = alpha * s + (1 - alpha) * t
  grads = h @ (0.5 * (np.asarray(a) + np.asarray(a).T))
  expected = np.mean((np.linalg.norm(grads, axis=1) - 1) ** 2)
  np.testing.assert_allclose(float(got), expected, rtol=1e-12)
  # check_grads through the double backprop (w.r.t. critic params and the features)
  fn = lambda a, s: gradient_penalty(critic(a), s, t, key=key)
  check_grads(jax.jit(fn), (a, jnp.asarray(s)), order=1, modes=("rev",))
  np.testing.assert_allclose(float(jax.jit(fn)(a, jnp.asarray(s))), expected, rtol=1e-12)
  # another key, other interpolates
  assert float(gradient_penalty(critic(a), s, t, key=jax.random.key(7))) != pytest.approx(expected)


def test_critic_loss_and_penalty_jit_vmap(rng, key):
  a = jnp.asarray(rng.normal(size=(3, 3)))
  critic = lambda h: jnp.tanh(h @ a)[:, 0]
  s, t = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(4, 3)))
  gp = lambda s, t: gradient_penalty(critic, s, t, key=key)
  eager = float(gp(s, t))
  np.testing.assert_allclose(float(jax.jit(gp)(s, t)), eager, rtol=1e-12)
  batched = jax.vmap(gp)(jnp.stack([s, t]), jnp.stack([t, s]))
  np.testing.assert_allclose(np.asarray(batched), [eager, float(gp(t, s))], rtol=1e-12)
  assert gp(s.astype(jnp.float32), t.astype(jnp.float32)).dtype == jnp.float32
  wd = lambda s, t: wasserstein_critic_loss(critic(s), critic(t))
  check_grads(jax.jit(wd), (s, t), order=1)
  batched = jax.vmap(wd)(jnp.stack([s, t]), jnp.stack([t, s]))
  np.testing.assert_allclose(np.asarray(batched), [float(wd(s, t)), float(wd(t, s))], rtol=1e-12)


def test_gradient_penalty_errors(rng, key):
  with pytest.raises(ValueError, match="same batch size"):
    gradient_penalty(lambda h: h[:, 0], jnp.ones((4, 2)), jnp.ones((3, 2)), key=key)
  with pytest.raises(ValueError, match="critic_fn"):
    gradient_penalty(lambda h: h, jnp.ones((4, 2)), jnp.ones((4, 2)), key=key)
  with pytest.raises(ValueError, match="source"):
    gradient_penalty(lambda h: h[:, 0], jnp.ones(4), jnp.ones(4), key=key)


def np_sliced(s, t, theta, p):
  ps, pt = np.sort(s @ theta, axis=0), np.sort(t @ theta, axis=0)
  return np.mean(np.abs(ps - pt) ** p)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_sliced_wasserstein_with_projections(rng, p):
  s, t = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 1.0
  theta = rng.normal(size=(3, 5))
  np.testing.assert_allclose(
    float(sliced_wasserstein(s, t, projections=theta, p=p)), np_sliced(s, t, theta, p), rtol=1e-12
  )


def test_sliced_wasserstein_closed_forms(rng, key):
  # 1-D data: every unit direction is +-1, SW_p^p is the exact W_p^p of sorted samples
  x, y = rng.normal(size=(9, 1)), rng.exponential(size=(9, 1))
  np.testing.assert_allclose(
    float(sliced_wasserstein(x, y, key=key, num_projections=4)),
    np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2),
    rtol=1e-12,
  )
  # a pure translation m: SW_2^2 = mean_l (m . theta_l)^2, and ~ |m|^2 / d for many l
  s = rng.normal(size=(6, 3))
  m = np.array([1.0, -2.0, 0.5])
  got = float(sliced_wasserstein(s, s + m, key=key, num_projections=4000))
  np.testing.assert_allclose(got, np.sum(m**2) / 3, rtol=0.06)
  assert float(sliced_wasserstein(s, s[::-1], key=key)) == pytest.approx(0.0, abs=1e-24)


def test_sliced_wasserstein_grads_jit_vmap(rng, key):
  s, t = jnp.asarray(rng.normal(size=(6, 3))), jnp.asarray(rng.normal(size=(6, 3)))
  fn = lambda s, t: sliced_wasserstein(s, t, key=key, num_projections=8)
  check_grads(jax.jit(fn), (s, t), order=1)
  eager = float(fn(s, t))
  np.testing.assert_allclose(float(jax.jit(fn)(s, t)), eager, rtol=1e-12)
  batched = jax.vmap(fn)(jnp.stack([s, 2 * s]), jnp.stack([t, t]))
  np.testing.assert_allclose(np.asarray(batched), [eager, float(fn(2 * s, t))], rtol=1e-12)
  f32 = fn(s.astype(jnp.float32), t.astype(jnp.float32))
  assert f32.dtype == jnp.float32


def test_sliced_wasserstein_errors(key):
  with pytest.raises(ValueError, match="same batch size"):
    sliced_wasserstein(jnp.ones((4, 2)), jnp.ones((3, 2)), key=key)
  with pytest.raises(ValueError, match="feature dimension"):
    sliced_wasserstein(jnp.ones((4, 2)), jnp.ones((4, 3)), key=key)
  with pytest.raises(ValueError, match="key"):
    sliced_wasserstein(jnp.ones((4, 2)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="projections"):
    sliced_wasserstein(jnp.ones((4, 2)), jnp.ones((4, 2)), projections=jnp.ones((3, 5)))
  with pytest.raises(ValueError, match="`p`"):
    sliced_wasserstein(jnp.ones((4, 2)), jnp.ones((4, 2)), key=key, p=0.5)
