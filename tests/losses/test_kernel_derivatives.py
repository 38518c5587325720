"""The hand-written derivative rules of dtl_jax.losses.kernels (issue 15).

``symmetric_gram`` (one backward product for ``X Xᵀ``) and the derivative of
``gaussian_kernel_sum`` (slope from the stored exponential) must give the gradients of
plain autodiff through the definitions -- difference tensors and one ``exp`` per kernel,
written here -- in float64, in reverse AND forward mode, under jit and vmap, for every
estimator, weights and the tiled path.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dtl_jax import losses as L
from dtl_jax.losses import kernels as K

pytestmark = pytest.mark.usefixtures("fast_compile")

DAN = (0.125, 0.25, 0.5, 1.0, 2.0)
MULTIPLIERS = [DAN, (0.3, 1.0, 1.7), (1.0, 1.0, 0.5)]


def plain_sq_dists(x, y):
  return jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, -1)


def plain_kernel_sum(d, sigma2, multipliers):
  return sum(jnp.exp(-d / (2.0 * m * sigma2)) for m in multipliers)


def plain_mmd(layers_s, layers_t, specs, estimator, ws=None, wt=None):
  """The MMD estimators from their definitions: no Gram form, no custom rule."""
  n_s, n_t = layers_s[0].shape[0], layers_t[0].shape[0]
  k = 1.0
  for s, t, (mult, sigma2) in zip(layers_s, layers_t, specs, strict=True):
    z = jnp.concatenate([s, t])
    d = plain_sq_dists(z, z)
    s2 = jax.lax.stop_gradient(jnp.mean(d)) if sigma2 is None else sigma2
    k = k * plain_kernel_sum(d, s2, mult)
  ws = jnp.ones(n_s) if ws is None else ws
  wt = jnp.ones(n_t) if wt is None else wt
  ws, wt = ws / ws.sum(), wt / wt.sum()
  kss, ktt, kst = k[:n_s, :n_s], k[n_s:, n_s:], k[:n_s, n_s:]
  cross = ws @ kst @ wt
  if estimator == "biased":
    return ws @ kss @ ws + wt @ ktt @ wt - 2 * cross

  def within(kk, w):
    off = 1.0 - jnp.eye(len(w))
    return (w @ (kk * off) @ w) / (1.0 - jnp.sum(w * w))

  value = within(kss, ws) + within(ktt, wt) - 2 * cross
  return value + (2.0 / (n_s - 1) if estimator == "tllib" else 0.0)


def _assert_trees_close(a, b, rtol=1e-9, atol=1e-12):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------- symmetric Gram


def test_symmetric_gram_value_grad_jvp_hessian(rng):
  x = jnp.asarray(rng.normal(size=(6, 4)))
  c = jnp.asarray(rng.normal(size=(6, 6)))  # a NON-symmetric cotangent

  def f(g):
    return lambda x: jnp.sum(c * jnp.sin(g(x)))

  sym = f(K.symmetric_gram)
  plain = f(lambda x: x @ x.T)
  np.testing.assert_allclose(K.symmetric_gram(x), x @ x.T, rtol=1e-14)
  _assert_trees_close(jax.grad(sym)(x), jax.grad(plain)(x))
  dx = jnp.asarray(rng.normal(size=x.shape))
  _assert_trees_close(jax.jvp(sym, (x,), (dx,)), jax.jvp(plain, (x,), (dx,)))
  _assert_trees_close(jax.jit(jax.hessian(sym))(x), jax.jit(jax.hessian(plain))(x))
  check_grads(jax.jit(sym), (x,), order=1, modes=("fwd", "rev"))
  xs = jnp.asarray(rng.normal(size=(3, 6, 4)))
  _assert_trees_close(jax.vmap(jax.grad(sym))(xs), jax.vmap(jax.grad(plain))(xs))


def test_symmetric_gram_rejects_non_matrices():
  with pytest.raises(ValueError, match=r"x must have shape \[n, d\]"):
    K.symmetric_gram(jnp.ones(3))


def test_symmetric_gram_saves_one_product():
  """XLA's own flop count: value + gradient of a Gram-based loss is 2 products, not 3."""
  n, d = 64, 128
  x = jnp.ones((n, d), jnp.float32)
  c = jnp.ones((n, n), jnp.float32)

  def flops(g):
    compiled = jax.jit(jax.value_and_grad(lambda x: jnp.sum(c * jnp.sin(g(x))))).lower(x).compile()
    cost = compiled.cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]

  product = 2.0 * n * n * d
  assert flops(lambda x: x @ x.T) >= 3 * product
  assert 2 * product <= flops(K.symmetric_gram) < 2.5 * product


