"""Entropy, certainty weights, entropy minimisation and MCC (dtl_jax/losses/entropy.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dtl_jax.losses import entropy, entropy_minimization_loss, entropy_weights, mcc_loss

pytestmark = pytest.mark.usefixtures("fast_compile")


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_entropy_exact(p):
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def test_entropy_probs_and_logits(rng):
  z = rng.normal(size=(5, 4)) * 2
  p = np_softmax(z)
  np.testing.assert_allclose(
    np.asarray(entropy(p)), -np.sum(p * np.log(p + 1e-5), axis=1), rtol=1e-12
  )
  np.testing.assert_allclose(np.asarray(entropy(p, epsilon=0.0)), np_entropy_exact(p), rtol=1e-12)
  np.testing.assert_allclose(
    np.asarray(entropy(z, from_logits=True)), np_entropy_exact(p), rtol=1e-12
  )
  # closed forms: uniform -> log C, one-hot -> 0; extra leading axes are kept
  np.testing.assert_allclose(
    np.asarray(entropy(jnp.zeros((2, 3, 4)), from_logits=True)),
    np.full((2, 3), np.log(4)),
    rtol=1e-12,
  )
  onehot = jnp.eye(3)
  np.testing.assert_allclose(np.asarray(entropy(onehot, epsilon=0.0)), np.zeros(3), atol=0)
  # finite gradient at a one-hot with TLlib's epsilon and from logits
  assert np.isfinite(np.asarray(jax.grad(lambda p: jnp.sum(entropy(p)))(onehot))).all()
  big = jnp.asarray([[1000.0, 0.0, -1000.0]])
  grad = jax.grad(lambda z: jnp.sum(entropy(z, from_logits=True)))(big)
  assert np.isfinite(np.asarray(grad)).all()


def test_entropy_grads_jit_vmap(rng):
  z = jnp.asarray(rng.normal(size=(4, 3)))
  fn = lambda z: jnp.sum(entropy(z, from_logits=True) ** 2)
  check_grads(jax.jit(fn), (z,), order=1)
  p = jax.nn.softmax(z)
  fp = lambda p: jnp.sum(entropy(p) * jnp.arange(4.0))
  check_grads(jax.jit(fp), (p,), order=1, modes=("rev",))
  np.testing.assert_allclose(
    np.asarray(jax.jit(lambda p: entropy(p))(p)), np.asarray(entropy(p)), rtol=1e-12
  )
  batched = jax.vmap(lambda z: entropy(z, from_logits=True))(jnp.stack([z, 2 * z]))
  np.testing.assert_allclose(
    np.asarray(batched),
    np.stack(
      [np_entropy_exact(np_softmax(np.asarray(z))), np_entropy_exact(np_softmax(2 * np.asarray(z)))]
    ),
    rtol=1e-12,
  )
  assert entropy(z.astype(jnp.float32), from_logits=True).dtype == jnp.float32


def test_entropy_errors():
  with pytest.raises(ValueError, match="`x`.*sums to 1"):
    entropy(jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="`x`"):
    entropy(jnp.asarray([[1.5, -0.5]]))
  with pytest.raises(ValueError, match="`x`"):
    entropy(jnp.asarray(1.0))
  with pytest.raises(ValueError, match="epsilon"):
    entropy(jnp.full((1, 2), 0.5), epsilon=-1.0)
  # under jit only static checks run (documented): no error, no host sync
  jax.jit(entropy)(jnp.ones((2, 3)))


def test_entropy_weights(rng):
  p = np_softmax(rng.normal(size=(6, 3)) * 3)
  w = 1 + np.exp(np.sum(p * np.log(p + 1e-5), axis=1))
  np.testing.assert_allclose(np.asarray(entropy_weights(p)), w, rtol=1e-12)
  np.testing.assert_allclose(
    np.asarray(entropy_weights(p, normalize=True)), w / w.sum() * 6, rtol=1e-12
  )
  assert (np.asarray(entropy_weights(p)) > 1).all()
  assert (np.asarray(entropy_weights(p)) <= 2).all()
  with pytest.raises(ValueError, match="probs"):
    entropy_weights(jnp.full((2, 3), 0.5))
  with pytest.raises(ValueError, match="probs"):
    entropy_weights(jnp.full((3,), 1 / 3))


def test_entropy_minimization_loss(rng):
  z = rng.normal(size=(5, 4)) * 2
  w = rng.uniform(size=5)
  h = np_entropy_exact(np_softmax(z))
  np.testing.assert_allclose(float(entropy_minimization_loss(z)), h.mean(), rtol=1e-12)
  np.testing.assert_allclose(
    float(entropy_minimization_loss(z, weights=w)), np.mean(w * h), rtol=1e-12
  )
  zj = jnp.asarray(z)
  check_grads(jax.jit(entropy_minimization_loss), (zj,), order=1)
  batched = jax.vmap(entropy_minimization_loss)(jnp.stack([zj, zj * 3]))
  np.testing.assert_allclose(
    np.asarray(batched), [h.mean(), np_entropy_exact(np_softmax(3 * z)).mean()], rtol=1e-12
  )
  with pytest.raises(ValueError, match="logits"):
    entropy_minimization_loss(jnp.ones(4))


def np_mcc(z, tau, w=None):
  """Jin et al. (ECCV 2020) with the paper's row normalisation, loop-based."""
  n, k = z.shape
  y = np_softmax(z / tau)
  if w is None:
    h = -np.sum(y * np.log(y + 1e-5), axis=1)
    w = 1 + np.exp(-h)
    w = n * w / w.sum()
  c = np.zeros((k, k))
  for i in range(n):
    c += w[i] * np.outer(y[i], y[i])
  c_tilde = c / c.sum(axis=1, keepdims=True)
  return sum(c_tilde[j, jj] for j in range(k) for jj in range(k) if j != jj) / k


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_mcc_matches_numpy(rng, tau):
  z = rng.normal(size=(8, 4)) * 2
  np.testing.assert_allclose(float(mcc_loss(z, temperature=tau)), np_mcc(z, tau), rtol=1e-12)


