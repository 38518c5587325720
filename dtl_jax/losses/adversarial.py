"""Domain-adversarial losses on discriminator outputs: DANN, ADDA, domain confusion.

Conventions shared by every function here:

* A domain discriminator outputs one **logit** per example, shape ``[n]`` or ``[n, 1]``
  (before the sigmoid); source is label 1, target is label 0 (as in TLlib / dalib).
  Binary cross-entropies are computed from the logits with ``softplus``, never as
  ``log(sigmoid(.))``, so they stay finite for large logits.
* Optional per-example weights ``[n]`` enter as ``mean(w * loss)`` (TLlib's
  ``F.binary_cross_entropy(..., weight=w)`` convention, not divided by ``sum(w)``).
* Source and target batches may have different sizes unless stated otherwise.

Gradient reversal and its schedules live in :mod:`dtl_jax.losses.grl`; CDAN in
:mod:`dtl_jax.losses.cdan`, MDD in :mod:`dtl_jax.losses.mdd` and WDGRL in
:mod:`dtl_jax.losses.wdgrl`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dtl_jax import _validation as V


def _bce_with_logits(logits: jax.Array, label: float) -> jax.Array:
  """Per-example binary cross-entropy ``-[y log s(z) + (1 - y) log(1 - s(z))]``."""
  return label * jax.nn.softplus(-logits) + (1.0 - label) * jax.nn.softplus(logits)


def dann_loss(
  domain_logits_source: jax.typing.ArrayLike,
  domain_logits_target: jax.typing.ArrayLike,
  *,
  source_weights: jax.typing.ArrayLike | None = None,
  target_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Domain-adversarial (DANN) discriminator loss from logits.

  .. math::
      \mathcal{L} = \tfrac12\Big(\tfrac1{n_s}\sum_i w^s_i\,[-\log\sigma(d^s_i)]
                  + \tfrac1{n_t}\sum_j w^t_j\,[-\log(1 - \sigma(d^t_j))]\Big)

  i.e. binary cross-entropy with source label 1 and target label 0, averaged as
  ½(source + target) like TLlib's ``DomainAdversarialLoss``. The discriminator
  minimises it; to train the features adversarially, feed the discriminator
  ``gradient_reverse(features, coeff)`` (Ganin et al., JMLR 2016).

  Args:
    domain_logits_source: discriminator logits on source examples, ``[n_s]`` or
      ``[n_s, 1]``.
    domain_logits_target: discriminator logits on target examples, ``[n_t]`` or
      ``[n_t, 1]``.
    source_weights: optional non-negative per-example weights ``[n_s]``.
    target_weights: optional non-negative per-example weights ``[n_t]``.

  Returns:
    Scalar loss, dtype of the logits.
  """
  ds = V.check_domain_logits(domain_logits_source, "domain_logits_source")
  dt = V.check_domain_logits(domain_logits_target, "domain_logits_target")
  ws = V.check_weights(source_weights, "source_weights", ds.shape[0], ds.dtype)
  wt = V.check_weights(target_weights, "target_weights", dt.shape[0], dt.dtype)
  return 0.5 * (
    V.weighted_mean(_bce_with_logits(ds, 1.0), ws) + V.weighted_mean(_bce_with_logits(dt, 0.0), wt)
  )


def domain_accuracy(
  domain_logits_source: jax.typing.ArrayLike, domain_logits_target: jax.typing.ArrayLike
) -> jax.Array:
  r"""Discriminator accuracy, ½(acc_source + acc_target), as a fraction in [0, 1].

  An example is predicted "source" when its logit is >= 0 (sigmoid >= 0.5, TLlib's
  threshold). Source examples are correct when predicted source, target examples when
  predicted target. (dalib reports the same quantity in percent.)

  Args:
    domain_logits_source: ``[n_s]`` or ``[n_s, 1]`` logits.
    domain_logits_target: ``[n_t]`` or ``[n_t, 1]`` logits.

  Returns:
    Scalar accuracy (float, no gradient).
  """
  ds = V.check_domain_logits(domain_logits_source, "domain_logits_source")
  dt = V.check_domain_logits(domain_logits_target, "domain_logits_target")
  ds, dt = jax.lax.stop_gradient(ds), jax.lax.stop_gradient(dt)
  acc_s = jnp.mean((ds >= 0).astype(ds.dtype))
  acc_t = jnp.mean((dt < 0).astype(dt.dtype))
  return 0.5 * (acc_s + acc_t)


