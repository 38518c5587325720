"""mk_mmd and jmmd against TLlib's released code (dalib==0.2), values and gradients.

Needs the `torch` extra and `pip install --no-deps dalib==0.2 && pip install qpsolvers`.
"""

import warnings

import jax
import numpy as np
import pytest

from dtl_jax.losses import GaussianKernel, jmmd, mk_mmd, mmd

pytestmark = pytest.mark.usefixtures("fast_compile")

with warnings.catch_warnings():
  warnings.simplefilter("ignore")  # qpsolvers warns that no QP solver is installed
  import torch
  from dalib.adaptation.dan import MultipleKernelMaximumMeanDiscrepancy
  from dalib.adaptation.jan import JointMultipleKernelMaximumMeanDiscrepancy
  from dalib.modules.kernels import GaussianKernel as TorchGaussianKernel

ATOL = 1e-6


@pytest.fixture(autouse=True)
def torch_float64():
  # dalib stores a fixed sigma^2 as torch.tensor(sigma * sigma): make that float64 too.
  prev = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)
  yield
  torch.set_default_dtype(prev)


def dan_kernels():
  return [TorchGaussianKernel(alpha=2.0**k) for k in range(-3, 2)]


def torch_value_and_grads(module, source_layers, target_layers, single=False):
  s = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in source_layers]
  t = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in target_layers]
  loss = module(s[0], t[0]) if single else module(tuple(s), tuple(t))
  loss.backward()
  return loss.item(), [x.grad.numpy() for x in s + t]


def assert_close(jax_value, jax_grads, torch_value, torch_grads):
  np.testing.assert_allclose(float(jax_value), torch_value, rtol=0, atol=ATOL)
  for g_jax, g_torch in zip(jax_grads, torch_grads, strict=True):
    np.testing.assert_allclose(np.asarray(g_jax), g_torch, rtol=0, atol=ATOL)


@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("n,d", [(2, 3), (7, 4)])
def test_mk_mmd_matches_dalib(rng, linear, n, d):
  s = rng.normal(size=(n, d))
  t = rng.normal(size=(n, d)) * 1.2 + 0.4
  estimator = "tllib_linear" if linear else "tllib"
  ref_value, ref_grads = torch_value_and_grads(
    MultipleKernelMaximumMeanDiscrepancy(dan_kernels(), linear=linear), [s], [t], single=True
  )
  value, grads = jax.value_and_grad(lambda a, b: mk_mmd(a, b, estimator=estimator), (0, 1))(s, t)
  assert_close(value, grads, ref_value, ref_grads)
  # Tiled evaluation gives the same TLlib value.
  if not linear:
    value, grads = jax.value_and_grad(
      lambda a, b: mk_mmd(a, b, estimator=estimator, tile_size=3), (0, 1)
    )(s, t)
    assert_close(value, grads, ref_value, ref_grads)


@pytest.mark.parametrize("linear", [False, True])
def test_mmd_fixed_sigma_matches_dalib(rng, linear):
  s, t = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
  module = MultipleKernelMaximumMeanDiscrepancy(
    [TorchGaussianKernel(sigma=1.7, track_running_stats=False)], linear=linear
  )
  ref_value, ref_grads = torch_value_and_grads(module, [s], [t], single=True)
  kernel = GaussianKernel(sigma2=1.7 * 1.7)
  estimator = "tllib_linear" if linear else "tllib"
  value, grads = jax.value_and_grad(
    lambda a, b: mmd(a, b, kernel=kernel, estimator=estimator), (0, 1)
  )(s, t)
  assert_close(value, grads, ref_value, ref_grads)


@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("n", [2, 7])
def test_jmmd_matches_dalib_with_jan_defaults(rng, linear, n):
  s1, t1 = rng.normal(size=(n, 5)), rng.normal(size=(n, 5)) + 0.5
  s2 = np.asarray(jax.nn.softmax(rng.normal(size=(n, 4)) * 2.0))
  t2 = np.asarray(jax.nn.softmax(rng.normal(size=(n, 4)) * 2.0))
  module = JointMultipleKernelMaximumMeanDiscrepancy(
    (dan_kernels(), (TorchGaussianKernel(sigma=0.92, track_running_stats=False),)), linear=linear
  )
  ref_value, ref_grads = torch_value_and_grads(module, [s1, s2], [t1, t2])
  estimator = "tllib_linear" if linear else "tllib"
  value, grads = jax.value_and_grad(
    lambda a, b, c, e: jmmd([a, b], [c, e], estimator=estimator), (0, 1, 2, 3)
  )(s1, s2, t1, t2)
  assert_close(value, grads, ref_value, ref_grads)


@pytest.mark.parametrize("linear", [False, True])
def test_jmmd_custom_kernels_matches_dalib(rng, linear):
  n = 8
  layers_s = [rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), rng.normal(size=(n, 4))]
  layers_t = [rng.normal(size=(n, 3)) + 0.2, rng.normal(size=(n, 2)), rng.normal(size=(n, 4))]
  module = JointMultipleKernelMaximumMeanDiscrepancy(
    (
      [TorchGaussianKernel(alpha=0.5), TorchGaussianKernel(alpha=1.0)],
      [TorchGaussianKernel(alpha=2.0)],
      [TorchGaussianKernel(sigma=1.3, track_running_stats=False)],
    ),
    linear=linear,
  )
  ref_value, ref_grads = torch_value_and_grads(module, layers_s, layers_t)
  kernels = (
    GaussianKernel(multipliers=(0.5, 1.0)),
    GaussianKernel(multipliers=(2.0,)),
    GaussianKernel(sigma2=1.3 * 1.3),
  )
  estimator = "tllib_linear" if linear else "tllib"
  value, grads = jax.value_and_grad(
    lambda *z: jmmd(z[:3], z[3:], kernels=kernels, estimator=estimator), tuple(range(6))
  )(*layers_s, *layers_t)
  assert_close(value, grads, ref_value, ref_grads)