def test_pairwise_sq_distances_gradient_matches_difference_form(rng):
  x = jnp.asarray(rng.normal(size=(7, 3)))
  y = jnp.asarray(rng.normal(size=(5, 3)))
  w = jnp.asarray(rng.normal(size=(7, 7)))
  wy = jnp.asarray(rng.normal(size=(7, 5)))
  _assert_trees_close(
    jax.grad(lambda x: jnp.sum(w * K.pairwise_sq_distances(x)))(x),
    jax.grad(lambda x: jnp.sum(w * plain_sq_dists(x, x)))(x),
  )
  _assert_trees_close(
    jax.grad(lambda x, y: jnp.sum(wy * K.pairwise_sq_distances(x, y)), (0, 1))(x, y),
    jax.grad(lambda x, y: jnp.sum(wy * plain_sq_dists(x, y)), (0, 1))(x, y),
  )


# ---------------------------------------------------------------------- kernel sum


@pytest.mark.parametrize("multipliers", MULTIPLIERS)
def test_kernel_sum_derivatives_in_distances_and_bandwidth(rng, multipliers):
  d = jnp.asarray(np.abs(rng.normal(size=(5, 4))) * 3.0)
  c = jnp.asarray(rng.normal(size=(5, 4)))

  def f(ks):
    return lambda d, s2: jnp.sum(c * ks(d, s2))

  lib = f(functools.partial(K.gaussian_kernel_sum, multipliers=multipliers))
  plain = f(functools.partial(plain_kernel_sum, multipliers=multipliers))
  args = (d, jnp.asarray(1.3))
  _assert_trees_close(lib(*args), plain(*args), rtol=1e-12)
  _assert_trees_close(jax.grad(lib, (0, 1))(*args), jax.grad(plain, (0, 1))(*args))
  tangents = (jnp.asarray(rng.normal(size=d.shape)), jnp.asarray(0.7))
  _assert_trees_close(jax.jvp(lib, args, tangents), jax.jvp(plain, args, tangents))
  _assert_trees_close(
    jax.jvp(lambda d: lib(d, 1.3), (d,), (tangents[0],))[1],
    jax.jvp(lambda d: plain(d, 1.3), (d,), (tangents[0],))[1],
  )
  _assert_trees_close(
    jax.jit(jax.hessian(lib, (0, 1)))(*args), jax.jit(jax.hessian(plain, (0, 1)))(*args)
  )
  check_grads(jax.jit(lib), args, order=1, modes=("fwd", "rev"))
  # vmap over the bandwidth (a traced sigma2), under jit
  s2s = jnp.asarray([0.5, 1.3, 4.0])
  _assert_trees_close(
    jax.jit(jax.vmap(jax.grad(lib, (0, 1)), (None, 0)))(d, s2s),
    jax.vmap(jax.grad(plain, (0, 1)), (None, 0))(d, s2s),
  )


def test_kernel_sum_uses_one_exp_under_grad():
  """The slope comes from the stored exponential: one exp in the differentiated program
  for power-of-two multipliers (DAN), counted in XLA's optimized HLO."""
  d = jnp.ones((16, 16), jnp.float32)
  f = jax.grad(lambda d: jnp.sum(K.gaussian_kernel_sum(d, 1.0, multipliers=DAN) * d))
  hlo = jax.jit(f).lower(d).compile().as_text()
  assert hlo.count("exponential(") == 1


