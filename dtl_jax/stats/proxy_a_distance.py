"""Proxy A-distance (Ben-David, Blitzer, Crammer & Pereira, NIPS 2006; Ben-David et al. 2010)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dtl_jax import _validation as V
from dtl_jax.instance import learners


def proxy_a_distance(
  source_features: ArrayLike,
  target_features: ArrayLike,
  *,
  key: jax.Array,
  test_fraction: float = 0.5,
  classifier: str = "logistic",
  hidden_sizes: tuple[int, ...] = (32,),
  l2: float = 1e-3,
  num_steps: int = 300,
  learning_rate: float | None = None,
) -> jax.Array:
  """``PAD = 2 (1 − 2ε)`` with ``ε`` the held-out error of a source-vs-target classifier.

  Each domain is split at random (``test_fraction`` held out); a domain classifier
  (logistic regression, or a small MLP) is trained on the rest with the two domains
  weighted equally, and ``ε`` is its *balanced* held-out error
  ``½ (err_source + err_target)``, so that chance level gives ``PAD ≈ 0`` whatever the
  domain sizes. ``PAD`` lies in ``[−2, 2]``; ≈ 2 means the domains are fully separable.

  Args:
    source_features: ``[n_s, d]`` (n_s ≥ 2); target_features: ``[n_t, d]`` (n_t ≥ 2).
    key: PRNG key for the split (and the MLP init).
    test_fraction: held-out share of each domain.
    classifier: ``"logistic"`` or ``"mlp"``.
    hidden_sizes, l2, num_steps: classifier settings (full-batch Adam steps).
    learning_rate: Adam step size (default 0.05 for logistic, 0.01 for the MLP).

  Returns:
    Scalar PAD.
  """
  xs = V.check_matrix(source_features, "source_features", min_rows=2)
  xt = V.check_matrix(target_features, "target_features", min_rows=2).astype(xs.dtype)
  V.check_same_dim(xs, "source_features", xt, "target_features")
  if classifier not in ("logistic", "mlp"):
    raise ValueError(f"`classifier` must be 'logistic' or 'mlp'; got {classifier!r}.")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"`test_fraction` must be in (0, 1); got {test_fraction}.")
  if learning_rate is None:
    learning_rate = 0.05 if classifier == "logistic" else 0.01
  return _pad(
    key,
    xs,
    xt,
    test_fraction=test_fraction,
    classifier=classifier,
    hidden_sizes=tuple(hidden_sizes),
    l2=l2,
    num_steps=num_steps,
    learning_rate=learning_rate,
  )


def _split(key, n, fraction):
  perm = jax.random.permutation(key, n)
  n_test = min(max(1, int(round(fraction * n))), n - 1)
  return perm[n_test:], perm[:n_test]


@functools.partial(
  jax.jit, static_argnames=("test_fraction", "classifier", "hidden_sizes", "num_steps")
)
def _pad(key, xs, xt, *, test_fraction, classifier, hidden_sizes, l2, num_steps, learning_rate):
  k_s, k_t, k_init = jax.random.split(key, 3)
  tr_s, te_s = _split(k_s, xs.shape[0], test_fraction)
  tr_t, te_t = _split(k_t, xt.shape[0], test_fraction)
  x_tr = jnp.concatenate([xs[tr_s], xt[tr_t]])
  y_tr = jnp.concatenate([jnp.zeros(tr_s.shape, jnp.int32), jnp.ones(tr_t.shape, jnp.int32)])
  w_tr = jnp.concatenate(
    [
      jnp.full(tr_s.shape, 0.5 / tr_s.shape[0], xs.dtype),
      jnp.full(tr_t.shape, 0.5 / tr_t.shape[0], xs.dtype),
    ]
  )
  if classifier == "logistic":
    params = learners.fit_logistic_regression(
      x_tr, y_tr, w_tr, num_classes=2, l2=l2, num_steps=num_steps, learning_rate=learning_rate
    )
    predict = lambda x: jnp.argmax(learners.logistic_regression_logits(params, x), axis=-1)
  else:
    params = learners.fit_mlp(
      k_init,
      x_tr,
      y_tr,
      w_tr,
      hidden_sizes=hidden_sizes,
      num_outputs=2,
      task="classification",
      l2=l2,
      num_steps=num_steps,
      learning_rate=learning_rate,
    )
    model = learners.MLP(hidden_sizes, 2)
    predict = lambda x: jnp.argmax(model.apply(params, x), axis=-1)
  err_s = jnp.mean((predict(xs[te_s]) != 0).astype(xs.dtype))
  err_t = jnp.mean((predict(xt[te_t]) != 1).astype(xs.dtype))
  eps = 0.5 * (err_s + err_t)
  return 2.0 * (1.0 - 2.0 * eps)
