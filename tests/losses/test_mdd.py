"""Margin disparity discrepancy (dtl_jax/losses/mdd.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dtl_jax.losses import mdd_loss

pytestmark = pytest.mark.usefixtures("fast_compile")


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_mdd(y_s, y_s_adv, y_t, y_t_adv, margin, ws=None, wt=None):
  """Loop-based float64 reference of Zhang et al. (2019) as TLlib computes it."""
  src, tgt = [], []
  for i in range(len(y_s)):
    h = int(np.argmax(y_s[i]))
    src.append(-np.log(np_softmax(y_s_adv[i])[h]))
  for j in range(len(y_t)):
    h = int(np.argmax(y_t[j]))
    p = np_softmax(y_t_adv[j])[h]
    tgt.append(-np.log(min(1.0 - p + 1e-6, 1.0)))
  src, tgt = np.array(src), np.array(tgt)
  if ws is not None:
    src = src * ws
  if wt is not None:
    tgt = tgt * wt
  return margin * src.mean() + tgt.mean()


def _inputs(rng, n_s=5, n_t=4, c=3, scale=2.0):
  return tuple(rng.normal(size=(n, c)) * scale for n in (n_s, n_s, n_t, n_t))


@pytest.mark.parametrize("margin", [1.0, 4.0])
def test_mdd_matches_numpy(rng, margin):
  args = _inputs(rng)
  np.testing.assert_allclose(
    float(mdd_loss(*args, margin=margin)), np_mdd(*args, margin), rtol=1e-12
  )
  ws, wt = rng.uniform(size=5), rng.uniform(size=4)
  np.testing.assert_allclose(
    float(mdd_loss(*args, margin=margin, source_weights=ws, target_weights=wt)),
    np_mdd(*args, margin, ws, wt),
    rtol=1e-12,
  )


def test_mdd_clamp_when_adversary_is_certain():
  # adversarial head puts all mass on the main head's prediction: log(1 - p + 1e-6)
  y = jnp.asarray([[5.0, 0.0]])
  y_adv = jnp.asarray([[60.0, -60.0]])  # p ~ 1 - 1e-52
  got = float(mdd_loss(y, y, y, y_adv, margin=1.0))
  expected = -np.log(np_softmax(np.asarray(y))[0, 0]) + -np.log(1e-6)
  np.testing.assert_allclose(got, expected, rtol=1e-9)
  # adversarial head disagrees completely: 1 - p + 1e-6 > 1 is clamped to 1 -> 0, gradient 0
  y_adv2 = jnp.asarray([[-60.0, 60.0]])
  np.testing.assert_allclose(
    float(mdd_loss(y, y, y, y_adv2, margin=1.0)),
    -np.log(np_softmax(np.asarray(y))[0, 0]),
    rtol=1e-12,
  )
  g = jax.grad(lambda a: mdd_loss(y, y, y, a, margin=1.0))(y_adv2)
  assert not np.asarray(g).any()


def test_mdd_grads_only_through_adversarial_head_jit_vmap(rng):
  y_s, y_s_adv, y_t, y_t_adv = (jnp.asarray(a) for a in _inputs(rng))
  fn = lambda a, b: mdd_loss(y_s, a, y_t, b, margin=4.0)
  check_grads(jax.jit(fn), (y_s_adv, y_t_adv), order=1)
  g_main = jax.grad(lambda a, b: mdd_loss(a, y_s_adv, b, y_t_adv), argnums=(0, 1))(y_s, y_t)
  assert not np.asarray(g_main[0]).any() and not np.asarray(g_main[1]).any()
  full = lambda a, b, c, d: mdd_loss(a, b, c, d, margin=4.0)
  args = (y_s, y_s_adv, y_t, y_t_adv)
  eager = float(full(*args))
  np.testing.assert_allclose(float(jax.jit(full)(*args)), eager, rtol=1e-12)
  args2 = tuple(jnp.asarray(a) for a in _inputs(np.random.default_rng(5)))
  batched = jax.vmap(full)(*(jnp.stack([a, b]) for a, b in zip(args, args2, strict=True)))
  np.testing.assert_allclose(np.asarray(batched), [eager, float(full(*args2))], rtol=1e-12)
  f32 = mdd_loss(*(a.astype(jnp.float32) for a in args))
  assert f32.dtype == jnp.float32


def test_mdd_errors():
  ok = jnp.ones((4, 3))
  with pytest.raises(ValueError, match="adversarial_logits_source"):
    mdd_loss(ok, jnp.ones((5, 3)), ok, ok)
  with pytest.raises(ValueError, match="logits_target"):
    mdd_loss(ok, ok, jnp.ones((4,)), jnp.ones((4,)))
  with pytest.raises(ValueError, match="classes"):
    mdd_loss(ok, ok, jnp.ones((4, 2)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="margin"):
    mdd_loss(ok, ok, ok, ok, margin=0.0)
