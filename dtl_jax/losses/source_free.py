"""Source-free and test-time adaptation losses: Tent, SHOT's information maximisation and
self-supervised pseudo-labels.

These losses see **target outputs only** (no source data, no labels):

* :func:`tent_loss` -- mean prediction entropy (Wang et al., "Tent: Fully Test-Time
  Adaptation by Entropy Minimization", ICLR 2021).
* :func:`information_maximization_loss` -- SHOT's IM loss, mean entropy minus the entropy
  of the mean prediction (Liang, Hu & Feng, "Do We Really Need to Access the Source Data?
  Source Hypothesis Transfer for Unsupervised Domain Adaptation", ICML 2020).
* :func:`shot_pseudo_labels` -- SHOT's nearest-centroid pseudo-labels, the released
  code's ``obtain_label`` (tim-learn/SHOT, ``object/image_target.py``).
* :func:`shot_loss` -- SHOT's objective for one batch, ``beta * CE(pseudo) + IM``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dtl_jax import _validation as V
from dtl_jax.losses.entropy import TLLIB_EPSILON, _entropy_of_probs, entropy_minimization_loss

#: SHOT's ``epsilon`` inside the logs of its entropies (``loss.Entropy`` and ``gentropy``).
SHOT_EPSILON = TLLIB_EPSILON
#: SHOT's weight of the pseudo-label cross-entropy (``cls_par``, the paper's beta).
SHOT_BETA = 0.3
#: The ``1e-8`` added to the class weights when SHOT's code divides to get centroids.
SHOT_CENTROID_EPSILON = 1e-8

_DISTANCES = ("cosine", "euclidean")


def tent_loss(
  logits: jax.typing.ArrayLike, *, weights: jax.typing.ArrayLike | None = None
) -> jax.Array:
  r"""Tent's test-time objective: the mean Shannon entropy of the predictions.

  .. math::
      \mathcal{L}_{\mathrm{Tent}} = \frac1n \sum_{i=1}^n H(\hat y_i), \qquad
      H(\hat y) = -\sum_c \hat y_c \log \hat y_c, \quad \hat y = \mathrm{softmax}(z)

  computed exactly from the logits (``log_softmax``, no epsilon), as the released code's
  ``softmax_entropy(x) = -(x.softmax(1) * x.log_softmax(1)).sum(1)`` followed by
  ``.mean(0)`` (Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization",
  ICLR 2021). It is :func:`dtl_jax.losses.entropy_minimization_loss` (Grandvalet &
  Bengio, NIPS 2004); Tent's contribution is *what* it trains (only the BatchNorm affine
  parameters, with target batch statistics: see :class:`dtl_jax.methods.Tent`).

  Args:
    logits: target logits ``[n, C]``.
    weights: optional ``[n]`` non-negative example weights: the loss becomes
      :math:`\frac1n \sum_i w_i H(\hat y_i)` (the library's convention, not divided by
      :math:`\sum_i w_i`).

  Returns:
    Scalar loss in ``[0, log C]``.
  """
  return entropy_minimization_loss(logits, weights=weights)


def _check_epsilon(epsilon: float) -> None:
  if isinstance(epsilon, jax.core.Tracer):
    return
  if not (np.isfinite(epsilon) and epsilon >= 0):
    raise ValueError(f"`epsilon` must be a finite number >= 0, got {epsilon!r}.")


def information_maximization_loss(
  logits: jax.typing.ArrayLike, *, diversity_weight: float = 1.0, epsilon: float = SHOT_EPSILON
) -> jax.Array:
  r"""SHOT's information-maximisation (IM) loss: confident but diverse predictions.

  .. math::
      \mathcal{L}_{\mathrm{IM}} = \underbrace{\frac1n \sum_i
      -\sum_c \hat y_{ic} \log(\hat y_{ic} + \epsilon)}_{\text{mean entropy}}
      \;-\; \lambda \underbrace{\Big(-\sum_c \bar y_c \log(\bar y_c + \epsilon)\Big)}_{
      \text{diversity}}, \qquad \bar y = \frac1n \sum_i \hat y_i,

  with :math:`\hat y_i = \mathrm{softmax}(z_i)` (Liang, Hu & Feng, "Do We Really Need to
  Access the Source Data? Source Hypothesis Transfer for Unsupervised Domain
  Adaptation", ICML 2020, Eq. 2-3; the paper writes the diversity term as the KL
  divergence of :math:`\bar y` to the uniform distribution, which equals
  :math:`\log C - H(\bar y)`, the same loss up to a constant). Exactly the released
  code (``object/image_target.py``)::

      entropy_loss = torch.mean(loss.Entropy(softmax_out))       # eps 1e-5 in the log
      msoftmax = softmax_out.mean(dim=0)
      entropy_loss -= torch.sum(-msoftmax * torch.log(msoftmax + 1e-5))

  The mean prediction :math:`\bar y` is taken over the whole batch: call it on the
  global batch when training on several devices.

  Args:
    logits: target logits ``[n, C]``.
    diversity_weight: :math:`\lambda` (1 in SHOT; 0 gives plain entropy minimisation with
      SHOT's epsilon).
    epsilon: :math:`\epsilon` inside both logs (SHOT: ``1e-5``; 0 for exact entropies).

  Returns:
    Scalar loss in ``[-log C, log C]`` (float32 at least).
  """
  _check_epsilon(epsilon)
  z = V.check_class_logits(logits, "logits")
  return _im_loss(z.astype(jnp.promote_types(z.dtype, jnp.float32)), diversity_weight, epsilon)


# The numeric cores are jitted: an eager call compiles one XLA computation per shape
# instead of dispatching (and compiling) a dozen small ops; inside an outer jit they inline.
@jax.jit
def _im_loss(z: jax.Array, diversity_weight, epsilon) -> jax.Array:
  p = jax.nn.softmax(z, axis=-1)
  mean_entropy = jnp.mean(_entropy_of_probs(p, epsilon))
  diversity = _entropy_of_probs(jnp.mean(p, axis=0), epsilon)
  return mean_entropy - diversity_weight * diversity


def _check_labels(name: str, labels: jax.typing.ArrayLike, n: int, num_classes: int) -> jax.Array:
  y = jnp.asarray(labels)
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f"`{name}` must be integer class indices, got dtype {y.dtype}.")
  if y.shape != (n,):
    raise ValueError(
      f"`{name}` must have shape [{n}] (one label per example), got shape {tuple(y.shape)}."
    )
  if V.is_concrete(y) and n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
    raise ValueError(
      f"`{name}` must lie in [0, {num_classes}), got values in [{int(y.min())}, {int(y.max())}]."
    )
  return y


def shot_loss(
  logits: jax.typing.ArrayLike,
  pseudo_labels: jax.typing.ArrayLike,
  *,
  beta: float = SHOT_BETA,
  im_weight: float = 1.0,
  diversity_weight: float = 1.0,
  epsilon: float = SHOT_EPSILON,
) -> jax.Array:
  r"""SHOT's target objective for one batch (Liang et al., ICML 2020, Eq. 6).

  .. math::
      \mathcal{L}_{\mathrm{SHOT}} = \beta\, \frac1n \sum_i -\log \hat y_{i, \tilde y_i}
      \;+\; \gamma\, \mathcal{L}_{\mathrm{IM}},

  with :math:`\tilde y_i` the self-supervised pseudo-labels of
  :func:`shot_pseudo_labels` (computed once per epoch on the whole target set, looked up
  by example index), :math:`\mathcal{L}_{\mathrm{IM}}` the
  :func:`information_maximization_loss` and the released code's ``cls_par = 0.3``
  (:math:`\beta`) and ``ent_par = 1`` (:math:`\gamma`). The cross-entropy is the plain
  one (``nn.CrossEntropyLoss``, no label smoothing in the target stage).

  Args:
    logits: target logits ``[n, C]``.
    pseudo_labels: ``[n]`` int pseudo-labels in ``[0, C)`` (checked in eager calls).
    beta: weight of the pseudo-label cross-entropy (0.3; 0 is SHOT-IM).
    im_weight: :math:`\gamma`, weight of the IM loss.
    diversity_weight: :math:`\lambda` of :func:`information_maximization_loss`.
    epsilon: the IM loss's epsilon.

  Returns:
    Scalar loss.
  """
  p_logits = V.check_class_logits(logits, "logits")
  y = _check_labels("pseudo_labels", pseudo_labels, p_logits.shape[0], p_logits.shape[1])
  _check_epsilon(epsilon)
  z = p_logits.astype(jnp.promote_types(p_logits.dtype, jnp.float32))
  return _shot_loss(z, y, beta, im_weight, diversity_weight, epsilon)


@jax.jit
def _shot_loss(z, y, beta, im_weight, diversity_weight, epsilon) -> jax.Array:
  ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y))
  return beta * ce + im_weight * _im_loss(z, diversity_weight, epsilon)


class ShotPseudoLabels(NamedTuple):
  """What :func:`shot_pseudo_labels` returns (a pytree: works under ``jit`` / ``vmap``).

  Attributes:
    labels: ``[n]`` int32 pseudo-labels after the last round.
    centroids: ``[C, d']`` the last round's class centroids (``d' = d + 1`` for the
      cosine distance: the features carry an appended 1 and are L2-normalised).
    distances: ``[n, C]`` the last round's distances to the centroids; ``+inf`` for the
      classes left out of that round (at most ``threshold`` examples assigned to them).
    initial_labels: ``[n]`` int32 ``argmax`` of the logits (the source prediction).
  """

  labels: jax.Array
  centroids: jax.Array
  distances: jax.Array
  initial_labels: jax.Array


def _cosine_distance(f: jax.Array, c: jax.Array) -> jax.Array:
  # scipy.spatial.distance.cdist(f, c, "cosine") = 1 - <f, c> / (|f| |c|); a zero
  # centroid (a class with no weight) gives 0 / 0 in scipy: here +inf, never the argmin.
  fn = jnp.linalg.norm(f, axis=1)
  cn = jnp.linalg.norm(c, axis=1)
  denom = fn[:, None] * cn[None, :]
  safe = jnp.where(denom > 0, denom, 1.0)
  return jnp.where(denom > 0, 1.0 - (f @ c.T) / safe, jnp.inf)


def _euclidean_distance(f: jax.Array, c: jax.Array) -> jax.Array:
  sq = jnp.sum(f * f, axis=1)[:, None] + jnp.sum(c * c, axis=1)[None, :] - 2.0 * (f @ c.T)
  return jnp.sqrt(jnp.maximum(sq, 0.0))


def shot_pseudo_labels(
  features: jax.typing.ArrayLike,
  logits: jax.typing.ArrayLike,
  *,
  distance: str = "cosine",
  threshold: float = 0,
  rounds: int = 2,
) -> ShotPseudoLabels:
  r"""SHOT's self-supervised pseudo-labels: weighted k-means-style class centroids.

  A transcription of ``obtain_label`` in the released code (tim-learn/SHOT,
  ``object/image_target.py``; Liang et al., ICML 2020, Eq. 4-5). With
  :math:`\hat y_i = \mathrm{softmax}(z_i)` and, for the cosine distance, the features
  augmented by a constant 1 and L2-normalised, :math:`f_i \leftarrow [f_i, 1] /
  \lVert [f_i, 1] \rVert`:

  1. round 1 weights the examples by their predicted probabilities,
     :math:`c_k = \sum_i \hat y_{ik} f_i / (10^{-8} + \sum_i \hat y_{ik})`;
  2. each round keeps the classes that more than ``threshold`` examples are currently
     assigned to (round 1: :math:`\arg\max_k \hat y_{ik}`), and labels each example by
     its nearest kept centroid, :math:`\tilde y_i = \arg\min_k D(f_i, c_k)` with
     :math:`D` the cosine distance :math:`1 - \langle f, c\rangle / (\lVert f\rVert
     \lVert c\rVert)` (``scipy.spatial.distance.cdist``) or the Euclidean one;
  3. every later round recomputes the centroids from the hard labels of the round
     before (one-hot weights) and relabels.

  The released code runs two rounds (``rounds=2``). Its digit script
  (``digit/uda_digit.py``) keeps every class instead of filtering by ``threshold``;
  both agree whenever every class keeps at least one example. Ties go to the lowest
  class index, as NumPy's ``argmin``. ``features`` and ``logits`` should come from the
  model in inference mode over the **whole** target set (SHOT recomputes them once per
  epoch); no gradient flows through the labels (wrapped in ``stop_gradient``).

  Args:
    features: ``[n, d]`` target features (SHOT: the bottleneck output, the input of the
      frozen classifier head).
    logits: ``[n, C]`` target logits of the source classifier.
    distance: ``"cosine"`` (SHOT's default) or ``"euclidean"`` (then the features are used
      as they are, without the appended 1 or the normalisation, as in the code).
    threshold: a class takes part in a round only if more than ``threshold`` examples are
      assigned to it (0 in SHOT's closed-set setting).
    rounds: number of assignment rounds (>= 1; SHOT: 2).

  Returns:
    A :class:`ShotPseudoLabels` ``(labels, centroids, distances, initial_labels)``.
  """
  if distance not in _DISTANCES:
    raise ValueError(f"`distance` must be one of {_DISTANCES}, got {distance!r}.")
  if not isinstance(rounds, (int, np.integer)) or isinstance(rounds, bool) or rounds < 1:
    raise ValueError(f"`rounds` must be an int >= 1, got {rounds!r}.")
  if not isinstance(threshold, jax.core.Tracer) and not (np.isfinite(threshold) and threshold >= 0):
    raise ValueError(f"`threshold` must be a finite number >= 0, got {threshold!r}.")
  f = V.as_float_array(features, "features")
  V.check_rank(f, "features", (2,), "[n, d]")
  V.check_nonempty(f, "features")
  z = V.check_class_logits(logits, "logits")
  V.check_same_batch(f, "features", z, "logits")
  dtype = jnp.promote_types(jnp.promote_types(f.dtype, z.dtype), jnp.float32)
  return _pseudo_labels(
    f.astype(dtype), z.astype(dtype), threshold, distance=distance, rounds=int(rounds)
  )


@functools.partial(jax.jit, static_argnames=("distance", "rounds"))
def _pseudo_labels(
  f: jax.Array, z: jax.Array, threshold, *, distance: str, rounds: int
) -> ShotPseudoLabels:
  f = jax.lax.stop_gradient(f)
  z = jax.lax.stop_gradient(z)
  dtype = f.dtype
  num_classes = z.shape[1]
  probs = jax.nn.softmax(z, axis=-1)
  initial = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  if distance == "cosine":
    f = jnp.concatenate([f, jnp.ones((f.shape[0], 1), dtype)], axis=1)
    f = f / jnp.linalg.norm(f, axis=1, keepdims=True)
    dist_fn = _cosine_distance
  else:
    dist_fn = _euclidean_distance

  def assign(weights, labels):
    centroids = (weights.T @ f) / (SHOT_CENTROID_EPSILON + jnp.sum(weights, axis=0))[:, None]
    counts = jnp.sum(jax.nn.one_hot(labels, num_classes, dtype=dtype), axis=0)
    kept = counts > threshold
    dists = jnp.where(kept[None, :], dist_fn(f, centroids), jnp.inf)
    return centroids, dists, jnp.argmin(dists, axis=1).astype(jnp.int32)

  centroids, dists, labels = assign(probs, initial)  # round 1: soft weights
  for _ in range(rounds - 1):  # later rounds: hard labels of the round before
    centroids, dists, labels = assign(jax.nn.one_hot(labels, num_classes, dtype=dtype), labels)
  return ShotPseudoLabels(
    labels=labels, centroids=centroids, distances=dists, initial_labels=initial
  )


__all__ = [
  "SHOT_BETA",
  "SHOT_EPSILON",
  "ShotPseudoLabels",
  "information_maximization_loss",
  "shot_loss",
  "shot_pseudo_labels",
  "tent_loss",
]