def adda_discriminator_loss(
  domain_logits_source: jax.typing.ArrayLike,
  domain_logits_target: jax.typing.ArrayLike,
  *,
  source_weights: jax.typing.ArrayLike | None = None,
  target_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""ADDA discriminator loss (Tzeng et al., "Adversarial Discriminative Domain
  Adaptation", CVPR 2017, Eq. 5).

  .. math::
      \mathcal{L}_{adv_D} = -\tfrac12\big(\mathbb{E}_s \log\sigma(d^s)
                            + \mathbb{E}_t \log(1 - \sigma(d^t))\big)

  with :math:`d^s = D(M_s(x_s))` from the frozen source encoder and
  :math:`d^t = D(M_t(x_t))` from the target encoder. Numerically the same as
  :func:`dann_loss`; no gradient reversal is involved in ADDA.

  Args:
    domain_logits_source: ``[n_s]`` or ``[n_s, 1]`` logits on source features.
    domain_logits_target: ``[n_t]`` or ``[n_t, 1]`` logits on target features.
    source_weights: optional ``[n_s]`` weights.
    target_weights: optional ``[n_t]`` weights.

  Returns:
    Scalar loss that the discriminator minimises.
  """
  return dann_loss(
    domain_logits_source,
    domain_logits_target,
    source_weights=source_weights,
    target_weights=target_weights,
  )


def adda_encoder_loss(
  domain_logits_target: jax.typing.ArrayLike, *, target_weights: jax.typing.ArrayLike | None = None
) -> jax.Array:
  r"""ADDA target-encoder loss with inverted labels (Tzeng et al., CVPR 2017, Eq. 6).

  .. math::
      \mathcal{L}_{adv_M} = -\mathbb{E}_t \log\sigma(d^t)

  The target encoder :math:`M_t` is trained so that the discriminator labels its
  features as *source* (the GAN "inverted label" loss, stronger gradients than
  maximising the discriminator loss).

  Args:
    domain_logits_target: ``[n_t]`` or ``[n_t, 1]`` discriminator logits on target
      features.
    target_weights: optional ``[n_t]`` weights.

  Returns:
    Scalar loss that the target encoder minimises.
  """
  dt = V.check_domain_logits(domain_logits_target, "domain_logits_target")
  wt = V.check_weights(target_weights, "target_weights", dt.shape[0], dt.dtype)
  return V.weighted_mean(_bce_with_logits(dt, 1.0), wt)


def _confusion_logits(x, name: str) -> jax.Array:
  x = V.as_float_array(x, name)
  if x.ndim not in (1, 2):
    raise ValueError(
      f"`{name}` must have shape [n] / [n, 1] (binary logits) or [n, D] "
      f"with D >= 2 domains, got shape {tuple(x.shape)}."
    )
  V.check_nonempty(x, name)
  return x


def _confusion_per_example(x: jax.Array) -> jax.Array:
  if x.ndim == 1 or x.shape[1] == 1:
    z = x.reshape(x.shape[0])
    return 0.5 * (jax.nn.softplus(z) + jax.nn.softplus(-z))
  return -jnp.mean(jax.nn.log_softmax(x, axis=-1), axis=-1)


def domain_confusion_loss(
  domain_logits_source: jax.typing.ArrayLike,
  domain_logits_target: jax.typing.ArrayLike,
  *,
  source_weights: jax.typing.ArrayLike | None = None,
  target_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Domain confusion loss (Tzeng et al., "Simultaneous Deep Transfer Across Domains
  and Tasks", ICCV 2015, Eq. 3).

  Cross-entropy of the domain classifier's prediction against the *uniform*
  distribution over the :math:`D` domains:

  .. math::
      \mathcal{L}_{conf}(x) = -\sum_{d=1}^{D} \tfrac1D \log q_d(x), \qquad
      \mathcal{L} = \tfrac12\big(\mathbb{E}_s \mathcal{L}_{conf}
                                 + \mathbb{E}_t \mathcal{L}_{conf}\big).

  The feature extractor minimises it (with the domain classifier fixed), alternating
  with the classifier's own loss (:func:`dann_loss` for binary logits). Its minimum,
  :math:`\log D`, is reached when the classifier is maximally confused.

  Args:
    domain_logits_source: source-example logits, binary ``[n_s]`` / ``[n_s, 1]`` (then
      :math:`q = (\sigma(z), 1 - \sigma(z))`) or softmax logits ``[n_s, D]``, D >= 2.
    domain_logits_target: target-example logits, same convention, ``[n_t, ...]``.
    source_weights: optional ``[n_s]`` weights.
    target_weights: optional ``[n_t]`` weights.

  Returns:
    Scalar loss.
  """
  ds = _confusion_logits(domain_logits_source, "domain_logits_source")
  dt = _confusion_logits(domain_logits_target, "domain_logits_target")
  if ds.shape[1:] != dt.shape[1:] and not (ds.size // ds.shape[0] == dt.size // dt.shape[0] == 1):
    raise ValueError(
      "`domain_logits_source` and `domain_logits_target` must have the same "
      f"number of domains, got shapes {tuple(ds.shape)} and {tuple(dt.shape)}."
    )
  ws = V.check_weights(source_weights, "source_weights", ds.shape[0], ds.dtype)
  wt = V.check_weights(target_weights, "target_weights", dt.shape[0], dt.dtype)
  return 0.5 * (
    V.weighted_mean(_confusion_per_example(ds), ws)
    + V.weighted_mean(_confusion_per_example(dt), wt)
  )


def soft_label_loss(
  logits: jax.typing.ArrayLike,
  soft_targets: jax.typing.ArrayLike,
  *,
  temperature: float,
  weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Soft-label loss (Tzeng et al., ICCV 2015, Eq. 4).

  .. math::
      \mathcal{L}_{soft} = -\frac1n\sum_i w_i \sum_k l_{ik} \log p_{ik}, \qquad
      p_i = \mathrm{softmax}(z_i / \tau)

  where :math:`l_i` is the soft label of example :math:`i`'s class: the average of
  the source model's temperature-softened predictions over that class (see
  :func:`class_soft_labels`). The soft targets enter under ``stop_gradient``.

  Args:
    logits: classifier logits ``[n, C]``.
    soft_targets: probability vectors ``[n, C]`` (checked to sum to 1 in eager calls;
      unchecked under ``jit``).
    temperature: :math:`\tau > 0`.
    weights: optional ``[n]`` weights.

  Returns:
    Scalar loss.
  """
  V.check_positive(temperature, "temperature")
  z = V.check_class_logits(logits, "logits")
  targets = V.check_class_logits(soft_targets, "soft_targets")
  V.check_same_shape(z, "logits", targets, "soft_targets")
  V.check_probabilities(targets, "soft_targets")
  w = V.check_weights(weights, "weights", z.shape[0], z.dtype)
  log_p = jax.nn.log_softmax(z / temperature, axis=-1)
  per_example = -jnp.sum(jax.lax.stop_gradient(targets).astype(z.dtype) * log_p, axis=-1)
  return V.weighted_mean(per_example, w)


def class_soft_labels(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_classes: int,
  temperature: float,
) -> jax.Array:
  r"""Per-class soft labels of Tzeng et al. (ICCV 2015, Sec. 3.2).

  .. math::
      l^{(k)} = \frac{1}{|\{i: y_i = k\}|}\sum_{i: y_i = k} \mathrm{softmax}(z_i / \tau)

  computed from a (source-trained) model's logits on labelled source examples. A class
  with no example gets the uniform distribution. Index the result with a batch's labels
  (``soft[labels]``) to get the ``soft_targets`` of :func:`soft_label_loss`.

  Args:
    logits: ``[n, C]`` logits of labelled source examples.
    labels: ``[n]`` integer labels in ``[0, num_classes)``.
    num_classes: ``C``.
    temperature: :math:`\tau > 0`.

  Returns:
    ``[C, C]`` matrix; row ``k`` is the soft label of class ``k`` (no gradient).
  """
  V.check_positive(temperature, "temperature")
  z = V.check_class_logits(logits, "logits")
  if z.shape[1] != num_classes:
    raise ValueError(
      f"`logits` must have shape [n, num_classes={num_classes}], got {tuple(z.shape)}."
    )
  labels = jnp.asarray(labels)
  if labels.shape != (z.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(
      f"`labels` must be integers of shape [{z.shape[0]}], got "
      f"{labels.dtype} {tuple(labels.shape)}."
    )
  p = jax.nn.softmax(jax.lax.stop_gradient(z) / temperature, axis=-1)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)
  sums = onehot.T @ p
  counts = jnp.sum(onehot, axis=0)[:, None]
  uniform = jnp.full_like(sums, 1.0 / num_classes)
  return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), uniform)


__all__ = [
  "dann_loss",
  "domain_accuracy",
  "adda_discriminator_loss",
  "adda_encoder_loss",
  "domain_confusion_loss",
  "soft_label_loss",
  "class_soft_labels",
]
