"""CDAN maps and loss (dtl_jax/losses/cdan.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dtl_jax.losses import (
  cdan_features,
  cdan_loss,
  dann_loss,
  multilinear_map,
  randomized_map_matrices,
  randomized_multilinear_map,
)

pytestmark = pytest.mark.usefixtures("fast_compile")


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_multilinear(f, g):
  out = np.zeros((f.shape[0], g.shape[1] * f.shape[1]))
  for i in range(f.shape[0]):
    for c in range(g.shape[1]):
      for k in range(f.shape[1]):
        out[i, c * f.shape[1] + k] = g[i, c] * f[i, k]
  return out


def np_cdan(ds, dt, zs=None, zt=None, entropy_conditioning=False):
  d = np.concatenate([np.ravel(ds), np.ravel(dt)])
  y = np.concatenate([np.ones(np.size(ds)), np.zeros(np.size(dt))])
  s = 1 / (1 + np.exp(-d))
  bce = -(y * np.log(s) + (1 - y) * np.log(1 - s))
  if not entropy_conditioning:
    return bce.mean()
  g = np_softmax(np.concatenate([zs, zt]))
  h = -np.sum(g * np.log(g + 1e-5), axis=1)
  w = 1 + np.exp(-h)
  w = w / w.sum() * len(w)
  return np.mean(w * bce)


def test_multilinear_map_index_order(rng):
  f, g = rng.normal(size=(3, 4)), np_softmax(rng.normal(size=(3, 5)))
  out = multilinear_map(f, g)
  assert out.shape == (3, 20)
  np.testing.assert_allclose(np.asarray(out), np_multilinear(f, g), rtol=1e-14)
  f32 = multilinear_map(jnp.asarray(f, jnp.float32), jnp.asarray(g, jnp.float32))
  assert f32.dtype == jnp.float32


def test_randomized_map_with_matrices_and_key(rng, key):
  f, g = rng.normal(size=(4, 6)), np_softmax(rng.normal(size=(4, 3)))
  r_f, r_g = rng.normal(size=(6, 16)), rng.normal(size=(3, 16))
  expected = (f @ r_f) * (g @ r_g) / np.sqrt(16)
  got = randomized_multilinear_map(f, g, matrices=(r_f, r_g))
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12)
  # from a key: reproducible, and the same as drawing the matrices once
  a = randomized_multilinear_map(f, g, key=key, dim=32)
  b = jax.jit(lambda f, g: randomized_multilinear_map(f, g, key=key, dim=32))(f, g)
  mats = randomized_map_matrices(key, 6, 3, 32, dtype=jnp.float64)
  assert mats[0].shape == (6, 32) and mats[1].shape == (3, 32)
  c = randomized_multilinear_map(f, g, matrices=mats)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
  np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-12)
  m0, m1 = (np.asarray(m) for m in mats)
  np.testing.assert_allclose(np.asarray(c), (f @ m0) * (g @ m1) / np.sqrt(32), rtol=1e-12)
  other = randomized_multilinear_map(f, g, key=jax.random.key(1), dim=32)
  assert not np.allclose(np.asarray(a), np.asarray(other))


def test_randomized_map_matrices_are_standard_normal(key):
  r_f, r_g = randomized_map_matrices(key, 64, 10, 256)
  both = np.concatenate([np.ravel(r_f), np.ravel(r_g)])
  assert abs(both.mean()) < 0.02 and abs(both.std() - 1) < 0.02


def test_cdan_features_detaches_probs(rng):
  f, z = jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.normal(size=(3, 2)))
  np.testing.assert_allclose(
    np.asarray(cdan_features(f, z)),
    np_multilinear(np.asarray(f), np_softmax(np.asarray(z))),
    rtol=1e-12,
  )
  loss = lambda f, z: jnp.sum(jnp.sin(cdan_features(f, z)))
  g_f, g_z = jax.grad(loss, argnums=(0, 1))(f, z)
  assert not np.asarray(g_z).any()
  # gradient w.r.t. features: sum_c cos(h_{c,k}) * g_c with g fixed
  h = np_multilinear(np.asarray(f), np_softmax(np.asarray(z))).reshape(3, 2, 4)
  expected = np.einsum("ick,ic->ik", np.cos(h), np_softmax(np.asarray(z)))
  np.testing.assert_allclose(np.asarray(g_f), expected, rtol=1e-12)
  mats = (rng.normal(size=(4, 8)), rng.normal(size=(2, 8)))
  assert cdan_features(f, z, matrices=mats).shape == (3, 8)


@pytest.mark.parametrize("entropy_conditioning", [False, True])
def test_cdan_loss_matches_numpy(rng, entropy_conditioning):
  ds, dt = rng.normal(size=(5, 1)) * 2, rng.normal(size=(3,)) * 2
  zs, zt = rng.normal(size=(5, 4)) * 3, rng.normal(size=(3, 4)) * 3
  got = cdan_loss(
    ds, dt, logits_source=zs, logits_target=zt, entropy_conditioning=entropy_conditioning
  )
  np.testing.assert_allclose(float(got), np_cdan(ds, dt, zs, zt, entropy_conditioning), rtol=1e-12)


def test_cdan_loss_extra_weights_and_dann_equivalence(rng):
  ds, dt = rng.normal(size=(4,)), rng.normal(size=(4,))
  np.testing.assert_allclose(float(cdan_loss(ds, dt)), float(dann_loss(ds, dt)), rtol=1e-12)
  ws = rng.uniform(size=4)
  s = 1 / (1 + np.exp(-ds))
  expected = np.mean(np.concatenate([ws * -np.log(s), -np.log(1 - 1 / (1 + np.exp(-dt)))]))
  np.testing.assert_allclose(float(cdan_loss(ds, dt, source_weights=ws)), expected, rtol=1e-12)


def test_cdan_loss_grads_jit_vmap(rng):
  ds, dt = jnp.asarray(rng.normal(size=(4,))), jnp.asarray(rng.normal(size=(5,)))
  zs, zt = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(5, 3)))
  fn = lambda a, b, c, d: cdan_loss(
    a, b, logits_source=c, logits_target=d, entropy_conditioning=True
  )
  check_grads(jax.jit(lambda a, b: fn(a, b, zs, zt)), (ds, dt), order=1)
  # the class logits enter detached: no gradient
  g = jax.grad(fn, argnums=(2, 3))(ds, dt, zs, zt)
  assert not np.asarray(g[0]).any() and not np.asarray(g[1]).any()
  eager = float(fn(ds, dt, zs, zt))
  np.testing.assert_allclose(float(jax.jit(fn)(ds, dt, zs, zt)), eager, rtol=1e-12)
  args2 = (ds * 0.5, dt + 1, zs * 2, zt)
  batched = jax.vmap(fn)(*(jnp.stack([a, b]) for a, b in zip((ds, dt, zs, zt), args2, strict=True)))
  np.testing.assert_allclose(np.asarray(batched), [eager, float(fn(*args2))], rtol=1e-12)
  f32 = fn(*(a.astype(jnp.float32) for a in (ds, dt, zs, zt)))
  assert f32.dtype == jnp.float32
  np.testing.assert_allclose(float(f32), eager, rtol=1e-5)
  # map + GRL + linear discriminator, the whole CDAN pipeline under check_grads
  f = jnp.asarray(rng.normal(size=(9, 2)))
  z = jnp.concatenate([zs, zt])
  w = jnp.asarray(rng.normal(size=(6,)))

  def pipeline(f, w):
    d = cdan_features(f, z) @ w
    return cdan_loss(d[:4], d[4:], logits_source=zs, logits_target=zt, entropy_conditioning=True)

  check_grads(jax.jit(pipeline), (f, w), order=1)


def test_cdan_errors(rng):
  with pytest.raises(ValueError, match="logits_source"):
    cdan_loss(jnp.ones(3), jnp.ones(3), entropy_conditioning=True)
  with pytest.raises(ValueError, match="logits_target"):
    cdan_loss(
      jnp.ones(3),
      jnp.ones(2),
      logits_source=jnp.ones((3, 2)),
      logits_target=jnp.ones((3, 2)),
      entropy_conditioning=True,
    )
  with pytest.raises(ValueError, match="logits_source"):
    cdan_loss(
      jnp.ones(3),
      jnp.ones(2),
      logits_source=jnp.ones(3),
      logits_target=jnp.ones((2, 2)),
      entropy_conditioning=True,
    )
  with pytest.raises(ValueError, match="features"):
    multilinear_map(jnp.ones((3, 2)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="probs"):
    multilinear_map(jnp.ones((3, 2)), jnp.ones((3,)))
  with pytest.raises(ValueError, match="key"):
    randomized_multilinear_map(jnp.ones((3, 2)), jnp.ones((3, 2)))
  with pytest.raises(ValueError, match="R_f"):
    randomized_multilinear_map(
      jnp.ones((3, 2)), jnp.ones((3, 2)), matrices=(jnp.ones((3, 8)), jnp.ones((2, 8)))
    )
  with pytest.raises(ValueError, match="R_g"):
    randomized_multilinear_map(
      jnp.ones((3, 2)), jnp.ones((3, 2)), matrices=(jnp.ones((2, 8)), jnp.ones((2, 4)))
    )
  with pytest.raises(ValueError, match="dim"):
    randomized_map_matrices(jax.random.key(0), 2, 2, 0)
