"""The strengthened PyTorch references (issue 15) compute what the references of issue 8
and the library compute: values and gradients in float64.

* ``squared_distances`` (one ``addmm``) equals the three-pass distances;
* ``mk_mmd`` / ``jmmd`` (plain autograd, O(N d) bandwidth) and ``mk_mmd_fn`` / ``jmmd_fn``
  (``autograd.Function`` with a hand-written backward) equal ``*_previous`` and
  ``dtl_jax.losses.mk_mmd`` / ``jmmd`` with ``estimator="tllib"``, value and gradient;
* the PyTorch discriminator with the library's :class:`DomainDiscriminator` weights gives
  the library's DANN / CDAN loss and the same feature AND parameter gradients;
* the two-product matmul bound of mk_mmd is the real gradient of a symmetric Gram;
* a missing dalib drops only the dalib column.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from benchmarks import jax_losses, losses, torch_refs
from dtl_jax import losses as L

pytestmark = pytest.mark.usefixtures("fast_compile")


def _t(a: np.ndarray, grad: bool = True) -> torch.Tensor:
  return torch.from_numpy(np.array(a, np.float64)).requires_grad_(grad)


def _torch_value_and_grad(fn, *args, wrt):
  value = fn(*args)
  grads = torch.autograd.grad(value, wrt)
  return value.item(), [g.numpy() for g in grads]


@pytest.fixture
def feats(rng):
  n, d = 7, 5
  zs = rng.standard_normal((n, d))
  zt = rng.standard_normal((n, d)) * 1.3 + 0.4
  return zs, zt


def test_one_addmm_distances_equal_three_pass_distances(rng):
  x = torch.from_numpy(rng.standard_normal((9, 4)))
  np.testing.assert_allclose(
    torch_refs.squared_distances(x).numpy(),
    torch_refs.squared_distances_previous(x).numpy(),
    rtol=1e-12,
    atol=1e-12,
  )
  # and against the definition
  want = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).numpy()
  np.testing.assert_allclose(torch_refs.squared_distances(x).numpy(), want, atol=1e-12)


def test_mean_identity_equals_mean_of_the_full_matrix(rng):
  x = torch.from_numpy(rng.standard_normal((11, 3)))
  full = torch_refs.squared_distances_previous(x).mean().item()
  assert torch_refs.mean_sq_distance(x).item() == pytest.approx(full, rel=1e-12)


@pytest.mark.parametrize("multipliers", [torch_refs.DAN_MULTIPLIERS, (0.3, 1.0, 1.7)])
@pytest.mark.parametrize("impl", ["mk_mmd", "mk_mmd_fn"])
def test_mk_mmd_equals_previous_reference_and_library(feats, impl, multipliers):
  zs, zt = feats
  a, b = _t(zs), _t(zt)
  got_v, got_g = _torch_value_and_grad(
    lambda x, y: getattr(torch_refs, impl)(x, y, multipliers=multipliers), a, b, wrt=(a, b)
  )
  a0, b0 = _t(zs), _t(zt)
  old_v, old_g = _torch_value_and_grad(
    lambda x, y: torch_refs.mk_mmd_previous(x, y, multipliers=multipliers), a0, b0, wrt=(a0, b0)
  )
  lib_v, lib_g = jax.value_and_grad(
    lambda x, y: L.mk_mmd(x, y, multipliers=multipliers, estimator="tllib"), argnums=(0, 1)
  )(jnp.asarray(zs), jnp.asarray(zt))
  assert got_v == pytest.approx(old_v, rel=1e-10)
  assert got_v == pytest.approx(float(lib_v), rel=1e-10)
  for g, g_old, g_lib in zip(got_g, old_g, lib_g, strict=True):
    np.testing.assert_allclose(g, g_old, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g, np.asarray(g_lib), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("impl", ["jmmd", "jmmd_fn"])
@pytest.mark.parametrize("prob_grads", [False, True])
def test_jmmd_equals_previous_reference_and_library(feats, rng, impl, prob_grads):
  zs, zt = feats
  n = zs.shape[0]
  ps = np.asarray(jax.nn.softmax(rng.standard_normal((n, 4))))
  pt = np.asarray(jax.nn.softmax(rng.standard_normal((n, 4))))

  def run(fn):
    a, b, c, e = _t(zs), _t(zt), _t(ps, prob_grads), _t(pt, prob_grads)
    wrt = (a, b, c, e) if prob_grads else (a, b)
    return _torch_value_and_grad(lambda *x: fn((x[0], x[2]), (x[1], x[3])), a, b, c, e, wrt=wrt)

  got_v, got_g = run(getattr(torch_refs, impl))
  old_v, old_g = run(torch_refs.jmmd_previous)
  argnums = (0, 1, 2, 3) if prob_grads else (0, 1)
  lib_v, lib_g = jax.value_and_grad(
    lambda a, b, c, e: L.jmmd((a, c), (b, e), estimator="tllib"), argnums=argnums
  )(*map(jnp.asarray, (zs, zt, ps, pt)))
  assert got_v == pytest.approx(old_v, rel=1e-10)
  assert got_v == pytest.approx(float(lib_v), rel=1e-10)
  assert len(got_g) == len(lib_g)
  for g, g_old, g_lib in zip(got_g, old_g, lib_g, strict=True):
    np.testing.assert_allclose(g, g_old, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g, np.asarray(g_lib), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss", ["dann", "cdan"])
def test_torch_discriminator_matches_the_library_module(rng, loss):
  """Loss, feature gradients and every parameter gradient, float64."""
  n, d, c = 6, 4, 3
  zs, zt = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 0.5
  gs, gt = rng.standard_normal((n, c)), rng.standard_normal((n, c))
  width = d if loss == "dann" else d * c
  disc = torch_refs.discriminator(width, 16).double()
  v = jax_losses.discriminator_variables(disc, np.float64)
  a, b = _t(zs), _t(zt)
  wrt = (a, b, *disc.parameters())
  if loss == "dann":
    value, grads = _torch_value_and_grad(lambda x, y: torch_refs.dann(disc, x, y), a, b, wrt=wrt)
    lib_v, lib_g = jax_losses.dann_value_and_grad(16)(zs, zt, v["params"], v["batch_stats"])
  else:
    value, grads = _torch_value_and_grad(
      lambda x, y: torch_refs.cdan(disc, _t(gs, False), x, _t(gt, False), y), a, b, wrt=wrt
    )
    lib_v, lib_g = jax_losses.cdan_value_and_grad(16)(zs, zt, gs, gt, v["params"], v["batch_stats"])
  assert value == pytest.approx(float(lib_v), rel=1e-10)
  want = [lib_g[0], lib_g[1], *losses._disc_grads_torch_order(lib_g[2])]
  assert len(grads) == len(want) == 2 + 10
  for g, w in zip(grads, want, strict=True):
    np.testing.assert_allclose(g, np.asarray(w), rtol=1e-8, atol=1e-12)


def test_two_product_bound_is_the_gradient_of_a_symmetric_gram(rng):
  """d/dX <G, X Xᵀ> = (G + Gᵀ) X: one product, what mk_mmd_matmuls times."""
  x = jnp.asarray(rng.standard_normal((6, 3)))
  g = jnp.asarray(rng.standard_normal((6, 6)))
  want = jax.grad(lambda x: jnp.sum(g * (x @ x.T)))(x)
  gram, back = jax_losses.mk_mmd_matmuls(x, g + g.T)
  np.testing.assert_allclose(np.asarray(back), np.asarray(want), rtol=1e-12)
  np.testing.assert_allclose(np.asarray(gram), np.asarray(x @ x.T), rtol=1e-12)


def test_missing_dalib_drops_only_the_dalib_column(monkeypatch):
  def no_dalib(*args, **kwargs):
    raise ImportError("No module named 'dalib'")

  monkeypatch.setattr(torch_refs, "dalib_mk_mmd", no_dalib)
  monkeypatch.setattr(torch_refs, "dalib_dann", no_dalib)
  for loss in ("mk_mmd", "dann"):
    row = losses.run_config(
      loss,
      8,
      16,
      impls=["jax", "torch_gram", "torch_fn", "dalib"],
      repeats=1,
      min_sample_s=0.0,
      cap_bytes=2**30,
    )
    assert "error" not in row
    impls = row["impls"]
    assert impls["dalib"]["status"] == "not available"
    assert "dalib" in impls["dalib"]["error"]
    ok = {"jax", "torch_gram"} | ({"torch_fn"} if loss == "mk_mmd" else set())
    assert {k for k, v in impls.items() if v["status"] == "ok"} == ok
    assert all(impls[k]["median_s"] > 0 for k in ok)
