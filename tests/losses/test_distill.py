"""Knowledge distillation and hint losses (dtl_jax/losses/distill.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads

from dtl_jax.losses import distillation_loss, hint_loss

pytestmark = pytest.mark.usefixtures("fast_compile")


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_kd(zs, zt, tau, scale=True, w=None):
  ps, pt = np_softmax(zs / tau), np_softmax(zt / tau)
  kl = np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)
  loss = np.mean(kl if w is None else w * kl)
  return loss * tau**2 if scale else loss


@pytest.mark.parametrize("tau", [1.0, 4.0, 10.0])
def test_distillation_matches_numpy_and_torch(rng, tau):
  zs, zt = rng.normal(size=(6, 5)) * 3, rng.normal(size=(6, 5)) * 3
  got = float(distillation_loss(zs, zt, temperature=tau))
  np.testing.assert_allclose(got, np_kd(zs, zt, tau), rtol=1e-12)
  ref = (
    torch.nn.functional.kl_div(
      torch.log_softmax(torch.tensor(zs) / tau, 1),
      torch.softmax(torch.tensor(zt) / tau, 1),
      reduction="batchmean",
    )
    * tau**2
  )
  np.testing.assert_allclose(got, ref.item(), rtol=1e-12)
  np.testing.assert_allclose(
    float(distillation_loss(zs, zt, temperature=tau, scale_by_t2=False)),
    np_kd(zs, zt, tau, scale=False),
    rtol=1e-12,
  )


def test_distillation_properties(rng):
  zs = rng.normal(size=(4, 3))
  assert float(distillation_loss(zs, zs)) == pytest.approx(0.0, abs=1e-14)
  # shift invariance of softmax
  zt = rng.normal(size=(4, 3))
  np.testing.assert_allclose(
    float(distillation_loss(zs + 7.0, zt - 3.0)), float(distillation_loss(zs, zt)), rtol=1e-10
  )
  w = rng.uniform(size=4)
  np.testing.assert_allclose(
    float(distillation_loss(zs, zt, weights=w)), np_kd(zs, zt, 4.0, w=w), rtol=1e-12
  )
  # a teacher with underflowing probabilities stays finite (log-softmax, not log(p))
  big = jnp.asarray([[2000.0, -2000.0, 0.0]])
  assert np.isfinite(float(distillation_loss(jnp.zeros((1, 3)), big, temperature=1.0)))


def test_distillation_grads_jit_vmap(rng):
  zs, zt = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(4, 3)))
  fn = lambda a, b: distillation_loss(a, b, temperature=2.0)
  check_grads(jax.jit(lambda a: fn(a, zt)), (zs,), order=1)
  # closed-form gradient: tau^2 * (p_s - p_t) / (tau * n) = tau (p_s - p_t) / n
  expected = 2.0 * (np_softmax(np.asarray(zs) / 2) - np_softmax(np.asarray(zt) / 2)) / 4
  g_s, g_t = jax.grad(fn, argnums=(0, 1))(zs, zt)
  np.testing.assert_allclose(np.asarray(g_s), expected, rtol=1e-10, atol=1e-14)
  assert not np.asarray(g_t).any()  # teacher is detached
  eager = float(fn(zs, zt))
  np.testing.assert_allclose(float(jax.jit(fn)(zs, zt)), eager, rtol=1e-12)
  batched = jax.vmap(fn)(jnp.stack([zs, zt]), jnp.stack([zt, zs]))
  np.testing.assert_allclose(np.asarray(batched), [eager, float(fn(zt, zs))], rtol=1e-12)
  assert fn(zs.astype(jnp.float32), zt.astype(jnp.float32)).dtype == jnp.float32


def test_distillation_errors():
  with pytest.raises(ValueError, match="temperature"):
    distillation_loss(jnp.ones((2, 3)), jnp.ones((2, 3)), temperature=0.0)
  with pytest.raises(ValueError, match="temperature"):
    distillation_loss(jnp.ones((2, 3)), jnp.ones((2, 3)), temperature=-2.0)
  with pytest.raises(ValueError, match="teacher_logits"):
    distillation_loss(jnp.ones((2, 3)), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="student_logits"):
    distillation_loss(jnp.ones((2, 3, 1)), jnp.ones((2, 3, 1)))


def test_hint_loss(rng):
  s, t = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
  np.testing.assert_allclose(float(hint_loss(s, t)), np.mean((s - t) ** 2), rtol=1e-12)
  w = rng.uniform(size=3)
  np.testing.assert_allclose(
    float(hint_loss(s, t, weights=w)),
    np.mean(w * np.mean((s - t).reshape(3, -1) ** 2, axis=1)),
    rtol=1e-12,
  )
  fn = lambda a, b: hint_loss(a, b)
  sj, tj = jnp.asarray(s), jnp.asarray(t)
  check_grads(jax.jit(lambda a: fn(a, tj)), (sj,), order=1)
  g_s, g_t = jax.grad(fn, argnums=(0, 1))(sj, tj)
  np.testing.assert_allclose(np.asarray(g_s), 2 * (s - t) / s.size, rtol=1e-12)
  assert not np.asarray(g_t).any()
  batched = jax.vmap(fn)(jnp.stack([sj, tj]), jnp.stack([tj, tj]))
  np.testing.assert_allclose(np.asarray(batched), [np.mean((s - t) ** 2), 0.0], rtol=1e-12)
  with pytest.raises(ValueError, match="teacher_features"):
    hint_loss(jnp.ones((3, 4)), jnp.ones((3, 5)))
