"""Prediction entropy, certainty weights, entropy minimisation and MCC.

* :func:`entropy` -- Shannon entropy of class distributions (from probabilities with
  TLlib's ``+1e-5`` inside the log, or exactly from logits).
* :func:`entropy_weights` -- CDAN+E's certainty weights :math:`1 + e^{-H}`.
* :func:`entropy_minimization_loss` -- Grandvalet & Bengio (NIPS 2004).
* :func:`mcc_loss` -- minimum class confusion (Jin et al., ECCV 2020), as TLlib computes it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.special

from dtl_jax import _validation as V

TLLIB_EPSILON = 1e-5


def _entropy_of_probs(p: jax.Array, epsilon: float) -> jax.Array:
  # xlogy: 0 * log(0 + 0) = 0, so epsilon=0 gives the exact entropy of one-hot rows.
  return -jnp.sum(jax.scipy.special.xlogy(p, p + epsilon), axis=-1)


def _entropy_of_logits(z: jax.Array) -> jax.Array:
  log_p = jax.nn.log_softmax(z, axis=-1)
  return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def entropy(
  x: jax.typing.ArrayLike, *, from_logits: bool = False, epsilon: float = TLLIB_EPSILON
) -> jax.Array:
  r"""Shannon entropy (nats) of each class distribution along the last axis.

  .. math::
      H(p) = -\sum_c p_c \log(p_c + \epsilon) \quad\text{(probabilities, TLlib)}, \qquad
      H(z) = -\sum_c \mathrm{softmax}(z)_c \log\mathrm{softmax}(z)_c \quad\text{(logits)}

  The :math:`\epsilon` (TLlib's ``1e-5``; set 0 for the exact entropy) keeps the
  gradient finite when a probability is 0. From logits the entropy is exact and stable.

  Args:
    x: probabilities ``[..., C]`` (rows checked to sum to 1 in eager calls; unchecked
      under ``jit``) or, with ``from_logits=True``, logits ``[..., C]``.
    from_logits: interpret ``x`` as logits.
    epsilon: offset inside the log for probabilities (>= 0).

  Returns:
    ``[...]``: one entropy per distribution, dtype of ``x``.
  """
  x = V.as_float_array(x, "x")
  if x.ndim < 1 or x.shape[-1] == 0:
    raise ValueError(f"`x` must have a non-empty class axis [..., C], got shape {tuple(x.shape)}.")
  if from_logits:
    return _entropy_of_logits(x)
  if epsilon < 0:
    raise ValueError(f"`epsilon` must be >= 0, got {epsilon!r}.")
  V.check_probabilities(x, "x", hint="Pass logits with `from_logits=True` instead?")
  return _entropy_of_probs(x, epsilon)


def _certainty_weights(p: jax.Array, normalize: bool, epsilon: float) -> jax.Array:
  w = 1.0 + jnp.exp(-_entropy_of_probs(p, epsilon))
  if normalize:
    w = w / jnp.sum(w) * w.shape[0]
  return w


def entropy_weights(
  probs: jax.typing.ArrayLike, *, normalize: bool = False, epsilon: float = TLLIB_EPSILON
) -> jax.Array:
  r"""CDAN+E certainty weights :math:`w_i = 1 + e^{-H(p_i)}` (Long et al., NeurIPS 2018).

  With ``normalize=True`` they are rescaled to average 1 over the batch,
  :math:`w_i \leftarrow n\, w_i / \sum_j w_j`, as TLlib's CDAN loss does.
  :math:`H` is :func:`entropy` with TLlib's ``epsilon``.

  Args:
    probs: class probabilities ``[n, C]`` (checked in eager calls only).
    normalize: rescale to mean 1.
    epsilon: offset inside the log.

  Returns:
    ``[n]`` weights in ``(1, 2]`` (before normalisation). Not detached: wrap ``probs``
    in ``jax.lax.stop_gradient`` if the weights should carry no gradient.
  """
  p = V.check_class_logits(probs, "probs")
  V.check_probabilities(p, "probs")
  return _certainty_weights(p, normalize, epsilon)


def entropy_minimization_loss(
  logits: jax.typing.ArrayLike, *, weights: jax.typing.ArrayLike | None = None
) -> jax.Array:
  r"""Mean prediction entropy (Grandvalet & Bengio, "Semi-supervised Learning by
  Entropy Minimization", NIPS 2004), exact from logits:

  .. math::
      \mathcal{L} = \frac1n \sum_i w_i\, H(\mathrm{softmax}(z_i)).

  Args:
    logits: ``[n, C]`` (typically target-domain logits).
    weights: optional ``[n]`` weights.

  Returns:
    Scalar loss.
  """
  z = V.check_class_logits(logits, "logits")
  w = V.check_weights(weights, "weights", z.shape[0], z.dtype)
  return V.weighted_mean(_entropy_of_logits(z), w)


def mcc_loss(logits: jax.typing.ArrayLike, *, temperature: float = 2.5) -> jax.Array:
  r"""Minimum class confusion (Jin et al., "Minimum Class Confusion for Versatile Domain
  Adaptation", ECCV 2020), computed as TLlib's ``MinimumClassConfusionLoss``.

  .. math::
      \hat Y = \mathrm{softmax}(Z / T), \quad
      W = \mathrm{diag}\Big(n\frac{1 + e^{-H(\hat y_i)}}{\sum_j 1 + e^{-H(\hat y_j)}}\Big),
      \quad C = \hat Y^\top W \hat Y,

  .. math::
      \tilde C_{jj'} = C_{jj'} / \textstyle\sum_{j''} C_{jj''}, \qquad
      \mathcal{L} = \frac1{K}\Big(\sum_{j \ne j'} \tilde C_{jj'}\Big)
      = \frac1{K}\Big(K - \sum_j \tilde C_{jj}\Big)

  (the certainty weights :math:`W` are detached; :math:`K` classes). TLlib divides
  :math:`C` by its broadcast row sums, i.e. column-normalises; :math:`C` is symmetric,
  so the loss is the same.

  Args:
    logits: ``[n, K]`` (target-domain) logits.
    temperature: :math:`T > 0` (2.5 in TLlib's examples).

  Returns:
    Scalar loss in [0, (K - 1) / K].
  """
  V.check_positive(temperature, "temperature")
  z = V.check_class_logits(logits, "logits")
  num_classes = z.shape[1]
  p = jax.nn.softmax(z / temperature, axis=-1)
  w = jax.lax.stop_gradient(_certainty_weights(p, True, TLLIB_EPSILON))
  confusion = (p * w[:, None]).T @ p
  confusion = confusion / jnp.sum(confusion, axis=1)
  return (jnp.sum(confusion) - jnp.trace(confusion)) / num_classes


__all__ = ["entropy", "entropy_weights", "entropy_minimization_loss", "mcc_loss"]
