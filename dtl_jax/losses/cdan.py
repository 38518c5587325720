"""Conditional adversarial domain adaptation (CDAN, CDAN+E).

Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018. The domain
discriminator sees the multilinear map :math:`T(f, g)` of features :math:`f` and class
probabilities :math:`g`, and (CDAN+E) examples are weighted by their prediction
certainty :math:`1 + e^{-H(g)}`.

A CDAN step, in the user's own jitted loss::

    h = cdan_features(features, class_logits)                # [n, C * F], probs detached
    d = discriminator(params_d, gradient_reverse(h, coeff))  # [n, 1] logits
    loss = cdan_loss(d[:n_s], d[n_s:], logits_source=class_logits[:n_s],
                     logits_target=class_logits[n_s:], entropy_conditioning=True)

The math (maps, index order, entropy weighting and its normalisation) follows TLlib's
``ConditionalDomainAdversarialLoss`` (dalib 0.2).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dtl_jax import _validation as V
from dtl_jax.losses import entropy as _entropy


def _features_and_probs(features, probs) -> tuple[jax.Array, jax.Array]:
  f = V.as_float_array(features, "features")
  V.check_rank(f, "features", (2,), "[n, F]")
  V.check_nonempty(f, "features")
  g = V.check_class_logits(probs, "probs")
  V.check_same_batch(f, "features", g, "probs")
  return f, g


def multilinear_map(features: jax.typing.ArrayLike, probs: jax.typing.ArrayLike) -> jax.Array:
  r"""Multilinear map :math:`T_\otimes(f, g) = g \otimes f`, flattened.

  .. math::
      T_\otimes(f, g)_{i,\, c F + k} = g_{ic}\, f_{ik}

  (index ``c * F + k``, exactly TLlib's ``MultiLinearMap``). This is plain math,
  differentiable in both arguments; :func:`cdan_features` applies the paper's
  ``stop_gradient`` to the probabilities.

  Args:
    features: ``[n, F]``.
    probs: ``[n, C]`` class probabilities (any weights work; not checked).

  Returns:
    ``[n, C * F]``, dtype of ``features``.
  """
  f, g = _features_and_probs(features, probs)
  g = g.astype(f.dtype)
  return (g[:, :, None] * f[:, None, :]).reshape(f.shape[0], g.shape[1] * f.shape[1])


def randomized_map_matrices(
  key: jax.Array, feature_dim: int, num_classes: int, dim: int = 1024, *, dtype=None
) -> tuple[jax.Array, jax.Array]:
  r"""Draws the fixed Gaussian matrices :math:`(R_f, R_g)` of the randomized map.

  Draw them once (e.g. at init, keep them in the train state / checkpoint) and pass
  them to :func:`randomized_multilinear_map` via ``matrices``.

  Args:
    key: PRNG key.
    feature_dim: ``F``.
    num_classes: ``C``.
    dim: output dimension ``d``.
    dtype: float dtype (default: JAX's default float).

  Returns:
    ``(R_f [F, d], R_g [C, d])`` with i.i.d. standard normal entries.
  """
  for name, v in (("feature_dim", feature_dim), ("num_classes", num_classes), ("dim", dim)):
    if not isinstance(v, int) or v <= 0:
      raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
  dtype = jnp.result_type(float) if dtype is None else dtype
  key_f, key_g = jax.random.split(key)
  return (
    jax.random.normal(key_f, (feature_dim, dim), dtype),
    jax.random.normal(key_g, (num_classes, dim), dtype),
  )


def randomized_multilinear_map(
  features: jax.typing.ArrayLike,
  probs: jax.typing.ArrayLike,
  *,
  key: jax.Array | None = None,
  dim: int = 1024,
  matrices: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike] | None = None,
) -> jax.Array:
  r"""Randomized multilinear map :math:`T_\odot(f, g) = (f R_f) \odot (g R_g) / \sqrt d`.

  Long et al. (NeurIPS 2018, Eq. 8); same math as TLlib's ``RandomizedMultiLinearMap``
  applied row-wise. Pass either ``key`` (the matrices are drawn from it with
  :func:`randomized_map_matrices`, so the same key gives the same map) or the fixed
  ``matrices`` themselves (cheaper inside a train step, and checkpointable).

  Args:
    features: ``[n, F]``.
    probs: ``[n, C]`` class probabilities.
    key: PRNG key for the matrices (exclusive with ``matrices``).
    dim: output dimension ``d`` when drawing from ``key``.
    matrices: ``(R_f [F, d], R_g [C, d])``.

  Returns:
    ``[n, d]``, dtype of ``features``.
  """
  f, g = _features_and_probs(features, probs)
  if key is not None and matrices is None:
    matrices = randomized_map_matrices(key, f.shape[1], g.shape[1], dim, dtype=f.dtype)
  elif matrices is None or key is not None:
    raise ValueError("Pass exactly one of `key` and `matrices` to randomized_multilinear_map.")
  r_f, r_g = (jnp.asarray(m) for m in matrices)
  if r_f.ndim != 2 or r_f.shape[0] != f.shape[1]:
    raise ValueError(
      f"`matrices[0]` (R_f) must have shape [F={f.shape[1]}, d], got {tuple(r_f.shape)}."
    )
  if r_g.ndim != 2 or r_g.shape != (g.shape[1], r_f.shape[1]):
    raise ValueError(
      f"`matrices[1]` (R_g) must have shape [C={g.shape[1]}, "
      f"d={r_f.shape[1]}], got {tuple(r_g.shape)}."
    )
  d = r_f.shape[1]
  r_f, r_g, g = r_f.astype(f.dtype), r_g.astype(f.dtype), g.astype(f.dtype)
  return (f @ r_f) * (g @ r_g) / jnp.asarray(math.sqrt(d), f.dtype)


def cdan_features(
  features: jax.typing.ArrayLike,
  logits: jax.typing.ArrayLike,
  *,
  matrices: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike] | None = None,
) -> jax.Array:
  r"""The discriminator input of CDAN: :math:`T(f, \mathrm{sg}[\mathrm{softmax}(z)])`.

  The class probabilities are detached (``stop_gradient``), as in the paper's code and
  TLlib: only the features receive the adversarial gradient through the map.

  Args:
    features: ``[n, F]``.
    logits: ``[n, C]`` classifier logits.
    matrices: optional ``(R_f, R_g)`` from :func:`randomized_map_matrices`; given, the
      randomized map is used (output ``[n, d]``), otherwise the full map (``[n, C F]``).

  Returns:
    ``[n, C * F]`` or ``[n, d]``.
  """
  z = V.check_class_logits(logits, "logits")
  g = jax.lax.stop_gradient(jax.nn.softmax(z, axis=-1))
  if matrices is None:
    return multilinear_map(features, g)
  return randomized_multilinear_map(features, g, matrices=matrices)


def cdan_loss(
  domain_logits_source: jax.typing.ArrayLike,
  domain_logits_target: jax.typing.ArrayLike,
  *,
  logits_source: jax.typing.ArrayLike | None = None,
  logits_target: jax.typing.ArrayLike | None = None,
  entropy_conditioning: bool = False,
  source_weights: jax.typing.ArrayLike | None = None,
  target_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""CDAN / CDAN+E discriminator loss on logits of the conditioned discriminator.

  With :math:`d_i` the discriminator logit of example :math:`i` of the concatenated
  batch (source first, label :math:`y_i = 1`; target label 0), :math:`N = n_s + n_t`:

  .. math::
      \mathcal{L} = \frac1N \sum_{i=1}^{N} w_i\,\mathrm{BCE}(d_i, y_i), \qquad
      w_i = N \frac{1 + e^{-H(g_i)}}{\sum_j (1 + e^{-H(g_j)})}\ \text{(CDAN+E)},
      \quad w_i = 1\ \text{(CDAN)}

  where :math:`g = \mathrm{softmax}(\text{class logits})` under ``stop_gradient`` and
  :math:`H(g) = -\sum_c g_c \log(g_c + 10^{-5})` (TLlib's entropy). The weights are
  normalised over the whole concatenated batch, as TLlib's
  ``ConditionalDomainAdversarialLoss`` does. For ``n_s == n_t`` and no entropy
  conditioning this equals :func:`dtl_jax.losses.dann_loss`.

  Args:
    domain_logits_source: ``[n_s]`` / ``[n_s, 1]`` logits of the discriminator applied
      to ``gradient_reverse(cdan_features(f_s, z_s), coeff)``.
    domain_logits_target: ``[n_t]`` / ``[n_t, 1]`` logits on target examples.
    logits_source: classifier logits ``[n_s, C]`` (needed for entropy conditioning).
    logits_target: classifier logits ``[n_t, C]`` (needed for entropy conditioning).
    entropy_conditioning: CDAN+E's certainty weighting.
    source_weights: optional extra ``[n_s]`` weights, multiplied into :math:`w_i`.
    target_weights: optional extra ``[n_t]`` weights.

  Returns:
    Scalar loss that the discriminator minimises.
  """
  ds = V.check_domain_logits(domain_logits_source, "domain_logits_source")
  dt = V.check_domain_logits(domain_logits_target, "domain_logits_target")
  ws = V.check_weights(source_weights, "source_weights", ds.shape[0], ds.dtype)
  wt = V.check_weights(target_weights, "target_weights", dt.shape[0], dt.dtype)
  d = jnp.concatenate([ds, dt.astype(ds.dtype)])
  per_example = jnp.concatenate([jax.nn.softplus(-ds), jax.nn.softplus(dt.astype(ds.dtype))])
  weights = None
  if entropy_conditioning:
    if logits_source is None or logits_target is None:
      raise ValueError(
        "`logits_source` and `logits_target` are required when `entropy_conditioning=True`."
      )
    zs = V.check_class_logits(logits_source, "logits_source")
    zt = V.check_class_logits(logits_target, "logits_target")
    V.check_same_batch(zs, "logits_source", ds, "domain_logits_source")
    V.check_same_batch(zt, "logits_target", dt, "domain_logits_target")
    if zs.shape[1] != zt.shape[1]:
      raise ValueError(
        "`logits_source` and `logits_target` must have the same number of "
        f"classes, got shapes {tuple(zs.shape)} and {tuple(zt.shape)}."
      )
    g = jax.lax.stop_gradient(jax.nn.softmax(jnp.concatenate([zs, zt.astype(zs.dtype)]), -1))
    weights = _entropy._certainty_weights(g, True, _entropy.TLLIB_EPSILON).astype(d.dtype)
  if ws is not None or wt is not None:
    extra = jnp.concatenate(
      [jnp.ones_like(ds) if ws is None else ws, jnp.ones_like(dt, ds.dtype) if wt is None else wt]
    )
    weights = extra if weights is None else weights * extra
  return V.weighted_mean(per_example, weights)


__all__ = [
  "multilinear_map",
  "randomized_map_matrices",
  "randomized_multilinear_map",
  "cdan_features",
  "cdan_loss",
]