def test_mcc_properties_grads_jit_vmap(rng):
  # confident, class-separated predictions -> no confusion
  z = 50.0 * np.eye(3)[[0, 1, 2, 0]]
  assert float(mcc_loss(z, temperature=1.0)) == pytest.approx(0.0, abs=1e-12)
  # identical uniform predictions -> maximal confusion (K - 1) / K
  assert float(mcc_loss(np.zeros((4, 3)))) == pytest.approx(2 / 3, rel=1e-12)
  zj = jnp.asarray(rng.normal(size=(6, 3)))
  # The certainty weights are detached, so the gradient is that of the loss with the
  # weights frozen: compare with central differences of the NumPy reference.
  z0 = np.asarray(zj)
  y0 = np_softmax(z0 / 2.5)
  w0 = 1 + np.exp(np.sum(y0 * np.log(y0 + 1e-5), axis=1))
  w0 = 6 * w0 / w0.sum()
  numeric = np.zeros_like(z0)
  for idx in np.ndindex(z0.shape):
    e = np.zeros_like(z0)
    e[idx] = 1e-6
    numeric[idx] = (np_mcc(z0 + e, 2.5, w0) - np_mcc(z0 - e, 2.5, w0)) / 2e-6
  np.testing.assert_allclose(
    np.asarray(jax.jit(jax.grad(mcc_loss))(zj)), numeric, rtol=1e-6, atol=1e-9
  )
  np.testing.assert_allclose(float(jax.jit(mcc_loss)(zj)), float(mcc_loss(zj)), rtol=1e-12)
  batched = jax.vmap(mcc_loss)(jnp.stack([zj, 2 * zj]))
  np.testing.assert_allclose(
    np.asarray(batched), [np_mcc(np.asarray(zj), 2.5), np_mcc(2 * np.asarray(zj), 2.5)], rtol=1e-12
  )
  assert mcc_loss(zj.astype(jnp.float32)).dtype == jnp.float32
  with pytest.raises(ValueError, match="temperature"):
    mcc_loss(zj, temperature=0.0)
  with pytest.raises(ValueError, match="logits"):
    mcc_loss(jnp.ones((2, 3, 4)))
