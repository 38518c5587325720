"""Tests for dtl_jax.losses.mmd against float64 NumPy references written here."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dtl_jax.losses import GaussianKernel, LinearKernel, jmmd, mk_mmd, mmd
from dtl_jax.losses.mmd import DAN_MULTIPLIERS

pytestmark = pytest.mark.usefixtures("fast_compile")

# ---------------------------------------------------------------------------------
# Independent float64 NumPy reference (direct differences, explicit index sums).


def np_gauss(x, y, sigma2, multipliers):
  d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
  return sum(np.exp(-d2 / (2.0 * m * sigma2)) for m in multipliers)


def np_layer_kernel(spec, x, y, joint):
  if spec == "linear":
    return x @ y.T
  kind, value, multipliers = spec
  if kind == "fixed":
    sigma2 = value
  else:  # "mean": mean squared distance over the joint batch, diagonal included
    sigma2 = ((joint[:, None, :] - joint[None, :, :]) ** 2).sum(-1).mean()
  return np_gauss(x, y, sigma2, multipliers)


def np_mmd(s_layers, t_layers, specs, estimator, ws=None, wt=None):
  s_layers = [np.asarray(x, np.float64) for x in s_layers]
  t_layers = [np.asarray(x, np.float64) for x in t_layers]
  joints = [np.concatenate([s, t]) for s, t in zip(s_layers, t_layers, strict=True)]

  def k(a, b):  # a, b: "s" or "t" -> full kernel block
    out = 1.0
    for spec, s, t, j in zip(specs, s_layers, t_layers, joints, strict=True):
      out = out * np_layer_kernel(spec, s if a == "s" else t, s if b == "s" else t, j)
    return out

  kss, ktt, kst = k("s", "s"), k("t", "t"), k("s", "t")
  n_s, n_t = kss.shape[0], ktt.shape[0]
  ws = np.ones(n_s) if ws is None else np.asarray(ws, np.float64)
  wt = np.ones(n_t) if wt is None else np.asarray(wt, np.float64)
  if estimator == "biased":
    return (
      ws @ kss @ ws / ws.sum() ** 2
      + wt @ ktt @ wt / wt.sum() ** 2
      - 2 * ws @ kst @ wt / (ws.sum() * wt.sum())
    )
  if estimator in ("unbiased", "tllib"):

    def within(kk, w):
      num = den = 0.0
      for i in range(len(w)):
        for j in range(len(w)):
          if i != j:
            num += w[i] * w[j] * kk[i, j]
            den += w[i] * w[j]
      return num / den

    val = within(kss, ws) + within(ktt, wt) - 2 * ws @ kst @ wt / (ws.sum() * wt.sum())
    return val + (2.0 / (n_s - 1) if estimator == "tllib" else 0.0)
  n = n_s
  if estimator == "linear":
    m = n // 2
    h = [
      kss[2 * i, 2 * i + 1] + ktt[2 * i, 2 * i + 1] - kst[2 * i, 2 * i + 1] - kst[2 * i + 1, 2 * i]
      for i in range(m)
    ]
    return np.mean(h)
  if estimator == "tllib_linear":  # TLlib's index matrix, built entry by entry
    idx = np.zeros((2 * n, 2 * n))
    for i in range(n):
      s1, s2 = i, (i + 1) % n
      idx[s1, s2] = idx[s1 + n, s2 + n] = 1.0 / n
      idx[s1, s2 + n] = idx[s2, s1 + n] = -1.0 / n
    kmat = np.block([[kss, kst], [kst.T, ktt]])
    return (kmat * idx).sum() + 2.0 / (n - 1)
  raise AssertionError(estimator)


DAN_SPEC = ("mean", None, DAN_MULTIPLIERS)


def _data(rng, n_s, n_t, d, dtype=np.float64, shift=0.7):
  s = rng.normal(size=(n_s, d))
  t = rng.normal(size=(n_t, d)) * 1.3 + shift
  return s.astype(dtype), t.astype(dtype)


# ---------------------------------------------------------------------------------
# Values.

CASES = [  # (jax kernel, numpy spec)
  (GaussianKernel(), ("mean", None, (1.0,))),
  (GaussianKernel(multipliers=DAN_MULTIPLIERS), DAN_SPEC),
  (GaussianKernel(multipliers=(0.3, 1.0, 2.5)), ("mean", None, (0.3, 1.0, 2.5))),
  (GaussianKernel(sigma2=2.0, multipliers=(1.0, 4.0)), ("fixed", 2.0, (1.0, 4.0))),
  (LinearKernel(), "linear"),
]


@pytest.mark.parametrize(
  "case,dtype,rtol",
  [
    *[(c, np.float64, 1e-10) for c in range(len(CASES))],
    (1, np.float32, 1e-5),
    (2, np.float32, 1e-5),
    (4, np.float32, 1e-5),
  ],
)
@pytest.mark.parametrize(
  "estimator,n_s,n_t",
  [("biased", 9, 6), ("unbiased", 9, 6), ("linear", 9, 9), ("tllib", 9, 9), ("tllib_linear", 9, 9)],
)
def test_mmd_matches_numpy(rng, case, estimator, n_s, n_t, dtype, rtol):
  kernel, spec = CASES[case]
  s, t = _data(rng, n_s, n_t, 5, dtype)
  got = mmd(s, t, kernel=kernel, estimator=estimator)
  assert got.dtype == dtype and got.shape == ()
  ref = np_mmd([s], [t], [spec], estimator)
  np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_weighted_matches_numpy(rng, estimator):
  s, t = _data(rng, 7, 5, 4)
  ws, wt = rng.uniform(0.1, 2.0, 7), rng.uniform(0.1, 2.0, 5)
  ws[2] = 0.0
  for kernel, spec in CASES:
    got = mmd(s, t, kernel=kernel, estimator=estimator, source_weights=ws, target_weights=wt)
    np.testing.assert_allclose(got, np_mmd([s], [t], [spec], estimator, ws, wt), rtol=1e-10)
  # Integer weights behave like repeated rows (biased estimator).
  counts = np.array([1, 2, 1, 3, 1, 1, 2])
  got = mmd(s, t, kernel=LinearKernel(), source_weights=counts)
  rep = np.repeat(s, counts, axis=0)
  np.testing.assert_allclose(got, np_mmd([rep], [t], ["linear"], "biased"), rtol=1e-10)


def test_linear_kernel_is_squared_mean_difference(rng):
  s, t = _data(rng, 13, 7, 6)
  expected = np.sum((s.mean(0) - t.mean(0)) ** 2)
  np.testing.assert_allclose(mmd(s, t, kernel="linear"), expected, rtol=1e-10)
  np.testing.assert_allclose(mmd(s, t, kernel=LinearKernel(), tile_size=4), expected, rtol=1e-10)


def test_mk_mmd_is_mmd_with_dan_kernel(rng):
  s, t = _data(rng, 10, 10, 3)
  for est in ("biased", "unbiased", "linear", "tllib", "tllib_linear"):
    np.testing.assert_allclose(
      mk_mmd(s, t, estimator=est), np_mmd([s], [t], [DAN_SPEC], est), rtol=1e-10
    )


@pytest.mark.parametrize(
  "estimator,n_s,n_t",
  [
    ("biased", 8, 5),
    ("unbiased", 8, 5),
    ("linear", 7, 7),
    ("tllib", 6, 6),
    ("tllib_linear", 6, 6),
    ("tllib_linear", 2, 2),
  ],
)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_jmmd_matches_numpy(rng, estimator, n_s, n_t, dtype, rtol):
  s1, t1 = _data(rng, n_s, n_t, 4, dtype)
  s2 = jax.nn.softmax(rng.normal(size=(n_s, 3)) * 2).astype(dtype)
  t2 = jax.nn.softmax(rng.normal(size=(n_t, 3)) * 2).astype(dtype)
  got = jmmd([s1, s2], [t1, t2], estimator=estimator)  # JAN defaults
  ref = np_mmd([s1, s2], [t1, t2], [DAN_SPEC, ("fixed", 0.92 * 0.92, (1.0,))], estimator)
  assert got.dtype == dtype
  np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 1e-2)
  # Custom per-layer kernels, three layers, one of them linear.
  s3, t3 = _data(rng, n_s, n_t, 2, dtype)
  kernels = (GaussianKernel(multipliers=(0.5, 1.0)), "linear", GaussianKernel(sigma2=1.5))
  specs = [("mean", None, (0.5, 1.0)), "linear", ("fixed", 1.5, (1.0,))]
  got = jmmd([s1, s2, s3], [t1, t2, t3], kernels=kernels, estimator=estimator)
  ref = np_mmd([s1, s2, s3], [t1, t2, t3], specs, estimator)
  np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 1e-2)


def test_jmmd_single_layer_equals_mmd(rng):
  s, t = _data(rng, 6, 9, 3)
  k = GaussianKernel(multipliers=(1.0, 2.0))
  np.testing.assert_allclose(jmmd([s], [t], kernels=[k]), mmd(s, t, kernel=k), rtol=1e-12)


# ---------------------------------------------------------------------------------
# Statistics.


def test_unbiased_mmd_of_one_distribution_averages_to_zero():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(400, 12, 3)), rng.normal(size=(400, 10, 3))  # 400 seeds
  vals = np.asarray(jax.vmap(lambda a, b: mk_mmd(a, b, estimator="unbiased"))(s, t))
  biased = np.asarray(jax.vmap(lambda a, b: mk_mmd(a, b, estimator="biased"))(s, t))
  # Mean within 4 standard errors of 0; individual values do go negative.
  assert abs(vals.mean()) < 4 * vals.std() / np.sqrt(len(vals))
  assert (vals < 0).any()
  # The V-statistic is biased upwards (always >= 0).
  assert biased.min() >= 0 and biased.mean() > 10 * vals.std() / np.sqrt(len(vals))
  # With a real shift the unbiased estimate is clearly positive.
  shifted = np.asarray(jax.vmap(lambda a, b: mk_mmd(a, b, estimator="unbiased"))(s, t + 1.0))
  assert shifted.mean() > 10 * shifted.std() / np.sqrt(len(shifted))


# ---------------------------------------------------------------------------------
# Transformations: grad, vmap, jit.


# check_grads compares with finite differences of the whole function, so it uses fixed
# bandwidths: the mean heuristic is under stop_gradient by design (as TLlib's `.detach()`),
# which the next test checks separately.
DAN_FIXED = GaussianKernel(multipliers=DAN_MULTIPLIERS, sigma2=3.0)


@pytest.mark.parametrize(
  "fn",
  [
    functools.partial(mmd, kernel=DAN_FIXED, estimator="biased"),
    functools.partial(mmd, kernel=DAN_FIXED, estimator="unbiased", tile_size=4),
    functools.partial(mmd, kernel=DAN_FIXED, estimator="linear"),
    functools.partial(mmd, kernel=DAN_FIXED, estimator="tllib_linear"),
    functools.partial(
      mmd, kernel=GaussianKernel(sigma2=1.5, multipliers=(0.3, 1.0)), estimator="tllib"
    ),
    functools.partial(mmd, kernel="linear", estimator="unbiased"),
  ],
)
def test_check_grads_order_2(rng, fn):
  s, t = _data(rng, 6, 6, 3)
  check_grads(jax.jit(fn), (s, t), order=2, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_check_grads_jmmd_and_weights(rng):
  s1, t1 = _data(rng, 5, 4, 3)
  s2, t2 = jax.nn.softmax(rng.normal(size=(5, 2))), jax.nn.softmax(rng.normal(size=(4, 2)))
  kernels = (DAN_FIXED, GaussianKernel(sigma2=0.92 * 0.92))
  check_grads(
    jax.jit(lambda a, b, c, d: jmmd([a, b], [c, d], kernels=kernels, estimator="unbiased")),
    (s1, s2, t1, t2),
    order=2,
    modes=("rev",),
    atol=1e-5,
    rtol=1e-5,
  )
  ws, wt = rng.uniform(0.5, 1.5, 5), rng.uniform(0.5, 1.5, 4)
  check_grads(
    jax.jit(lambda a, b, u, v: mmd(a, b, kernel=DAN_FIXED, source_weights=u, target_weights=v)),
    (s1, t1, ws, wt),
    order=2,
    modes=("rev",),
    atol=1e-5,
    rtol=1e-5,
  )


@pytest.mark.parametrize("estimator", ["biased", "tllib", "tllib_linear"])
def test_mean_heuristic_bandwidth_is_a_constant_for_grad(rng, estimator):
  s, t = _data(rng, 6, 6, 3)
  joint = np.concatenate([s, t])
  sigma2 = ((joint[:, None] - joint[None]) ** 2).sum(-1).mean()
  fixed = GaussianKernel(multipliers=DAN_MULTIPLIERS, sigma2=float(sigma2))
  g = jax.grad(lambda a, b: mk_mmd(a, b, estimator=estimator), (0, 1))(s, t)
  g_fixed = jax.grad(lambda a, b: mmd(a, b, kernel=fixed, estimator=estimator), (0, 1))(s, t)
  for a, b in zip(g, g_fixed, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_vmap_equals_python_loop(rng):
  s = rng.normal(size=(4, 7, 3))
  t = rng.normal(size=(4, 5, 3)) + 0.5
  for fn in (
    functools.partial(mk_mmd, estimator="unbiased"),
    functools.partial(mk_mmd, estimator="biased", tile_size=4),
  ):
    batched = jax.vmap(fn)(s, t)
    np.testing.assert_allclose(batched, [fn(s[i], t[i]) for i in range(4)], rtol=1e-12)
  # A set of fixed bandwidths: the kernel spec is a pytree.
  sig = jnp.array([0.5, 1.0, 4.0])
  batched = jax.vmap(lambda v: mmd(s[0], t[0], kernel=GaussianKernel(sigma2=v)))(sig)
  loop = [mmd(s[0], t[0], kernel=GaussianKernel(sigma2=float(v))) for v in sig]
  np.testing.assert_allclose(batched, loop, rtol=1e-12)


def test_jit_does_not_recompile_for_same_shapes(rng):
  traces = []

  def loss(s, t):
    traces.append(1)  # Python side effect: runs once per trace
    return mk_mmd(s, t, estimator="unbiased") + jmmd([s, s], [t, t], kernels=["linear"] * 2)

  f = jax.jit(loss)
  for i in range(3):
    s, t = _data(rng, 6, 5, 3, shift=float(i))
    np.testing.assert_allclose(f(s, t), loss(s, t), rtol=1e-12)
  assert len(traces) == 1 + 3  # one jit trace + three eager reference calls
  assert f._cache_size() == 1


# ---------------------------------------------------------------------------------
# Tiled evaluation.


@pytest.mark.parametrize("estimator,tile", [("biased", 5), ("unbiased", 16), ("tllib", 1)])
def test_tiled_equals_dense(rng, estimator, tile):
  # N = 34 rows: tiles of 5 and 16 need padding, tiles of 1 are single rows.
  s, t = _data(rng, 17, 17, 4, np.float32)

  def value_and_grads(tile_size):
    return jax.jit(
      jax.value_and_grad(
        lambda a, b: mk_mmd(a, b, estimator=estimator, tile_size=tile_size), (0, 1)
      )
    )(s, t)

  dense, grads_dense = value_and_grads(None)
  tiled, grads_tiled = value_and_grads(tile)
  np.testing.assert_allclose(tiled, dense, rtol=1e-5)
  for a, b in zip(grads_tiled, grads_dense, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_tiled_jmmd_with_weights_equals_dense(rng):
  s1, t1 = _data(rng, 11, 8, 3)
  s2, t2 = _data(rng, 11, 8, 2)
  ws = rng.uniform(0.1, 1.0, 11)
  kw = dict(
    kernels=(GaussianKernel(multipliers=DAN_MULTIPLIERS), GaussianKernel(sigma2=0.8)),
    estimator="unbiased",
    source_weights=ws,
  )
  np.testing.assert_allclose(
    jmmd([s1, s2], [t1, t2], tile_size=4, **kw), jmmd([s1, s2], [t1, t2], **kw), rtol=1e-10
  )


def test_tiled_jmmd_with_a_linear_layer_equals_dense(rng):
  # A linear layer in the product kernel takes the generic row-block path (K W by blocks,
  # autodiff of the checkpointed blocks), not the Gaussian form.
  s1, t1 = _data(rng, 9, 7, 3)
  s2, t2 = _data(rng, 9, 7, 2)
  kernels = (GaussianKernel(multipliers=DAN_MULTIPLIERS), LinearKernel())

  def f(a, b, c, d, tile):
    return jmmd([a, b], [c, d], kernels=kernels, estimator="unbiased", tile_size=tile)

  args = (s1, s2, t1, t2)
  tiled = jax.value_and_grad(f, (0, 1, 2, 3))(*args, 4)
  dense = jax.value_and_grad(f, (0, 1, 2, 3))(*args, None)
  for a, b in zip(jax.tree.leaves(tiled), jax.tree.leaves(dense), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_large_n_tiled_runs_with_bounded_memory():
  # Value and gradient at N = 2 * 2048 with tiles of 256 rows: the compiled program's
  # temporary memory must stay well below one dense [N, N] float32 kernel matrix.
  n, d, tile = 2048, 16, 256
  key_s, key_t = jax.random.split(jax.random.key(0))
  s = jax.random.normal(key_s, (n, d), jnp.float32)
  t = jax.random.normal(key_t, (n, d), jnp.float32) + 0.2
  f = jax.jit(jax.value_and_grad(lambda a, b: mk_mmd(a, b, tile_size=tile), (0, 1)))
  compiled = f.lower(s, t).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  dense_kernel_bytes = (2 * n) ** 2 * 4
  assert temp < dense_kernel_bytes / 2, (temp, dense_kernel_bytes)
  value, (gs, gt) = compiled(s, t)
  dense = jax.jit(lambda a, b: mk_mmd(a, b))(s, t)
  np.testing.assert_allclose(value, dense, rtol=1e-4)
  assert np.isfinite(np.asarray(gs)).all() and np.isfinite(np.asarray(gt)).all()
  # The case, n_s = n_t = 32768, d = 256: compile only and check the planned
  # temporary memory of value + gradient (the run itself takes minutes on 2 CPU cores).
  big = jax.ShapeDtypeStruct((32768, 256), jnp.float32)
  big_temp = f.lower(big, big).compile().memory_analysis().temp_size_in_bytes
  assert big_temp < 2 * 2**30, big_temp  # a dense [65536, 65536] float32 matrix is 16 GiB


# ---------------------------------------------------------------------------------
# Errors.


def test_errors(rng):
  s, t = _data(rng, 5, 4, 3)
  with pytest.raises(ValueError, match=r"`source` must have shape \[n_s, d\]"):
    mmd(s[0], t)
  with pytest.raises(ValueError, match=r"`target` must have shape \[n_t, d\]"):
    mmd(s, t[None])
  with pytest.raises(ValueError, match="same feature dimension"):
    mmd(s, t[:, :2])
  with pytest.raises(ValueError, match="non-empty"):
    mmd(s[:0], t)
  with pytest.raises(ValueError, match="at least 2 rows"):
    mmd(s[:1], t, estimator="unbiased")
  with pytest.raises(ValueError, match="needs n_s == n_t"):
    mk_mmd(s, t, estimator="tllib")
  with pytest.raises(ValueError, match="needs n_s == n_t"):
    mk_mmd(s, t, estimator="linear")
  with pytest.raises(ValueError, match="estimator must be one of"):
    mmd(s, t, estimator="quadratic")
  with pytest.raises(ValueError, match=r"`source_weights` must have shape \[5\]"):
    mmd(s, t, source_weights=np.ones(4))
  with pytest.raises(ValueError, match="`target_weights` must be finite and non-negative"):
    mmd(s, t, target_weights=np.array([1.0, -1.0, 1.0, 1.0]))
  with pytest.raises(ValueError, match="positive sum"):
    mmd(s, t, target_weights=np.zeros(4))
  with pytest.raises(ValueError, match="only supported by the 'biased' and 'unbiased'"):
    mmd(s, s, estimator="tllib", source_weights=np.ones(5))
  with pytest.raises(ValueError, match="tile_size must be a positive int"):
    mmd(s, t, tile_size=0)
  with pytest.raises(ValueError, match="median bandwidth rule"):
    mmd(s, t, kernel=GaussianKernel(rule="median"), tile_size=2)
  with pytest.raises(ValueError, match="kernel must be"):
    mmd(s, t, kernel="rbf")
  with pytest.raises(ValueError, match="exactly 2 layers"):
    jmmd([s], [t])
  with pytest.raises(ValueError, match="one entry per layer"):
    jmmd([s, s], [t, t], kernels=["linear"])
  with pytest.raises(ValueError, match="equal length"):
    jmmd([s, s], [t])
  with pytest.raises(ValueError, match="sequences of"):
    jmmd(s, t)
  with pytest.raises(ValueError, match="same number of rows"):
    jmmd([s, s[:4]], [t, t])
  with pytest.raises(ValueError, match=r"`source_layers\[1\]` and `target_layers\[1\]`"):
    jmmd([s, s], [t, t[:, :2]])
