"""DANN / ADDA / domain-confusion / soft-label losses (dtl_jax/losses/adversarial.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dtl_jax.losses import (
  adda_discriminator_loss,
  adda_encoder_loss,
  class_soft_labels,
  dann_loss,
  domain_accuracy,
  domain_confusion_loss,
  soft_label_loss,
)

pytestmark = pytest.mark.usefixtures("fast_compile")


# ---- float64 NumPy references -------------------------------------------------------


def np_sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def np_bce(z, y):
  s = np_sigmoid(z)
  return -(y * np.log(s) + (1 - y) * np.log(1 - s))


def np_weighted_mean(v, w):
  return np.mean(v if w is None else w * v)


def np_dann(ds, dt, ws=None, wt=None):
  ds, dt = np.ravel(ds), np.ravel(dt)
  return 0.5 * (np_weighted_mean(np_bce(ds, 1.0), ws) + np_weighted_mean(np_bce(dt, 0.0), wt))


def np_log_softmax(z):
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_confusion(d):
  if d.ndim == 1 or d.shape[1] == 1:
    s = np_sigmoid(np.ravel(d))
    return -0.5 * (np.log(s) + np.log(1 - s))
  return -np.mean(np_log_softmax(d), axis=-1)


def grads_ok(fn, args):
  """check_grads (float64, forward and reverse mode) on the jitted function."""
  check_grads(jax.jit(fn), args, order=1)


def assert_jit_vmap_agree(fn, *args, rtol=1e-12, args2=None):
  eager = np.asarray(fn(*args))
  np.testing.assert_allclose(np.asarray(jax.jit(fn)(*args)), eager, rtol=rtol, atol=1e-14)
  args2 = [a * 0.9 for a in args] if args2 is None else args2
  stacked = [jnp.stack([jnp.asarray(a), jnp.asarray(b)]) for a, b in zip(args, args2, strict=True)]
  batched = np.asarray(jax.vmap(fn)(*stacked))
  np.testing.assert_allclose(
    batched, np.stack([eager, np.asarray(fn(*args2))]), rtol=rtol, atol=1e-14
  )


# ---- DANN ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape_s,shape_t", [((6,), (6,)), ((5, 1), (7, 1)), ((4,), (3, 1))])
def test_dann_loss_matches_numpy(rng, shape_s, shape_t):
  ds, dt = rng.normal(size=shape_s) * 3, rng.normal(size=shape_t) * 3
  np.testing.assert_allclose(float(dann_loss(ds, dt)), np_dann(ds, dt), rtol=1e-12)


def test_dann_loss_weights(rng):
  ds, dt = rng.normal(size=(5, 1)), rng.normal(size=(4,))
  ws, wt = rng.uniform(0, 2, size=5), rng.uniform(0, 2, size=4)
  got = dann_loss(ds, dt, source_weights=ws, target_weights=wt)
  np.testing.assert_allclose(float(got), np_dann(ds, dt, ws, wt), rtol=1e-12)
  # all-ones weights are no weights
  np.testing.assert_allclose(
    float(dann_loss(ds, dt, source_weights=np.ones(5))), np_dann(ds, dt), rtol=1e-12
  )


def test_dann_loss_stable_for_large_logits():
  ds, dt = jnp.asarray([800.0, -800.0]), jnp.asarray([-800.0, 800.0])
  # -log sigmoid(-800) = 800 exactly (softplus), no inf/nan.
  np.testing.assert_allclose(float(dann_loss(ds, dt)), 0.5 * (400.0 + 400.0), rtol=1e-12)
  assert np.isfinite(np.asarray(jax.grad(dann_loss)(ds, dt))).all()
  f32 = dann_loss(jnp.asarray([80.0, -80.0], jnp.float32), jnp.asarray([1.0], jnp.float32))
  assert f32.dtype == jnp.float32 and np.isfinite(float(f32))


def test_dann_loss_grads_jit_vmap(rng):
  ds, dt = jnp.asarray(rng.normal(size=(5,))), jnp.asarray(rng.normal(size=(6,)))
  ws, wt = jnp.asarray(rng.uniform(size=5)), jnp.asarray(rng.uniform(size=6))
  fn = lambda a, b, c, d: dann_loss(a, b, source_weights=c, target_weights=d)
  grads_ok(fn, (ds, dt, ws, wt))
  assert_jit_vmap_agree(fn, ds, dt, ws, wt)
  # analytic gradient: d/dz softplus(-z) = sigmoid(z) - 1
  g = jax.grad(dann_loss)(ds, dt)
  np.testing.assert_allclose(np.asarray(g), 0.5 * (np_sigmoid(np.asarray(ds)) - 1) / 5, rtol=1e-12)


def test_domain_accuracy(rng):
  ds = np.array([0.5, -0.1, 0.0, 2.0])  # 3/4 predicted source (logit >= 0)
  dt = np.array([[-1.0], [0.2], [-3.0]])  # 2/3 predicted target
  np.testing.assert_allclose(float(domain_accuracy(ds, dt)), 0.5 * (0.75 + 2 / 3), rtol=1e-12)
  np.testing.assert_allclose(float(jax.jit(domain_accuracy)(ds, dt)), 0.5 * (0.75 + 2 / 3))


@pytest.mark.parametrize(
  "fn", [dann_loss, domain_accuracy, adda_discriminator_loss, domain_confusion_loss]
)
def test_domain_logit_shape_errors(fn):
  with pytest.raises(ValueError, match="domain_logits_source"):
    fn(jnp.ones((4, 3)) if fn is not domain_confusion_loss else jnp.ones((4, 2, 1)), jnp.ones((4,)))
  with pytest.raises(ValueError, match="domain_logits_target"):
    fn(jnp.ones((4,)), jnp.ones((0,)))


def test_weight_errors():
  with pytest.raises(ValueError, match="source_weights"):
    dann_loss(jnp.ones(4), jnp.ones(3), source_weights=jnp.ones(3))
  with pytest.raises(ValueError, match="target_weights"):
    dann_loss(jnp.ones(4), jnp.ones(3), target_weights=-jnp.ones(3))
  # shape checks are static, so they also fire under jit
  with pytest.raises(ValueError, match="source_weights"):
    jax.jit(functools.partial(dann_loss, source_weights=jnp.ones(2)))(jnp.ones(4), jnp.ones(3))


# ---- ADDA ---------------------------------------------------------------------------


def test_adda_losses(rng):
  ds, dt = rng.normal(size=(5,)) * 2, rng.normal(size=(4, 1)) * 2
  np.testing.assert_allclose(float(adda_discriminator_loss(ds, dt)), np_dann(ds, dt), rtol=1e-12)
  wt = rng.uniform(size=4)
  np.testing.assert_allclose(
    float(adda_encoder_loss(dt, target_weights=wt)),
    np.mean(wt * -np.log(np_sigmoid(np.ravel(dt)))),
    rtol=1e-12,
  )
  dt_j = jnp.asarray(np.ravel(dt))
  grads_ok(adda_encoder_loss, (dt_j,))
  assert_jit_vmap_agree(adda_encoder_loss, dt_j)
  with pytest.raises(ValueError, match="domain_logits_target"):
    adda_encoder_loss(jnp.ones((3, 2)))


# ---- domain confusion and soft labels -----------------------------------------------


@pytest.mark.parametrize("shape_s,shape_t", [((5,), (3, 1)), ((5, 2), (4, 2)), ((3, 4), (6, 4))])
def test_domain_confusion_matches_numpy(rng, shape_s, shape_t):
  ds, dt = rng.normal(size=shape_s) * 2, rng.normal(size=shape_t) * 2
  ws, wt = rng.uniform(size=shape_s[0]), rng.uniform(size=shape_t[0])
  expected = 0.5 * (np.mean(ws * np_confusion(ds)) + np.mean(wt * np_confusion(dt)))
  got = domain_confusion_loss(ds, dt, source_weights=ws, target_weights=wt)
  np.testing.assert_allclose(float(got), expected, rtol=1e-12)


def test_domain_confusion_minimum_and_grads(rng):
  # minimum log(D) at a uniform (maximally confused) prediction
  np.testing.assert_allclose(
    float(domain_confusion_loss(jnp.zeros(3), jnp.zeros((2, 1)))), np.log(2), rtol=1e-12
  )
  np.testing.assert_allclose(
    float(domain_confusion_loss(jnp.ones((3, 3)), jnp.ones((2, 3)))), np.log(3), rtol=1e-12
  )
  ds, dt = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(5, 3)))
  grads_ok(domain_confusion_loss, (ds, dt))
  assert_jit_vmap_agree(domain_confusion_loss, ds, dt)
  with pytest.raises(ValueError, match="number of domains"):
    domain_confusion_loss(jnp.ones((3, 2)), jnp.ones((3, 3)))


def np_soft_label(z, targets, tau, w=None):
  per = -np.sum(targets * np_log_softmax(z / tau), axis=-1)
  return np_weighted_mean(per, w)


def test_soft_label_loss(rng):
  z = rng.normal(size=(6, 4)) * 2
  targets = np.exp(np_log_softmax(rng.normal(size=(6, 4))))
  w = rng.uniform(size=6)
  for tau in (1.0, 2.0, 5.0):
    np.testing.assert_allclose(
      float(soft_label_loss(z, targets, temperature=tau, weights=w)),
      np_soft_label(z, targets, tau, w),
      rtol=1e-12,
    )
  fn = lambda z, t: soft_label_loss(z, t, temperature=2.0)
  grads_ok(lambda z: fn(z, jnp.asarray(targets)), (jnp.asarray(z),))
  # soft targets receive no gradient
  assert not np.asarray(jax.grad(fn, argnums=1)(jnp.asarray(z), jnp.asarray(targets))).any()
  targets2 = np.exp(np_log_softmax(rng.normal(size=(6, 4))))
  assert_jit_vmap_agree(
    fn,
    jnp.asarray(z),
    jnp.asarray(targets),
    rtol=1e-10,
    args2=[jnp.asarray(z) * 0.9, jnp.asarray(targets2)],
  )


def test_soft_label_loss_errors(rng):
  z = jnp.asarray(rng.normal(size=(3, 4)))
  p = jnp.full((3, 4), 0.25)
  for bad in (0.0, -1.0):
    with pytest.raises(ValueError, match="temperature"):
      soft_label_loss(z, p, temperature=bad)
  with pytest.raises(ValueError, match="soft_targets"):
    soft_label_loss(z, jnp.full((3, 4), 0.3), temperature=1.0)  # rows sum to 1.2
  with pytest.raises(ValueError, match="soft_targets"):
    soft_label_loss(z, jnp.full((3, 3), 1 / 3), temperature=1.0)
  with pytest.raises(ValueError, match="logits"):
    soft_label_loss(jnp.ones(4), jnp.full((4,), 0.25), temperature=1.0)


def test_class_soft_labels(rng):
  z = rng.normal(size=(7, 3)) * 2
  labels = np.array([0, 0, 2, 2, 2, 0, 2])  # class 1 absent
  soft = np.asarray(class_soft_labels(z, labels, num_classes=3, temperature=2.0))
  p = np.exp(np_log_softmax(z / 2.0))
  np.testing.assert_allclose(soft[0], p[labels == 0].mean(0), rtol=1e-12)
  np.testing.assert_allclose(soft[2], p[labels == 2].mean(0), rtol=1e-12)
  np.testing.assert_allclose(soft[1], np.full(3, 1 / 3), rtol=1e-12)
  with pytest.raises(ValueError, match="labels"):
    class_soft_labels(z, labels[:3], num_classes=3, temperature=2.0)
  with pytest.raises(ValueError, match="num_classes"):
    class_soft_labels(z, labels, num_classes=4, temperature=2.0)
