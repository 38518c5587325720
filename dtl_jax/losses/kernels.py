"""Kernels for the discrepancy losses: distances, Gaussian families, bandwidth rules.

Everything is built from ONE pairwise squared-distance matrix in Gram form,

  D_ij = ||x_i||^2 + ||y_j||^2 - 2 x_i . y_j     (clamped at 0),

so that no ``[n, m, d]`` difference tensor is ever materialised, and every Gaussian
of a multi-kernel family is evaluated from that same ``D``:

  k_u(x, y) = exp(-||x - y||^2 / (2 sigma_u^2)).

Bandwidths follow DAN (Long et al., "Learning Transferable Features with Deep
Adaptation Networks", ICML 2015) as released in TLlib: ``sigma_u^2 = beta_u * mean``
where ``mean`` is the mean squared distance over the *joint* batch (source and target
together, diagonal included) and ``beta_u`` are the multipliers ``(1/8, ..., 2)``.
The bandwidth is a constant for differentiation (``stop_gradient``), as in TLlib.

Kernel specifications (:class:`GaussianKernel`, :class:`LinearKernel`) are frozen
dataclasses registered as pytrees, so they can be closed over under ``jax.jit`` or
passed as arguments, and a fixed ``sigma2`` may even be ``jax.vmap``-ed over.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dtl_jax import _validation as V

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

BANDWIDTH_RULES = ("mean", "median")


def pairwise_sq_distances(
  x: ArrayLike,
  y: ArrayLike | None = None,
  *,
  precision: jax.lax.PrecisionLike = jax.lax.Precision.HIGHEST,
) -> Array:
  """Pairwise squared Euclidean distances in Gram form.

  ``D_ij = ||x_i||^2 + ||y_j||^2 - 2 <x_i, y_j>``, clamped at 0 (rounding can make the
  Gram form slightly negative). Costs one ``[n, d] x [d, m]`` matmul and never builds
  the ``[n, m, d]`` difference tensor.

  Args:
    x: ``[n, d]``.
    y: ``[m, d]``; ``None`` means ``y = x``.
    precision: matmul precision. ``HIGHEST`` by default because the Gram form
      cancels ``||x||^2 + ||y||^2`` against ``2 x.y``; reduced-precision matmuls
      (TF32 / bf16 passes on GPU / TPU) would make small distances meaningless.

  Returns:
    ``[n, m]`` with the dtype of the inputs.
  """
  x = V.check_matrix(x, "x", shape_doc="[n, d]")
  if y is None:
    x_sq = jnp.sum(x * x, axis=1)
    return _sq_dists(x, x, x_sq, x_sq, precision)
  y = V.check_matrix(y, "y", shape_doc="[m, d]")
  V.check_same_dim(x, "x", y, "y")
  dtype = jnp.result_type(x, y)
  x, y = x.astype(dtype), y.astype(dtype)
  return _sq_dists(x, y, jnp.sum(x * x, axis=1), jnp.sum(y * y, axis=1), precision)


def _sq_dists(x, y, x_sq, y_sq, precision=jax.lax.Precision.HIGHEST):
  """Gram-form distances; ``y is x`` (the same array object) takes :func:`symmetric_gram`."""
  gram = (
    symmetric_gram(x, precision=precision) if y is x else jnp.matmul(x, y.T, precision=precision)
  )
  return jnp.maximum(x_sq[:, None] + y_sq[None, :] - 2.0 * gram, 0.0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _symmetric_gram(x, precision):
  return jnp.matmul(x, x.T, precision=precision)


@_symmetric_gram.defjvp
def _symmetric_gram_jvp(precision, primals, tangents):
  (x,), (dx,) = primals, tangents
  t = jnp.matmul(dx, x.T, precision=precision)
  # Written as t + tᵀ, the tangent transposes to (G + Gᵀ) X: ONE product in reverse
  # mode, where autodiff of x @ x.T would spend two (G X and Gᵀ X).
  return _symmetric_gram(x, precision), t + t.T


def symmetric_gram(
  x: ArrayLike, *, precision: jax.lax.PrecisionLike = jax.lax.Precision.HIGHEST
) -> Array:
  """The Gram matrix ``G = X Xᵀ`` with a derivative rule that uses its symmetry.

  ``dG = dX Xᵀ + X dXᵀ = T + Tᵀ`` with ``T = dX Xᵀ``; its transpose sends a cotangent
  ``C`` to ``(C + Cᵀ) X``. Reverse mode therefore needs one ``[n, n] x [n, d]`` product
  instead of the two (``C X`` and ``Cᵀ X``) of differentiating a general product:
  value + gradient cost two GEMMs instead of three. It is a ``jax.custom_jvp``, so
  ``jax.jvp`` / ``jax.jacfwd`` / ``jax.hessian`` work as well as ``jax.grad``,
  ``jax.vmap`` and ``jax.jit``.

  Args:
    x: ``[n, d]``.
    precision: matmul precision (``HIGHEST`` by default, see
      :func:`pairwise_sq_distances`).

  Returns:
    ``[n, n]``.
  """
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"x must have shape [n, d], got {tuple(x.shape)}.")
  return _symmetric_gram(x, precision)


def gaussian_kernels(sq_dists: ArrayLike, sigma2s: ArrayLike) -> Array:
  """All Gaussian kernels of a bandwidth list from one distance matrix.

  ``K[u] = exp(-sq_dists / (2 sigma2s[u]))``.

  Args:
    sq_dists: ``[n, m]`` squared distances (e.g. :func:`pairwise_sq_distances`).
    sigma2s: ``[k]`` (or scalar) bandwidths ``sigma^2 > 0``.

  Returns:
    ``[k, n, m]`` (``[n, m]`` for a scalar ``sigma2s``).
  """
  sq_dists = jnp.asarray(sq_dists)
  sigma2s = jnp.asarray(sigma2s, dtype=sq_dists.dtype)
  if sigma2s.ndim > 1:
    raise ValueError(f"sigma2s must be a scalar or have shape [k], got {tuple(sigma2s.shape)}.")
  V.check_positive(sigma2s, "sigma2s", scalar=False)
  if sigma2s.ndim == 0:
    return jnp.exp(-sq_dists / (2.0 * sigma2s))
  return jnp.exp(-sq_dists[None] / (2.0 * sigma2s[:, None, None]))


def power_of_two_exponents(multipliers: Sequence[float]) -> tuple[int, ...] | None:
  """Exponents ``j_u`` with ``beta_u = max(beta) / 2**j_u``, or None if not all exist.

  With such multipliers, ``k_u = exp(-D / (2 beta_u s)) = e ** (2 ** j_u)`` where
  ``e = exp(-D / (2 max(beta) s))`` is the widest kernel; see
  :func:`gaussian_kernel_sum`.
  """
  top = max(multipliers)
  exps = []
  for m in multipliers:
    ratio = top / m
    j = round(math.log2(ratio))
    if abs(ratio - 2.0**j) > 1e-12 * ratio or j > 30:
      return None
    exps.append(j)
  return tuple(exps)


def gaussian_kernel_sum(
  sq_dists: ArrayLike,
  sigma2: ArrayLike,
  *,
  multipliers: Sequence[float] = (1.0,),
) -> Array:
  """The multi-kernel ``sum_u exp(-D / (2 beta_u sigma2))`` with ONE exponential.

  If every multiplier is the largest one divided by a power of two (DAN's
  ``(1/8, 1/4, 1/2, 1, 2)`` are), the kernels are powers of the widest one:
  ``k_u = e ** (2 ** j_u)`` with ``e = exp(-D / (2 max(beta) sigma2))``. The sum is
  then one ``exp`` followed by ``max(j)`` squarings (4 for DAN) instead of five
  ``exp``. Otherwise each kernel gets its own ``exp``.

  Derivative (a ``jax.custom_jvp``): with ``a_u = -1 / (2 beta_u sigma2)``,
  ``dk/dD = sum_u a_u k_u`` and ``dk/dsigma2 = -(D / sigma2) dk/dD``. The slope
  ``dk/dD`` is computed next to the value from the same powers of ``e`` (for powers of
  two: ``a_max sum_j c_j 2^j e^(2^j)``), in the same fused pass; reverse mode keeps that
  one ``[n, m]`` array and the backward is a single multiplication, where autodiff of the
  squaring chain would store every power and walk the chain back.

  Numerics of the squaring chain: if ``e`` carries a relative error ``eps_0`` (about one
  ulp ``u`` from ``exp``), then ``e ** 2`` computed by one rounded multiplication has
  relative error ``2 eps_0 + u``, so after ``j`` squarings the error is at most
  ``2**j eps_0 + (2**j - 1) u``, i.e. ``< 2**(j+1) u`` = ``32 u`` for DAN (``j <= 4``).
  That is the same order as the direct ``exp(-D / (2 beta sigma2))``, whose argument
  already carries the relative rounding error of ``D`` amplified by ``D / (2 beta
  sigma2)`` (up to ~16 times larger for the narrowest kernel). Values stay in [0, 1], so
  there is no overflow; tiny values underflow to 0 exactly where the direct ``exp``
  underflows too (``e**16 < tiny`` iff ``16 log e < log tiny``).

  Args:
    sq_dists: ``[...]`` squared distances, any shape.
    sigma2: scalar base bandwidth ``sigma^2``.
    multipliers: static positive ``beta_u``; the bandwidths are ``beta_u * sigma2``.

  Returns:
    Same shape as ``sq_dists``.
  """
  sq_dists = jnp.asarray(sq_dists)
  multipliers = _check_multipliers(multipliers)
  sigma2 = jnp.asarray(sigma2, dtype=sq_dists.dtype)
  return _kernel_sum(sq_dists, sigma2, multipliers)


def _kernel_sum_and_slope(d, sigma2, multipliers, *, slope: bool):
  """``(k, dk/dD or None)`` of :func:`gaussian_kernel_sum` from shared exponentials.

  With ``slope=True`` the exponential(s) pass through ``optimization_barrier``: XLA
  then computes each ``exp`` once, stores it, and derives ``k`` and ``dk/dD`` from it by
  multiplications. Without the barrier XLA:CPU splits the two consumers of the squaring
  chain into separate loops and recomputes the ``exp`` in each (five ``exp`` passes for
  DAN instead of one).
  """
  exps = power_of_two_exponents(multipliers)
  if exps is None:
    coefs = [(-0.5 / m) / sigma2 for m in multipliers]
    terms = [jnp.exp(d * c) for c in coefs]
    if slope:
      terms = list(jax.lax.optimization_barrier(tuple(terms)))
    total = functools.reduce(jnp.add, terms)
    if not slope:
      return total, None
    return total, functools.reduce(jnp.add, [t * c for t, c in zip(terms, coefs, strict=True)])
  coef = (-0.5 / max(multipliers)) / sigma2
  power = jnp.exp(d * coef)
  if slope:
    power = jax.lax.optimization_barrier(power)
  counts = [exps.count(j) for j in range(max(exps) + 1)]
  result: Array | None = None
  dk: Array | None = None
  for j, count in enumerate(counts):
    if j > 0:
      power = power * power
    if count:
      term = power if count == 1 else count * power
      result = term if result is None else result + term
      if slope:  # d/dD e^(2^j) = 2^j coef e^(2^j); coef is applied once at the end
        weight = count * 2**j
        sterm = power if weight == 1 else weight * power
        dk = sterm if dk is None else dk + sterm
  assert result is not None  # the largest exponent max(exps) occurs at least once
  return result, None if dk is None else dk * coef


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _kernel_sum(d, sigma2, multipliers):
  return _kernel_sum_and_slope(d, sigma2, multipliers, slope=False)[0]


@functools.partial(_kernel_sum.defjvp, symbolic_zeros=True)
def _kernel_sum_jvp(multipliers, primals, tangents):
  d, sigma2 = primals
  dd, dsigma2 = tangents
  total, dk = _kernel_sum_and_slope(d, sigma2, multipliers, slope=True)
  d_zero = type(dd) is jax.custom_derivatives.SymbolicZero
  s_zero = type(dsigma2) is jax.custom_derivatives.SymbolicZero
  if d_zero and s_zero:
    return total, jnp.zeros_like(total)
  tangent = None if d_zero else dk * dd
  if not s_zero:  # dk/dsigma2 = -(D / sigma2) dk/dD
    ts = dk * (d * (-dsigma2 / sigma2))
    tangent = ts if tangent is None else tangent + ts
  return total, tangent


def _check_multipliers(multipliers) -> tuple[float, ...]:
  try:
    multipliers = tuple(float(m) for m in multipliers)
  except TypeError as e:
    raise ValueError(
      f"multipliers must be a sequence of Python floats > 0, got {multipliers!r}."
    ) from e
  if not multipliers or any(not math.isfinite(m) or m <= 0 for m in multipliers):
    raise ValueError(
      f"multipliers must be a non-empty sequence of finite floats > 0, got {multipliers!r}."
    )
  return multipliers


def mean_heuristic(features: ArrayLike) -> Array:
  """DAN / TLlib bandwidth: the mean squared distance over the joint batch.

  ``mean_{i,j} ||z_i - z_j||^2`` over all ``N^2`` ordered pairs (diagonal included, as
  ``torch.mean(l2_distance_square)`` in TLlib's ``GaussianKernel``), computed in O(N d)
  from the identity ``mean_{i,j} ||z_i - z_j||^2 = (2 / N) sum_i ||z_i - mean(z)||^2``.
  Wrapped in ``stop_gradient``. If all points coincide (mean 0) it returns 1, a value
  that changes nothing (every kernel entry is ``exp(0) = 1``) but avoids ``0 / 0``.

  Args:
    features: ``[N, d]`` joint batch (source rows then target rows).

  Returns:
    Scalar ``sigma^2`` (multiply by the kernel multipliers).
  """
  z = V.check_matrix(features, "features", shape_doc="[N, d]")
  z = jax.lax.stop_gradient(z)
  centred = z - jnp.mean(z, axis=0, keepdims=True)
  mean = 2.0 * jnp.mean(jnp.sum(centred * centred, axis=1))
  return jnp.where(mean > 0, mean, jnp.ones_like(mean))


def median_heuristic(features: ArrayLike) -> Array:
  """Median heuristic: ``median_{i < j} ||z_i - z_j||^2`` over the joint batch.

  (Gretton et al., JMLR 2012.) Needs the full ``[N, N]`` distance matrix, so it is not
  available for tiled evaluation. Wrapped in ``stop_gradient``; returns 1 when the
  median is 0 (e.g. more than half the pairs coincide) to avoid ``0 / 0``.

  Args:
    features: ``[N, d]`` joint batch, ``N >= 2``.

  Returns:
    Scalar ``sigma^2``.
  """
  z = V.check_matrix(features, "features", shape_doc="[N, d]")
  if z.shape[0] < 2:
    raise ValueError(f"median_heuristic needs features with N >= 2 rows, got {tuple(z.shape)}.")
  z = jax.lax.stop_gradient(z)
  d = pairwise_sq_distances(z)
  rows, cols = np.triu_indices(z.shape[0], k=1)
  med = jnp.median(d[rows, cols])
  return jnp.where(med > 0, med, jnp.ones_like(med))


@dataclasses.dataclass(frozen=True)
class GaussianKernel:
  """A sum of Gaussian kernels sharing one distance matrix.

  ``k(x, y) = sum_u exp(-||x - y||^2 / (2 beta_u sigma^2))`` with ``beta_u`` the
  ``multipliers`` and ``sigma^2`` either fixed (``sigma2``) or set per batch by ``rule``
  (``"mean"``: :func:`mean_heuristic`, DAN/TLlib; ``"median"``: :func:`median_heuristic`).

  Examples: DAN's kernel is ``GaussianKernel(multipliers=(1/8, 1/4, 1/2, 1, 2))``;
  JAN's softmax-layer kernel is ``GaussianKernel(sigma2=0.92 ** 2)``; DDC (Tzeng
  2014) uses the single default ``GaussianKernel()``.

  Attributes:
    multipliers: static positive floats ``beta_u``.
    sigma2: fixed base bandwidth ``sigma^2`` (float or scalar array; may be traced,
      e.g. under ``jax.vmap``), or None to use ``rule``.
    rule: bandwidth rule when ``sigma2`` is None: ``"mean"`` or ``"median"``.
  """

  multipliers: tuple[float, ...] = (1.0,)
  sigma2: ArrayLike | None = None
  rule: str = "mean"

  def __post_init__(self):
    object.__setattr__(self, "multipliers", _check_multipliers(self.multipliers))
    if self.rule not in BANDWIDTH_RULES:
      raise ValueError(f"rule must be one of {BANDWIDTH_RULES}, got {self.rule!r}.")
    # Only validate real numbers / arrays: pytree unflattening may pass placeholders.
    if isinstance(self.sigma2, (int, float, np.ndarray, np.generic, jax.Array)):
      if jnp.ndim(self.sigma2) != 0:
        raise ValueError(f"sigma2 must be a scalar, got shape {jnp.shape(self.sigma2)}.")
      V.check_positive(self.sigma2, "sigma2")

  def base_sigma2(self, features: Array) -> Array:
    """``sigma^2`` for a joint batch ``[N, d]`` (the fixed value if one is set)."""
    if self.sigma2 is not None:
      return jnp.asarray(self.sigma2, dtype=features.dtype)
    if self.rule == "mean":
      return mean_heuristic(features)
    return median_heuristic(features)

  def bandwidths(self, features: Array) -> Array:
    """``[k]`` bandwidths ``beta_u sigma^2`` for a joint batch ``[N, d]``."""
    return jnp.asarray(self.multipliers, features.dtype) * self.base_sigma2(features)

  def from_sq_dists(self, sq_dists: Array, sigma2: Array) -> Array:
    """The kernel sum from squared distances (any shape) and a base ``sigma^2``."""
    return gaussian_kernel_sum(sq_dists, sigma2, multipliers=self.multipliers)

  def __call__(self, x: ArrayLike, y: ArrayLike | None = None) -> Array:
    """Kernel matrix ``[n, m]``; the bandwidth rule sees the joint batch ``[x; y]``."""
    x = jnp.asarray(x)
    joint = x if y is None else jnp.concatenate([x, jnp.asarray(y)], axis=0)
    return self.from_sq_dists(pairwise_sq_distances(x, y), self.base_sigma2(joint))


@dataclasses.dataclass(frozen=True)
class LinearKernel:
  """The linear kernel ``k(x, y) = <x, y>``: MMD^2 becomes ``||mean_s - mean_t||^2``."""

  def __call__(self, x: ArrayLike, y: ArrayLike | None = None) -> Array:
    x = jnp.asarray(x)
    y = x if y is None else jnp.asarray(y)
    return jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)


jax.tree_util.register_dataclass(
  GaussianKernel, data_fields=["sigma2"], meta_fields=["multipliers", "rule"]
)
jax.tree_util.register_dataclass(LinearKernel, data_fields=[], meta_fields=[])

Kernel = GaussianKernel | LinearKernel


def as_kernel(kernel) -> Kernel:
  """Normalises a kernel argument: a spec object, ``"linear"`` or ``"gaussian"``."""
  if isinstance(kernel, (GaussianKernel, LinearKernel)):
    return kernel
  if kernel == "linear":
    return LinearKernel()
  if kernel == "gaussian":
    return GaussianKernel()
  raise ValueError(
    f"kernel must be a GaussianKernel, a LinearKernel, 'linear' or 'gaussian', got {kernel!r}."
  )
