"""Maximum Mean Discrepancy: MMD, MK-MMD (DAN) and JMMD (JAN), dense or tiled.

Notation: source ``S = [s_1 .. s_{n_s}]`` (``[n_s, d]``), target ``T`` (``[n_t, d]``),
normalised sample weights ``w^s`` and ``w^t`` (uniform ``1/n`` by default), kernel
``k``. All estimators are built from the joint batch ``Z = [S; T]`` (``[N, d]``,
``N = n_s + n_t``) and three weighted kernel sums

  V_ss = sum_ij w^s_i w^s_j k(s_i, s_j),  V_tt = (same for T),
  V_st = sum_ij w^s_i w^t_j k(s_i, t_j),

the entries of ``Q = Wᵀ K W`` (``[2, 2]``) with ``K = k(Z, Z)`` and
``W = [[w^s; 0], [0; w^t]]`` (``[N, 2]``), computed either densely or by row tiles
(``tile_size``), where each ``[tile, N]`` block of ``K`` is rebuilt in the backward pass
(``jax.checkpoint`` inside ``lax.map``), so value AND gradient need O(N * tile) memory
instead of O(N^2). With Gaussian kernels only (MK-MMD, JMMD), ``Q`` has its own derivative
rule whose backward is one ``[N, N] x [N, d]`` product per layer, or per row block
(``_gaussian_form``); kernel lists with a linear layer go through ``R = K W``.

Estimators (``estimator=``; Gretton et al., "A Kernel Two-Sample Test", JMLR 2012):

* ``"biased"`` (V-statistic): ``V_ss + V_tt - 2 V_st`` (>= 0 for a p.d. kernel).
* ``"unbiased"`` (U-statistic): the within-domain sums drop the diagonal,
  ``(V_ss - sum_i (w^s_i)^2 k(s_i, s_i)) / (1 - sum_i (w^s_i)^2) + (same for T)
  - 2 V_st``; uniform weights give ``1 / (n (n - 1)) sum_{i != j}``. It is unbiased for
  MMD^2 and therefore CAN BE NEGATIVE (its mean is 0 when the distributions agree).
* ``"linear"``: the linear-time estimator (Gretton et al. 2012, Lemma 14) on disjoint
  pairs, ``n_s = n_t = n``, ``m = n // 2``:
  ``1/m sum_i h(i)``, ``h(i) = k(s_{2i}, s_{2i+1}) + k(t_{2i}, t_{2i+1})
  - k(s_{2i}, t_{2i+1}) - k(s_{2i+1}, t_{2i})``. Unbiased, can be negative.
* ``"tllib"``: TLlib / ``dalib==0.2`` (``MultipleKernelMaximumMeanDiscrepancy`` with
  ``linear=False``): the uniform U-statistic plus the constant ``2 / (n - 1)``
  (:data:`TLLIB_CONSTANT` documents it), ``n_s = n_t = n``.
* ``"tllib_linear"``: TLlib's ``linear=True``: overlapping cyclic pairs
  ``(i, i + 1 mod n)``, ``1/n sum_i [k(s_i, s_{i+1}) + k(t_i, t_{i+1}) - k(s_i, t_{i+1})
  - k(s_{i+1}, t_i)] + 2 / (n - 1)`` (for ``n = 2`` TLlib's index matrix counts each
  cross pair once; reproduced). The TLlib modes reproduce ``dalib==0.2`` exactly (the
  float64 tests compare values and gradients).

Mapping to the papers: DDC (Tzeng et al. 2014) is :func:`mmd` with one kernel; DAN
(Long et al., ICML 2015) is :func:`mk_mmd`; JAN (Long et al., ICML 2017) is
:func:`jmmd`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dtl_jax import _validation as V
from dtl_jax.losses import kernels as _k
from dtl_jax.losses.kernels import GaussianKernel, LinearKernel

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

ESTIMATORS = ("biased", "unbiased", "linear", "tllib", "tllib_linear")

#: DAN's bandwidth multipliers: ``sigma_u^2 = beta_u * mean squared distance``.
DAN_MULTIPLIERS = (0.125, 0.25, 0.5, 1.0, 2.0)

#: JAN's default kernels for ``(features, softmax outputs)``: five mean-heuristic
#: Gaussians on the features and one Gaussian with fixed ``sigma = 0.92``.
JAN_KERNELS = (GaussianKernel(multipliers=DAN_MULTIPLIERS), GaussianKernel(sigma2=0.92 * 0.92))


def TLLIB_CONSTANT(n: int) -> float:
  """The constant ``2 / (n - 1)`` that TLlib adds to its MMD estimates.

  TLlib's comment says it "makes up for the value on the diagonal", but the index
  matrix already drops the diagonal, so the TLlib value is the U-statistic shifted by
  ``2 / (n - 1)``; it is positive on average but not an MMD^2 estimate. The constant has
  no gradient.
  """
  return 2.0 / float(n - 1)


def mmd(
  source: ArrayLike,
  target: ArrayLike,
  *,
  kernel: GaussianKernel | LinearKernel | str = GaussianKernel(),
  estimator: str = "biased",
  source_weights: ArrayLike | None = None,
  target_weights: ArrayLike | None = None,
  tile_size: int | None = None,
) -> Array:
  """Squared maximum mean discrepancy between two samples.

  ``MMD^2(P, Q) = E k(s, s') + E k(t, t') - 2 E k(s, t)`` estimated as described in the
  module docstring (Gretton et al., JMLR 2012). With one Gaussian kernel this is DDC
  (Tzeng et al., "Deep Domain Confusion", 2014); with ``kernel="linear"`` and the
  biased estimator it equals ``||mean_w(S) - mean_w(T)||^2``.

  Args:
    source: ``[n_s, d]`` source features.
    target: ``[n_t, d]`` target features (``n_t != n_s`` allowed for ``"biased"`` and
      ``"unbiased"``).
    kernel: a :class:`GaussianKernel` / :class:`LinearKernel`, or ``"gaussian"``
      (one mean-heuristic Gaussian) / ``"linear"``. Mean / median heuristic
      bandwidths are computed on the joint batch ``[S; T]`` under ``stop_gradient``.
    estimator: ``"biased"``, ``"unbiased"``, ``"linear"``, ``"tllib"`` or
      ``"tllib_linear"``. The unbiased, linear and TLlib estimates can be negative.
    source_weights: optional ``[n_s]`` non-negative weights (normalised to sum 1);
      only for ``"biased"`` / ``"unbiased"``. Bandwidth rules ignore weights.
    target_weights: optional ``[n_t]`` non-negative weights.
    tile_size: evaluate the kernel matrix by ``[tile_size, N]`` row blocks (O(N *
      tile_size) memory for value and gradient). None: dense ``[N, N]``.

  Returns:
    Scalar with the dtype of the inputs.
  """
  return _joint_mmd(
    [source],
    [target],
    [kernel],
    estimator=estimator,
    source_weights=source_weights,
    target_weights=target_weights,
    tile_size=tile_size,
    source_name="source",
    target_name="target",
  )


def mk_mmd(
  source: ArrayLike,
  target: ArrayLike,
  *,
  multipliers: Sequence[float] = DAN_MULTIPLIERS,
  estimator: str = "biased",
  source_weights: ArrayLike | None = None,
  target_weights: ArrayLike | None = None,
  tile_size: int | None = None,
) -> Array:
  """Multi-kernel MMD^2 of DAN (Long et al., ICML 2015).

  ``k = sum_u exp(-||x - y||^2 / (2 beta_u sigma^2))`` with ``sigma^2`` the mean
  squared distance over the joint batch (``stop_gradient``) and ``beta_u`` the
  ``multipliers`` (DAN: ``1/8 .. 2``). The kernels share one distance matrix and, for
  power-of-two multipliers, one ``exp`` (see :func:`kernels.gaussian_kernel_sum`).
  ``estimator="tllib"`` / ``"tllib_linear"`` reproduce ``dalib==0.2``'s
  ``MultipleKernelMaximumMeanDiscrepancy(linear=False / True)`` exactly. The
  unbiased / linear / TLlib estimates can be negative.

  Args:
    source: ``[n_s, d]``.
    target: ``[n_t, d]``.
    multipliers: static positive floats ``beta_u``.
    estimator: see :func:`mmd`.
    source_weights: optional ``[n_s]``.
    target_weights: optional ``[n_t]``.
    tile_size: see :func:`mmd`.

  Returns:
    Scalar.
  """
  return mmd(
    source,
    target,
    kernel=GaussianKernel(multipliers=tuple(multipliers)),
    estimator=estimator,
    source_weights=source_weights,
    target_weights=target_weights,
    tile_size=tile_size,
  )


def jmmd(
  source_layers: Sequence[ArrayLike],
  target_layers: Sequence[ArrayLike],
  *,
  kernels: Sequence[GaussianKernel | LinearKernel | str] | None = None,
  estimator: str = "biased",
  source_weights: ArrayLike | None = None,
  target_weights: ArrayLike | None = None,
  tile_size: int | None = None,
) -> Array:
  """Joint MMD^2 of JAN (Long et al., "Deep Transfer Learning with Joint Adaptation
  Networks", ICML 2017).

  The joint kernel is the product over layers of each layer's kernel (sum):
  ``k(z, z') = prod_l k^l(z^l, z'^l)``, then any estimator of :func:`mmd`.
  ``estimator="tllib_linear"`` / ``"tllib"`` reproduce ``dalib==0.2``'s
  ``JointMultipleKernelMaximumMeanDiscrepancy(linear=True / False)`` (TLlib's JAN
  default is ``linear=True``). The unbiased / linear / TLlib estimates can be negative.

  Args:
    source_layers: ``L`` arrays ``[n_s, d_l]`` (e.g. ``(features, softmax)``).
    target_layers: ``L`` arrays ``[n_t, d_l]``.
    kernels: ``L`` kernel specs (one per layer, see :func:`mmd`'s ``kernel``). None with
      two layers: JAN's defaults :data:`JAN_KERNELS` (five mean-heuristic Gaussians
      ``1/8 .. 2`` on layer 1, one Gaussian with ``sigma = 0.92`` on layer 2).
    estimator: see :func:`mmd`.
    source_weights: optional ``[n_s]``.
    target_weights: optional ``[n_t]``.
    tile_size: see :func:`mmd`.

  Returns:
    Scalar.
  """
  if isinstance(source_layers, (jax.Array, np.ndarray)) or isinstance(
    target_layers, (jax.Array, np.ndarray)
  ):
    raise ValueError(
      "source_layers and target_layers must be sequences of [n, d_l] arrays "
      "(one per layer), not a single array."
    )
  source_layers, target_layers = list(source_layers), list(target_layers)
  if not source_layers or len(source_layers) != len(target_layers):
    raise ValueError(
      "source_layers and target_layers must be non-empty and of equal length, "
      f"got {len(source_layers)} and {len(target_layers)} layers."
    )
  if kernels is None:
    if len(source_layers) != 2:
      raise ValueError(
        "kernels=None selects JAN's defaults, which need exactly 2 layers "
        f"(features, softmax); got {len(source_layers)} layers. Pass kernels."
      )
    kernels = JAN_KERNELS
  kernels = list(kernels)
  if len(kernels) != len(source_layers):
    raise ValueError(
      f"kernels must have one entry per layer ({len(source_layers)}), got {len(kernels)}."
    )
  return _joint_mmd(
    source_layers,
    target_layers,
    kernels,
    estimator=estimator,
    source_weights=source_weights,
    target_weights=target_weights,
    tile_size=tile_size,
    source_name="source_layers[{}]",
    target_name="target_layers[{}]",
  )


# ------------------------------------------------------------------------------------
# Implementation.


def _layer_name(template: str, l: int) -> str:
  return template.format(l) if "{}" in template else template


def _joint_mmd(
  source_layers,
  target_layers,
  kernels,
  *,
  estimator,
  source_weights,
  target_weights,
  tile_size,
  source_name,
  target_name,
):
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
  source_layers = [jnp.asarray(x) for x in source_layers]
  target_layers = [jnp.asarray(x) for x in target_layers]
  kernels = [_k.as_kernel(k) for k in kernels]
  for l, (s, t) in enumerate(zip(source_layers, target_layers, strict=True)):
    sn, tn = _layer_name(source_name, l), _layer_name(target_name, l)
    V.check_matrix(s, sn, shape_doc="[n_s, d]")
    V.check_matrix(t, tn, shape_doc="[n_t, d]")
    V.check_same_dim(s, sn, t, tn)
    if s.shape[0] != source_layers[0].shape[0] or t.shape[0] != target_layers[0].shape[0]:
      raise ValueError(
        "all layers must have the same number of rows: got source shapes "
        f"{[tuple(x.shape) for x in source_layers]} and target shapes "
        f"{[tuple(x.shape) for x in target_layers]}."
      )
  n_s, n_t = source_layers[0].shape[0], target_layers[0].shape[0]
  if estimator != "biased":
    if estimator != "unbiased" and n_s != n_t:
      raise ValueError(f"estimator={estimator!r} needs n_s == n_t, got n_s={n_s}, n_t={n_t}.")
    if min(n_s, n_t) < 2:
      raise ValueError(
        f"estimator={estimator!r} needs at least 2 rows per domain, got n_s={n_s}, n_t={n_t}."
      )
    if estimator != "unbiased" and (source_weights is not None or target_weights is not None):
      raise ValueError(
        f"source_weights / target_weights are only supported by the 'biased' "
        f"and 'unbiased' estimators, not estimator={estimator!r}."
      )
  if tile_size is not None and (not isinstance(tile_size, (int, np.integer)) or tile_size < 1):
    raise ValueError(f"tile_size must be a positive int or None, got {tile_size!r}.")

  dtype = jnp.result_type(*source_layers, *target_layers)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.result_type(float)
  source_layers = [x.astype(dtype) for x in source_layers]
  target_layers = [x.astype(dtype) for x in target_layers]
  ws = V.check_weights(source_weights, "source_weights", n_s, dtype, normalize=True)
  wt = V.check_weights(target_weights, "target_weights", n_t, dtype, normalize=True)

  joints = [
    jnp.concatenate([s, t], axis=0) for s, t in zip(source_layers, target_layers, strict=True)
  ]
  sigma2s = []
  for kern, z in zip(kernels, joints, strict=True):
    if isinstance(kern, GaussianKernel):
      if tile_size is not None and kern.sigma2 is None and kern.rule == "median":
        raise ValueError(
          "the median bandwidth rule needs the full [N, N] distance matrix and "
          "is not available with tile_size; use rule='mean' or a fixed sigma2."
        )
      sigma2s.append(kern.base_sigma2(z))
    else:
      sigma2s.append(None)

  if estimator in ("linear", "tllib_linear"):
    return _pairwise_estimate(source_layers, target_layers, kernels, sigma2s, estimator)

  if ws is None:
    ws = jnp.full((n_s,), 1.0 / n_s, dtype)
  if wt is None:
    wt = jnp.full((n_t,), 1.0 / n_t, dtype)
  w_s = jnp.concatenate([ws, jnp.zeros((n_t,), dtype)])
  w_t = jnp.concatenate([jnp.zeros((n_s,), dtype), wt])
  weights = jnp.stack([w_s, w_t], axis=1)  # [N, 2]

  dense = tile_size is None or tile_size >= _num_rows(joints)
  if all(isinstance(k, GaussianKernel) for k in kernels):
    q = _gaussian_form(
      tuple(joints),
      tuple(sigma2s),
      # The barrier keeps XLA from constant-folding the backward's [N, N] outer product
      # of the (constant, by default) weights: seconds of compile and an N^2 constant.
      jax.lax.optimization_barrier(weights),
      tuple(k.multipliers for k in kernels),
      None if dense else int(tile_size),
    )
  else:
    if len(kernels) == 1 and isinstance(kernels[0], LinearKernel):
      z = joints[0]  # K = Z Z^T, so K W = Z (Z^T W): O(N d).
      r = jnp.matmul(z, jnp.matmul(z.T, weights, precision=_HI), precision=_HI)
    elif dense:
      r = _kernel_times_weights_dense(joints, kernels, sigma2s, weights)
    else:
      r = _kernel_times_weights_tiled(joints, kernels, sigma2s, weights, tile_size)
    q = jnp.matmul(weights.T, r, precision=_HI)
  v_ss, v_tt, v_st = q[0, 0], q[1, 1], q[0, 1]
  if estimator == "biased":
    return v_ss + v_tt - 2.0 * v_st
  diag = _kernel_diagonal(joints, kernels)
  d_s = jnp.sum(w_s * w_s * diag)
  d_t = jnp.sum(w_t * w_t * diag)
  within_s = (v_ss - d_s) / (1.0 - jnp.sum(ws * ws))
  within_t = (v_tt - d_t) / (1.0 - jnp.sum(wt * wt))
  value = within_s + within_t - 2.0 * v_st
  if estimator == "tllib":
    value = value + TLLIB_CONSTANT(n_s)
  return value


_HI = jax.lax.Precision.HIGHEST


def _num_rows(joints) -> int:
  return joints[0].shape[0]


def _kernel_block(rows, rows_sq, cols, cols_sq, kernels, sigma2s):
  """``prod_l k^l(rows^l, cols^l)``: ``[r, c]`` from per-layer ``[r, d_l]``, ``[c, d_l]``."""
  out = None
  for x, x_sq, y, y_sq, kern, s2 in zip(
    rows, rows_sq, cols, cols_sq, kernels, sigma2s, strict=True
  ):
    if isinstance(kern, LinearKernel):
      block = jnp.matmul(x, y.T, precision=_HI)
    else:
      block = kern.from_sq_dists(_k._sq_dists(x, y, x_sq, y_sq), s2)
    out = block if out is None else out * block
  return out


def _sq_norms(joints):
  return [jnp.sum(z * z, axis=1) for z in joints]


def _kernel_times_weights_dense(joints, kernels, sigma2s, weights):
  norms = _sq_norms(joints)
  kmat = _kernel_block(joints, norms, joints, norms, kernels, sigma2s)
  return jnp.matmul(kmat, weights, precision=_HI)


def _gaussian_form_value(joints, sigma2s, weights, multipliers, tile):
  """``Q = Wᵀ K W`` (``[2, 2]``) for a product of Gaussian kernel sums ``K = prod_l k_l``.

  The path of every all-Gaussian MMD (MK-MMD, JMMD), dense (``tile=None``) or by
  ``[tile, N]`` row blocks. Its derivative rule (:func:`_gaussian_form_jvp`) writes the
  tangent as ``M + Mᵀ`` with ``M = Wᵀ (P ∘ X) W``, ``X = da 1ᵀ - 2 dZ Zᵀ`` (half of
  ``dD``, ``a = ||z||^2``) and ``P = dK/dD`` (symmetric): the transpose then sends the
  ``[N, N]`` cotangent ``C = P ∘ (W (S + Sᵀ) Wᵀ)`` to ``dZ = 2 rowsum(C) Z - 2 C Z``, ONE
  ``[N, N] x [N, d]`` product (plus ``C 1``) and no transpose of an ``[N, N]`` matrix (the
  symmetry is used on the ``[2, 2]`` cotangent ``S`` instead); differentiating ``D`` and
  ``K W`` one after the other needs ``(C + Cᵀ) Z``, an out-of-cache transposed pass over
  ``C`` (value + gradient of MK-MMD / JMMD at ``N = 4096``, ``d = 256``: 1.5-1.7x faster
  this way, ``benchmarks/kernels_ab.py``). By row blocks, ``dZ`` of a block's rows needs
  only that block (``C_R Z``), so the backward recomputes each block once and spends one
  product on it, where autodiff of the blocks spends two (rows and columns). Tangents of
  the bandwidths and of the weights are supported (fixed bandwidths may be traced;
  importance weights may be differentiated); a custom JVP, so forward mode and higher
  derivatives work too.
  """
  if tile is None:
    return _form_block(joints, joints, weights, weights, sigma2s, multipliers)[0]
  tiles, (cols, w_cols) = _row_tiles(joints, weights, tile)

  @jax.checkpoint
  def one_tile(args):
    rows, w_rows = args
    return _form_block(rows, cols, w_rows, w_cols, sigma2s, multipliers)[0]

  return jnp.sum(jax.lax.map(one_tile, tiles), axis=0)


_gaussian_form = jax.custom_jvp(_gaussian_form_value, nondiff_argnums=(3, 4))


def _row_tiles(joints, weights, tile, d_joints=None, d_weights=None):
  """``[n_tiles, tile, ...]`` row blocks of the (zero-padded) inputs, and the padded
  joints and weights as columns. Padded rows are zeros with zero weight: they add
  nothing as columns (``K W``) nor as rows (``Wᵀ``)."""
  n = joints[0].shape[0]
  n_tiles = -(-n // tile)
  pad = n_tiles * tile - n

  def padded(x):
    return None if x is None else jnp.pad(x, ((0, pad), (0, 0)))

  def tiled(x):
    return None if x is None else x.reshape(n_tiles, tile, x.shape[1])

  joints_p = [padded(z) for z in joints]
  weights_p = padded(weights)
  tiles = ([tiled(z) for z in joints_p], tiled(weights_p))
  if d_joints is not None:
    tiles += ([tiled(padded(dz)) for dz in d_joints], tiled(padded(d_weights)))
  return tiles, (joints_p, weights_p)


def _form_block(
  rows, cols, w_rows, w_cols, sigma2s, multipliers, d_rows=None, d_sigma2s=None, dw_rows=None
):
  """A block's share of ``Q`` and of its tangent: ``(q, m_half, m_sym, m_w)``.

  ``rows`` / ``cols`` are per-layer ``[r, d_l]`` / ``[N, d_l]`` (``rows is cols`` for the
  dense form); the tangent inputs are per-layer arrays or None (zero). With
  ``K_R = K[rows, :]``: ``q = W_Rᵀ K_R W``; ``m_half = W_Rᵀ (sum_l P_l ∘ X_l) W`` with
  ``X_l = da_R 1ᵀ - 2 dZ_R Z_lᵀ``; ``m_sym = W_Rᵀ (sum_l P_l ∘ D_l (-dsigma2_l / sigma2_l))
  W``; ``m_w = (K_R W)ᵀ dW_R``. Summed over blocks, ``dQ = M_half + M_halfᵀ + M_sym + M_w +
  M_wᵀ``.
  """
  dists, kls, slopes = [], [], []
  slope = d_rows is not None
  for r, c, s2, mult in zip(rows, cols, sigma2s, multipliers, strict=True):
    d = _k._sq_dists(r, c, jnp.sum(r * r, axis=1), jnp.sum(c * c, axis=1))
    if slope:
      kl, sl = _k._kernel_sum_and_slope(d, s2, mult, slope=True)
    else:
      kl, sl = _k._kernel_sum(d, s2, mult), None
    dists.append(d)
    kls.append(kl)
    slopes.append(sl)
  k = functools.reduce(jnp.multiply, kls)
  kw = jnp.matmul(k, w_cols, precision=_HI)
  q = jnp.matmul(w_rows.T, kw, precision=_HI)
  if not slope:
    return q, None, None, None
  assert d_sigma2s is not None
  half = None  # sum_l P_l ∘ X_l, the half of dK whose transpose gives dK
  sym = None  # symmetric parts of dK (bandwidth tangents)
  for l, (r, c, d, sl) in enumerate(zip(rows, cols, dists, slopes, strict=True)):
    dz, ds2 = d_rows[l], d_sigma2s[l]
    if dz is None and ds2 is None:
      continue
    p = sl
    for m, km in enumerate(kls):
      if m != l:
        p = p * km
    if dz is not None:
      da = 2.0 * jnp.sum(r * dz, axis=1, keepdims=True)
      # da 1ᵀ as an outer product: its transpose is the matrix-vector product C 1, one
      # plain pass over C. Written as a broadcast, its transpose is a row reduction that
      # XLA:CPU's YNNPACK reduce fusion merges with C's producers, materialising every
      # power of the squaring chain: about twice as slow at N = 4096, d = 256 (measured,
      # one thread, jaxlib 0.10.2).
      ones = jnp.ones((c.shape[0], 1), c.dtype)
      x = jnp.matmul(da, ones.T, precision=_HI) - 2.0 * jnp.matmul(dz, c.T, precision=_HI)
      half = p * x if half is None else half + p * x
    if ds2 is not None:  # dk/dsigma2 = -(D / sigma2) dk/dD
      term = p * (d * (-ds2 / sigma2s[l]))
      sym = term if sym is None else sym + term

  def form(a):
    if a is None:
      return None
    return jnp.matmul(w_rows.T, jnp.matmul(a, w_cols, precision=_HI), precision=_HI)

  m_w = None if dw_rows is None else jnp.matmul(kw.T, dw_rows, precision=_HI)
  return q, form(half), form(sym), m_w


def _is_zero(t) -> bool:
  return type(t) is jax.custom_derivatives.SymbolicZero


def _nonzero(t):
  return None if _is_zero(t) else t


@functools.partial(_gaussian_form.defjvp, symbolic_zeros=True)
def _gaussian_form_jvp(multipliers, tile, primals, tangents):
  joints, sigma2s, weights = primals
  d_joints = [_nonzero(t) for t in tangents[0]]
  d_sigma2s = [_nonzero(t) for t in tangents[1]]
  d_weights = _nonzero(tangents[2])
  if tile is None:
    q, m_half, m_sym, m_w = _form_block(
      joints, joints, weights, weights, sigma2s, multipliers, d_joints, d_sigma2s, d_weights
    )
  else:
    tiles, (cols, w_cols) = _row_tiles(joints, weights, tile, d_joints, d_weights)

    @jax.checkpoint  # each block is rebuilt in the backward pass: O(N * tile) memory
    def one_tile(args):
      rows, w_rows, d_rows, dw_rows = args
      return _form_block(
        rows, cols, w_rows, w_cols, sigma2s, multipliers, d_rows, d_sigma2s, dw_rows
      )

    parts = jax.lax.map(one_tile, tiles)
    q, m_half, m_sym, m_w = (None if a is None else jnp.sum(a, axis=0) for a in parts)
  dq = jnp.zeros_like(q)
  if m_half is not None:
    dq = dq + m_half + m_half.T
  if m_sym is not None:
    dq = dq + m_sym
  if m_w is not None:
    dq = dq + m_w + m_w.T
  return q, dq


def _kernel_times_weights_tiled(joints, kernels, sigma2s, weights, tile):
  """``K W`` by ``[tile, N]`` row blocks; each block is recomputed in the backward pass.

  For kernel lists with a linear layer (the all-Gaussian ones take :func:`_gaussian_form`).
  Bandwidths were computed before padding; the padded rows of ``K W`` are dropped.
  """
  n = joints[0].shape[0]
  (row_tiles, _), (joints_p, weights_p) = _row_tiles(joints, weights, tile)
  norms_p = _sq_norms(joints_p)

  @jax.checkpoint
  def one_tile(rows):
    block = _kernel_block(rows, _sq_norms(rows), joints_p, norms_p, kernels, sigma2s)
    return jnp.matmul(block, weights_p, precision=_HI)

  r = jax.lax.map(one_tile, row_tiles)  # [n_tiles, tile, 2]
  return r.reshape(-1, 2)[:n]


def _kernel_diagonal(joints, kernels):
  """``k(z_i, z_i)`` for every row of the joint batch: ``[N]``."""
  out = None
  for z, kern in zip(joints, kernels, strict=True):
    if isinstance(kern, LinearKernel):
      diag = jnp.sum(z * z, axis=1)
    else:
      diag = jnp.full((z.shape[0],), float(len(kern.multipliers)), z.dtype)
    out = diag if out is None else out * diag
  return out


def _pair_kernel(a_layers, b_layers, kernels, sigma2s):
  """``prod_l k^l(a_i^l, b_i^l)`` for matched rows: ``[m]``."""
  out = None
  for a, b, kern, s2 in zip(a_layers, b_layers, kernels, sigma2s, strict=True):
    if isinstance(kern, LinearKernel):
      val = jnp.sum(a * b, axis=1)
    else:
      diff = a - b
      val = kern.from_sq_dists(jnp.sum(diff * diff, axis=1), s2)
    out = val if out is None else out * val
  return out


def _pairwise_estimate(source_layers, target_layers, kernels, sigma2s, estimator):
  n = source_layers[0].shape[0]
  if estimator == "linear":
    m = n // 2
    s1 = [x[0 : 2 * m : 2] for x in source_layers]
    s2 = [x[1 : 2 * m : 2] for x in source_layers]
    t1 = [x[0 : 2 * m : 2] for x in target_layers]
    t2 = [x[1 : 2 * m : 2] for x in target_layers]
    h = (
      _pair_kernel(s1, s2, kernels, sigma2s)
      + _pair_kernel(t1, t2, kernels, sigma2s)
      - _pair_kernel(s1, t2, kernels, sigma2s)
      - _pair_kernel(s2, t1, kernels, sigma2s)
    )
    return jnp.mean(h)
  # TLlib's cyclic pairs (i, i + 1 mod n).
  s_next = [jnp.roll(x, -1, axis=0) for x in source_layers]
  t_next = [jnp.roll(x, -1, axis=0) for x in target_layers]
  within = _pair_kernel(source_layers, s_next, kernels, sigma2s) + _pair_kernel(
    target_layers, t_next, kernels, sigma2s
  )
  cross = _pair_kernel(source_layers, t_next, kernels, sigma2s) + _pair_kernel(
    s_next, target_layers, kernels, sigma2s
  )
  if n == 2:  # TLlib assigns (not adds) index-matrix entries: each cross pair counts once.
    cross = 0.5 * cross
  return jnp.sum(within - cross) / n + TLLIB_CONSTANT(n)
