"""Tent, SHOT's IM loss, SHOT's loss and pseudo-labels (dtl_jax/losses/source_free.py).

References are float64 NumPy written here; the pseudo-labels are checked against a
NumPy / SciPy transcription of ``obtain_label`` from the released SHOT code
(tim-learn/SHOT, ``object/image_target.py``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.spatial.distance import cdist

from dtl_jax.losses import information_maximization_loss, shot_loss, shot_pseudo_labels, tent_loss

pytestmark = pytest.mark.usefixtures("fast_compile")


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_tent(z, w=None):
  p = np_softmax(z)
  h = -np.sum(p * np.log(p), axis=1)
  return h.mean() if w is None else np.mean(w * h)


def np_im(z, lam=1.0, eps=1e-5):
  # SHOT: entropy_loss = mean(Entropy(softmax)); msoftmax = softmax.mean(0);
  # entropy_loss -= sum(-msoftmax * log(msoftmax + eps))
  p = np_softmax(z)
  ent = np.mean(np.sum(-p * np.log(p + eps), axis=1))
  m = p.mean(0)
  return ent - lam * np.sum(-m * np.log(m + eps))


def np_shot(z, y, beta=0.3, gamma=1.0, lam=1.0, eps=1e-5):
  logp = np.log(np_softmax(z))
  ce = -np.mean(logp[np.arange(len(y)), y])
  return beta * ce + gamma * np_im(z, lam, eps)


def np_obtain_label(fea, logits, distance="cosine", threshold=0, rounds=2):
  """``obtain_label`` of tim-learn/SHOT object/image_target.py, after the feature pass."""
  all_output = np_softmax(logits)
  predict = np.argmax(all_output, 1)
  if distance == "cosine":
    fea = np.concatenate([fea, np.ones((fea.shape[0], 1))], 1)
    fea = (fea.T / np.linalg.norm(fea, ord=2, axis=1)).T
  K = all_output.shape[1]
  aff = all_output
  for _ in range(rounds):
    initc = aff.transpose().dot(fea)
    initc = initc / (1e-8 + aff.sum(axis=0)[:, None])
    cls_count = np.eye(K)[predict].sum(axis=0)
    labelset = np.where(cls_count > threshold)[0]
    dd = cdist(fea, initc[labelset], distance)
    pred_label = dd.argmin(axis=1)
    predict = labelset[pred_label]
    aff = np.eye(K)[predict]
  return predict.astype(int), initc, dd, labelset


# ---------------------------------------------------------------------------- tent


def test_tent_loss_matches_numpy(rng):
  z = rng.normal(size=(7, 5)) * 3
  np.testing.assert_allclose(float(tent_loss(z)), np_tent(z), rtol=1e-12)
  w = rng.uniform(0.1, 2, size=7)
  np.testing.assert_allclose(float(tent_loss(z, weights=w)), np_tent(z, w), rtol=1e-12)
  # closed forms: uniform logits -> log C; a confident prediction -> ~0
  np.testing.assert_allclose(float(tent_loss(jnp.zeros((3, 4)))), np.log(4), rtol=1e-12)
  assert float(tent_loss(jnp.asarray([[50.0, 0.0, 0.0]]))) < 1e-18


def test_tent_loss_grad_jit_vmap(rng):
  z = jnp.asarray(rng.normal(size=(6, 4)))
  check_grads(jax.jit(tent_loss), (z,), order=2, modes=("rev",))
  np.testing.assert_allclose(float(jax.jit(tent_loss)(z)), np_tent(np.asarray(z)), rtol=1e-12)
  zs = jnp.stack([z, 2 * z, -z])
  np.testing.assert_allclose(
    np.asarray(jax.vmap(tent_loss)(zs)), [np_tent(np.asarray(v)) for v in zs], rtol=1e-12
  )
  # analytic gradient of the mean entropy: dH/dz_k = -p_k (log p_k + H)
  p = np_softmax(np.asarray(z))
  h = -np.sum(p * np.log(p), 1, keepdims=True)
  np.testing.assert_allclose(
    np.asarray(jax.grad(tent_loss)(z)), -p * (np.log(p) + h) / z.shape[0], rtol=1e-10, atol=1e-14
  )


def test_tent_loss_errors():
  with pytest.raises(ValueError, match=r"`logits` must have shape \[n, C\]"):
    tent_loss(jnp.zeros(4))
  with pytest.raises(ValueError, match="non-empty batch"):
    tent_loss(jnp.zeros((0, 3)))
  with pytest.raises(ValueError, match=r"`weights` must have shape \[2\]"):
    tent_loss(jnp.zeros((2, 3)), weights=jnp.ones(3))


# ----------------------------------------------------------------------- IM / SHOT


@pytest.mark.parametrize("lam,eps", [(1.0, 1e-5), (0.5, 0.0), (0.0, 1e-5)])
def test_im_loss_matches_numpy(rng, lam, eps):
  z = rng.normal(size=(9, 6)) * 2
  got = information_maximization_loss(z, diversity_weight=lam, epsilon=eps)
  np.testing.assert_allclose(float(got), np_im(z, lam, eps), rtol=1e-12)


def test_im_loss_closed_forms():
  # one confident prediction per class: entropy ~0, diversity = log C -> IM ~ -log C
  z = 60.0 * jnp.eye(4)
  np.testing.assert_allclose(
    float(information_maximization_loss(z, epsilon=0.0)), -np.log(4), atol=1e-12
  )
  # all examples confident on the same class: entropy ~0 and diversity ~0
  same = jnp.tile(jnp.asarray([[60.0, 0.0, 0.0, 0.0]]), (5, 1))
  assert abs(float(information_maximization_loss(same, epsilon=0.0))) < 1e-12
  # uniform predictions: mean entropy log C, diversity log C -> 0
  np.testing.assert_allclose(
    float(information_maximization_loss(jnp.zeros((3, 5)), epsilon=0.0)), 0.0, atol=1e-12
  )


def test_im_loss_grad_jit_vmap(rng):
  z = jnp.asarray(rng.normal(size=(5, 3)))
  fn = lambda z: information_maximization_loss(z, diversity_weight=0.7)
  check_grads(jax.jit(fn), (z,), order=2, modes=("rev",))
  np.testing.assert_allclose(float(jax.jit(fn)(z)), np_im(np.asarray(z), 0.7), rtol=1e-12)
  zs = jnp.stack([z, 3 * z])
  np.testing.assert_allclose(
    np.asarray(jax.vmap(fn)(zs)), [np_im(np.asarray(v), 0.7) for v in zs], rtol=1e-12
  )
  assert information_maximization_loss(z.astype(jnp.float32)).dtype == jnp.float32


def test_im_loss_errors():
  with pytest.raises(ValueError, match=r"`logits` must have shape \[n, C\]"):
    information_maximization_loss(jnp.zeros((2, 3, 4)))
  with pytest.raises(ValueError, match="`epsilon` must be a finite number >= 0"):
    information_maximization_loss(jnp.zeros((2, 3)), epsilon=-1e-5)


def test_shot_loss_matches_numpy(rng):
  z = rng.normal(size=(8, 5)) * 2
  y = rng.integers(0, 5, size=8)
  np.testing.assert_allclose(float(shot_loss(z, y)), np_shot(z, y), rtol=1e-12)
  np.testing.assert_allclose(float(shot_loss(z, y, beta=0.0)), np_im(z), rtol=1e-12)
  np.testing.assert_allclose(
    float(shot_loss(z, y, beta=1.3, im_weight=0.5, diversity_weight=0.2, epsilon=0.0)),
    np_shot(z, y, 1.3, 0.5, 0.2, 0.0),
    rtol=1e-12,
  )
  fn = lambda z: shot_loss(z, jnp.asarray(y))
  check_grads(jax.jit(fn), (jnp.asarray(z),), order=1, modes=("rev",))
  np.testing.assert_allclose(float(jax.jit(shot_loss)(z, y)), np_shot(z, y), rtol=1e-12)
  batched = jax.vmap(shot_loss)(jnp.stack([z, -z]), jnp.stack([y, y[::-1]]))
  np.testing.assert_allclose(np.asarray(batched), [np_shot(z, y), np_shot(-z, y[::-1])], rtol=1e-12)


def test_shot_loss_errors():
  z = jnp.zeros((3, 4))
  with pytest.raises(ValueError, match=r"`pseudo_labels` must have shape \[3\]"):
    shot_loss(z, jnp.zeros(2, jnp.int32))
  with pytest.raises(ValueError, match="must be integer class indices"):
    shot_loss(z, jnp.zeros(3))
  with pytest.raises(ValueError, match=r"must lie in \[0, 4\), got values in \[0, 4\]"):
    shot_loss(z, jnp.asarray([0, 4, 1]))


# ------------------------------------------------------------------ pseudo-labels


def _clustered(rng, n=60, d=5, c=4):
  """Features around class means, logits from a noisy classifier (errors to correct)."""
  y = rng.integers(0, c, size=n)
  means = rng.normal(size=(c, d)) * 2
  fea = means[y] + rng.normal(size=(n, d))
  logits = fea @ rng.normal(size=(d, c)) + rng.normal(size=(n, c))
  return fea, logits


@pytest.mark.parametrize(
  "distance,threshold,rounds",
  [
    ("cosine", 0, 2),
    ("cosine", 0, 1),
    ("cosine", 0, 3),
    ("euclidean", 0, 2),
    ("cosine", 12, 2),
    ("euclidean", 12, 2),
  ],
)
def test_pseudo_labels_match_released_obtain_label(rng, distance, threshold, rounds):
  for trial in range(4):
    fea, logits = _clustered(rng)
    if trial == 3:  # a class the source classifier never predicts
      logits[:, 2] -= 100.0
    want, initc, dd, labelset = np_obtain_label(fea, logits, distance, threshold, rounds)
    got = shot_pseudo_labels(fea, logits, distance=distance, threshold=threshold, rounds=rounds)
    np.testing.assert_array_equal(np.asarray(got.labels), want)
    np.testing.assert_array_equal(np.asarray(got.initial_labels), np.argmax(logits, 1))
    np.testing.assert_allclose(np.asarray(got.centroids), initc, rtol=1e-10, atol=1e-12)
    d = np.asarray(got.distances)
    np.testing.assert_allclose(d[:, labelset], dd, rtol=1e-10, atol=1e-12)
    dropped = np.setdiff1d(np.arange(logits.shape[1]), labelset)
    assert np.all(np.isinf(d[:, dropped]))
    if trial == 3 and threshold == 0:
      assert 2 in dropped and not np.any(want == 2)


def test_pseudo_labels_jit_vmap_and_stop_gradient(rng):
  fea, logits = _clustered(rng)
  fn = lambda f, z: shot_pseudo_labels(f, z).labels
  want = np_obtain_label(fea, logits)[0]
  np.testing.assert_array_equal(np.asarray(jax.jit(fn)(fea, logits)), want)
  fea2, logits2 = _clustered(rng)
  batched = jax.vmap(fn)(jnp.stack([fea, fea2]), jnp.stack([logits, logits2]))
  np.testing.assert_array_equal(
    np.asarray(batched), np.stack([want, np_obtain_label(fea2, logits2)[0]])
  )
  g = jax.grad(lambda f: jnp.sum(shot_pseudo_labels(f, logits).centroids))(jnp.asarray(fea))
  np.testing.assert_array_equal(np.asarray(g), 0.0)
  assert (
    shot_pseudo_labels(fea.astype(np.float32), logits.astype(np.float32)).labels.dtype == jnp.int32
  )


def test_pseudo_labels_correct_source_mistakes():
  # Two well-separated clusters; the classifier mislabels one point of cluster 0. The
  # nearest-centroid step (SHOT's motivation) gives it back its cluster's label.
  fea = np.array([[5.0, 0.1], [5.2, -0.1], [4.9, 0.0], [0.1, 5.0], [-0.1, 5.1], [0.0, 4.8]])
  logits = np.array([[2, 0], [2, 0], [0, 0.5], [0, 2], [0, 2], [0, 2]], float)
  got = shot_pseudo_labels(fea, logits)
  np.testing.assert_array_equal(np.asarray(got.initial_labels), [0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(np.asarray(got.labels), [0, 0, 0, 1, 1, 1])


def test_pseudo_labels_errors():
  f, z = jnp.zeros((4, 3)), jnp.zeros((4, 2))
  with pytest.raises(ValueError, match="`distance` must be one of"):
    shot_pseudo_labels(f, z, distance="manhattan")
  with pytest.raises(ValueError, match="`rounds` must be an int >= 1"):
    shot_pseudo_labels(f, z, rounds=0)
  with pytest.raises(ValueError, match="`threshold` must be a finite number >= 0"):
    shot_pseudo_labels(f, z, threshold=-1)
  with pytest.raises(ValueError, match=r"`features` must have shape \[n, d\]"):
    shot_pseudo_labels(jnp.zeros(4), z)
  with pytest.raises(ValueError, match="same batch size"):
    shot_pseudo_labels(jnp.zeros((5, 3)), z)