# ---------------------------------------------------------------------- whole losses

ESTIMATORS = ["biased", "unbiased", "tllib"]


@pytest.mark.parametrize(
  "estimator,multipliers,tile",
  [(e, DAN, tile) for e in ESTIMATORS for tile in (None, 5)]
  + [("tllib", m, None) for m in MULTIPLIERS[1:]],
)
def test_mk_mmd_gradient_equals_plain_autodiff(rng, estimator, multipliers, tile):
  s = jnp.asarray(rng.normal(size=(6, 4)))
  t = jnp.asarray(rng.normal(size=(6, 4)) * 1.3 + 0.5)

  def lib(s, t):
    return L.mk_mmd(s, t, multipliers=multipliers, estimator=estimator, tile_size=tile)

  def plain(s, t):
    return plain_mmd([s], [t], [(multipliers, None)], estimator)

  _assert_trees_close(
    jax.jit(jax.value_and_grad(lib, (0, 1)))(s, t),
    jax.jit(jax.value_and_grad(plain, (0, 1)))(s, t),
  )


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_weighted_jmmd_gradient_equals_plain_autodiff(rng, estimator):
  s1, t1 = jnp.asarray(rng.normal(size=(5, 4))), jnp.asarray(rng.normal(size=(7, 4)) + 0.3)
  s2, t2 = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(7, 3)))
  ws, wt = jnp.asarray(rng.random(5) + 0.1), jnp.asarray(rng.random(7) + 0.1)
  kernels = (K.GaussianKernel(multipliers=DAN), K.GaussianKernel(sigma2=0.8))

  def lib(*a):
    return L.jmmd(
      a[:2], a[2:4], kernels=kernels, estimator=estimator, source_weights=a[4], target_weights=a[5]
    )

  def plain(*a):
    return plain_mmd(a[:2], a[2:4], [(DAN, None), ((1.0,), 0.8)], estimator, a[4], a[5])

  args = (s1, s2, t1, t2, ws, wt)
  _assert_trees_close(
    jax.jit(jax.value_and_grad(lib, range(6)))(*args),
    jax.jit(jax.value_and_grad(plain, range(6)))(*args),
  )


def test_tllib_jmmd_gradient_and_vmap(rng):
  n = 6
  zs, zt = rng.normal(size=(2, n, 5))
  ps, pt = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, n, 4))), -1)

  def lib(zs, zt, ps, pt):
    return L.jmmd((zs, ps), (zt, pt), estimator="tllib")

  def plain(zs, zt, ps, pt):
    return plain_mmd((zs, ps), (zt, pt), [(DAN, None), ((1.0,), 0.92**2)], "tllib")

  args = tuple(map(jnp.asarray, (zs, zt, ps, pt)))
  _assert_trees_close(
    jax.jit(jax.value_and_grad(lib, range(4)))(*args),
    jax.jit(jax.value_and_grad(plain, range(4)))(*args),
  )
  batched = tuple(jnp.stack([a, 2 * a]) for a in args)
  _assert_trees_close(
    jax.jit(jax.vmap(jax.grad(lib, (0, 1))))(*batched),
    jax.jit(jax.vmap(jax.grad(plain, (0, 1))))(*batched),
  )


def test_fixed_bandwidth_mmd_check_grads_forward_and_reverse(rng):
  s = jnp.asarray(rng.normal(size=(5, 3)))
  t = jnp.asarray(rng.normal(size=(5, 3)) + 0.4)
  kern = K.GaussianKernel(multipliers=DAN, sigma2=2.0)
  check_grads(
    jax.jit(lambda s, t: L.mmd(s, t, kernel=kern, estimator="unbiased")),
    (s, t),
    order=1,
    modes=("fwd", "rev"),
  )


# ------------------------------------------------ the weighted form's own rule (dense MMD)


