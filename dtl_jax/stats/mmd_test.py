"""The kernel two-sample test by permutation.

Gretton, Borgwardt, Rasch, Schölkopf & Smola, "A Kernel Two-Sample Test", JMLR 2012.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dtl_jax import _validation as V
from dtl_jax.losses import kernels

_ESTIMATORS = ("biased", "unbiased")


class MMDTestResult(NamedTuple):
  """``statistic``: MMD² of the observed split; ``p_value``: permutation p-value."""

  statistic: jax.Array
  p_value: jax.Array


def mmd_test(
  source: ArrayLike,
  target: ArrayLike,
  *,
  key: jax.Array,
  num_permutations: int = 1000,
  kernel=None,
  estimator: str = "biased",
) -> MMDTestResult:
  """Permutation test of ``H0: p_S = p_T`` with the MMD² statistic.

  The pooled sample ``Z = [source; target]`` (``N = n_s + n_t`` rows) gets ONE kernel
  matrix ``K [N, N]``. A split of ``Z`` into the first ``n_s`` and the last ``n_t``
  indices of a permutation ``π`` has statistic, with indicator ``a_π`` of the ``n_s``
  "source" slots and ``b_π = 1 − a_π``,

  * ``"biased"`` (V-statistic): ``vᵀ K v`` with ``v = a_π/n_s − b_π/n_t``;
  * ``"unbiased"`` (U-statistic): ``a K₀ a/(n_s(n_s−1)) + b K₀ b/(n_t(n_t−1)) − 2 a K b/(n_s n_t)``
    with ``K₀`` = ``K`` without its diagonal.

  All ``num_permutations`` splits are evaluated in one jitted ``vmap`` (indices are
  permuted, never the data), and
  ``p = (1 + #{π : MMD²_π ≥ MMD²_obs}) / (1 + num_permutations)``, which is a valid
  (slightly conservative) p-value. The kernel bandwidth is computed from the pooled
  sample, so it is the same for every permutation.

  Args:
    source: ``[n_s, d]`` (n_s ≥ 2); target: ``[n_t, d]`` (n_t ≥ 2).
    key: PRNG key for the permutations.
    num_permutations: number of random permutations ``P``.
    kernel: a :class:`dtl_jax.losses.kernels.GaussianKernel` / ``LinearKernel``,
      ``"gaussian"`` or ``"linear"``; default ``GaussianKernel(rule="median")`` (the
      median heuristic of Gretton et al.).
    estimator: ``"biased"`` or ``"unbiased"`` MMD².

  Returns:
    :class:`MMDTestResult` (scalars). Works under ``jit`` and ``vmap`` (e.g. over trials).
  """
  xs = V.check_matrix(source, "source", min_rows=2)
  xt = V.check_matrix(target, "target", min_rows=2).astype(xs.dtype)
  V.check_same_dim(xs, "source", xt, "target")
  if num_permutations < 1:
    raise ValueError(f"`num_permutations` must be >= 1; got {num_permutations}.")
  if estimator not in _ESTIMATORS:
    raise ValueError(f"`estimator` must be one of {_ESTIMATORS}; got {estimator!r}.")
  kernel = kernels.GaussianKernel(rule="median") if kernel is None else kernels.as_kernel(kernel)
  return _mmd_test(key, xs, xt, kernel, num_permutations=num_permutations, estimator=estimator)


def mmd_statistic_from_gram(
  k: jax.Array, in_source: jax.Array, *, num_source: int, estimator: str = "biased"
) -> jax.Array:
  """MMD² of the split ``in_source`` (0/1 indicator ``[N]``) of a pooled Gram matrix ``[N, N]``."""
  n, m = num_source, k.shape[0] - num_source
  a = in_source.astype(k.dtype)
  b = 1.0 - a
  if estimator == "biased":
    v = a / n - b / m
    return v @ k @ v
  k0 = k - jnp.diag(jnp.diag(k))
  return a @ k0 @ a / (n * (n - 1)) + b @ k0 @ b / (m * (m - 1)) - 2.0 * (a @ k @ b) / (n * m)


@functools.partial(jax.jit, static_argnames=("num_permutations", "estimator"))
def _mmd_test(key, xs, xt, kernel, *, num_permutations, estimator):
  n, total = xs.shape[0], xs.shape[0] + xt.shape[0]
  k = kernel(jnp.concatenate([xs, xt]))
  stat = functools.partial(mmd_statistic_from_gram, k, num_source=n, estimator=estimator)
  observed = stat(jnp.arange(total) < n)

  def permuted(key):
    perm = jax.random.permutation(key, total)
    return stat(jnp.zeros((total,), bool).at[perm[:n]].set(True))

  null = jax.vmap(permuted)(jax.random.split(key, num_permutations))
  p_value = (1.0 + jnp.sum(null >= observed)) / (1.0 + num_permutations)
  return MMDTestResult(observed, p_value.astype(k.dtype))