@pytest.mark.parametrize("tile", [None, 4])
def test_traced_bandwidths_and_weights_gradients_and_hessian(rng, tile):
  """Every input of the Gaussian form, dense and by row blocks (9 rows: a padded last
  block): features of both layers, traced fixed bandwidths and importance weights, in
  reverse and forward mode, and second order."""
  s1, t1 = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(5, 3)) + 0.4)
  s2, t2 = jnp.asarray(rng.normal(size=(4, 2))), jnp.asarray(rng.normal(size=(5, 2)))
  ws, wt = jnp.asarray(rng.random(4) + 0.1), jnp.asarray(rng.random(5) + 0.1)
  sig = jnp.asarray([1.7, 0.6])

  def lib(s1, s2, t1, t2, ws, wt, sig):
    kernels = (
      K.GaussianKernel(multipliers=(0.5, 1.0, 2.0), sigma2=sig[0]),
      K.GaussianKernel(sigma2=sig[1]),
    )
    return L.jmmd(
      (s1, s2),
      (t1, t2),
      kernels=kernels,
      estimator="unbiased",
      source_weights=ws,
      target_weights=wt,
      tile_size=tile,
    )

  def plain(s1, s2, t1, t2, ws, wt, sig):
    specs = [((0.5, 1.0, 2.0), sig[0]), ((1.0,), sig[1])]
    return plain_mmd((s1, s2), (t1, t2), specs, "unbiased", ws, wt)

  args = (s1, s2, t1, t2, ws, wt, sig)
  every = tuple(range(7))
  _assert_trees_close(
    jax.jit(jax.value_and_grad(lib, every))(*args),
    jax.jit(jax.value_and_grad(plain, every))(*args),
  )
  _assert_trees_close(jax.jacfwd(lib, every)(*args), jax.jacfwd(plain, every)(*args))
  _assert_trees_close(
    jax.jit(jax.hessian(lib, (0, 6)))(*args), jax.jit(jax.hessian(plain, (0, 6)))(*args)
  )


def _all_eqns(jaxpr):
  for e in jaxpr.eqns:
    yield e
    for sub in jax.extend.core.jaxprs_in_params(e.params):
      yield from _all_eqns(sub)


@pytest.mark.parametrize("tile", [None, 4])
@pytest.mark.parametrize("loss", ["mk_mmd", "jmmd"])
def test_gaussian_backward_is_one_product_per_layer_and_no_transpose(rng, loss, tile):
  """The rule's point: the backward multiplies the [N, N] cotangent (or a [tile, N] block
  of it) by each layer's features once, and never transposes it (the symmetric-Gram rule
  alone needs (C + Cᵀ) Z; autodiff of row blocks needs C_R Z and C_Rᵀ Z_R)."""
  n, dims = 6, (5, 3)
  zs = [jnp.asarray(rng.normal(size=(n, d))) for d in dims]
  zt = [jnp.asarray(rng.normal(size=(n, d))) for d in dims]
  if loss == "mk_mmd":
    fn = lambda a, b: L.mk_mmd(a, b, estimator="tllib", tile_size=tile)
    args = (zs[0], zt[0])
  else:
    fn = lambda a, b, c, d: L.jmmd((a, c), (b, d), estimator="tllib", tile_size=tile)
    args = (zs[0], zt[0], zs[1], zt[1])
  layers = dims[: len(args) // 2]
  jaxpr = jax.make_jaxpr(jax.grad(fn, tuple(range(len(args)))))(*args).jaxpr
  eqns = list(_all_eqns(jaxpr))
  rows = 2 * n if tile is None else tile
  block = {(rows, 2 * n), (2 * n, rows)}
  assert not [
    e for e in eqns if e.primitive.name == "transpose" and e.invars[0].aval.shape in block
  ]
  products = sorted(
    e.outvars[0].aval.shape[-1]
    for e in eqns
    if e.primitive.name == "dot_general" and e.outvars[0].aval.shape[-1] in layers
  )
  assert products == sorted(layers)
