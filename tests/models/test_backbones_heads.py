"""Digit backbones and heads against PyTorch / NumPy forward passes written here."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dtl_jax import models
from dtl_jax.models import (
  DTN,
  MLP,
  Bottleneck,
  Classifier,
  DANNMNISTNet,
  DANNSVHNNet,
  DomainDiscriminator,
  LeNet,
  init_variables,
)

pytestmark = pytest.mark.usefixtures("fast_compile")


def _t(a):
  return torch.from_numpy(np.array(a, np.float32))


def _conv_w(p):  # flax [kh, kw, I, O] -> torch [O, I, kh, kw]
  return _t(np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1)))


def _flatten_nhwc(y):
  return torch.flatten(y.permute(0, 2, 3, 1), 1)


def test_lenet_matches_torch_eval(rng):
  x = rng.standard_normal((2, 28, 28, 1)).astype(np.float32)
  model = LeNet()
  v = init_variables(model, jax.random.key(0), jnp.asarray(x))
  out = model.apply(v, jnp.asarray(x), train=False)
  p = v["params"]
  with torch.no_grad():
    y = _t(x).permute(0, 3, 1, 2)
    y = F.relu(F.max_pool2d(F.conv2d(y, _conv_w(p["conv1"]), _t(p["conv1"]["bias"])), 2))
    y = F.relu(F.max_pool2d(F.conv2d(y, _conv_w(p["conv2"]), _t(p["conv2"]["bias"])), 2))
    y = F.relu(F.linear(_flatten_nhwc(y), _t(p["fc"]["kernel"]).T, _t(p["fc"]["bias"])))
  assert out.shape == (2, 500) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), y.numpy(), atol=1e-5)
  # train mode: Dropout2d drops whole channels, Dropout drops units
  a = model.apply(v, jnp.asarray(x), train=True, rngs={"dropout": jax.random.key(1)})
  assert float(jnp.mean(a == 0)) > float(jnp.mean(out == 0))


def test_dtn_matches_torch_eval(rng):
  x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
  model = DTN()
  v = init_variables(model, jax.random.key(0), jnp.asarray(x))
  # non-trivial running statistics
  v["batch_stats"] = jax.tree_util.tree_map(
    lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32), v["batch_stats"]
  )
  out = model.apply(v, jnp.asarray(x), train=False)
  p, s = v["params"], v["batch_stats"]

  def bn(y, name):
    return F.batch_norm(
      y,
      _t(s[name]["mean"]),
      _t(s[name]["var"]),
      _t(p[name]["scale"]),
      _t(p[name]["bias"]),
      training=False,
      eps=1e-5,
    )

  with torch.no_grad():
    y = _t(x).permute(0, 3, 1, 2)
    for i in (1, 2, 3):
      y = F.relu(
        bn(
          F.conv2d(y, _conv_w(p[f"conv{i}"]), _t(p[f"conv{i}"]["bias"]), stride=2, padding=2),
          f"bn{i}",
        )
      )
    y = F.linear(_flatten_nhwc(y), _t(p["fc"]["kernel"]).T, _t(p["fc"]["bias"]))
    y = F.relu(bn(y, "bn_fc"))
  assert out.shape == (2, 512)
  np.testing.assert_allclose(np.asarray(out), y.numpy(), atol=1e-4)


@pytest.mark.parametrize(
  "cls,shape,dim",
  [
    (DANNMNISTNet, (2, 28, 28, 3), 48 * 4 * 4),  # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -> 4
    (DANNSVHNNet, (2, 32, 32, 3), 128 * 7 * 7),  # 32 -pool3/2-> 15 -pool3/2-> 7
    (MLP, (2, 9), 64),
  ],
)
def test_feature_sizes(cls, shape, dim):
  model = cls()
  x = jnp.ones(shape, jnp.float32)
  v = init_variables(model, jax.random.key(0), x)
  assert model.apply(v, x, train=False).shape == (2, dim)


def test_heads_inits_and_forward(rng):
  x = jnp.asarray(rng.standard_normal((64, 300)), jnp.float32)
  b = Bottleneck(256, init_scheme="mdd")
  vb = init_variables(b, jax.random.key(0), x)
  k = np.asarray(vb["params"]["fc"]["kernel"])
  assert abs(k.std() - 0.005) < 0.0005 and np.all(np.asarray(vb["params"]["fc"]["bias"]) == 0.1)
  # eval: relu(bn(x W + b)) with fresh statistics (mean 0, var 1)
  ref = np.maximum((np.asarray(x) @ k + 0.1) / np.sqrt(1 + 1e-5), 0)
  np.testing.assert_allclose(np.asarray(b.apply(vb, x, train=False)), ref, atol=1e-6)

  c = Classifier(31, hidden=(1024,), dropout=0.5, init_scheme="mdd")
  vc = init_variables(c, jax.random.key(1), x)
  assert abs(np.asarray(vc["params"]["fc1"]["kernel"]).std() - 0.01) < 0.001
  assert vc["params"]["fc"]["kernel"].shape == (1024, 31)
  adv = c.adversarial_copy()
  va = init_variables(adv, jax.random.key(2), x)
  assert jax.tree_util.tree_map(jnp.shape, va) == jax.tree_util.tree_map(jnp.shape, vc)
  assert adv.init_scheme == "mdd" and adv is not c

  d = DomainDiscriminator(hidden=32)
  vd = init_variables(d, jax.random.key(3), x)
  out = d.apply(vd, x, train=False)
  p = vd["params"]
  h = np.asarray(x, np.float64)
  for i in (1, 2):
    h = np.maximum((h @ p[f"fc{i}"]["kernel"] + p[f"fc{i}"]["bias"]) / np.sqrt(1 + 1e-5), 0)
  ref = (h @ p["fc3"]["kernel"] + p["fc3"]["bias"])[:, 0]
  assert out.shape == (64,)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)
  dd = DomainDiscriminator(hidden=32, init_scheme="dann")
  assert (
    abs(float(init_variables(dd, jax.random.key(4), x)["params"]["fc3"]["kernel"].std()) - 0.3)
    < 0.1
  )
  # Any widths, no BatchNorm (ADDA's 500-500, WDGRL's critic), and () = logistic regression.
  for widths in ((16, 8, 4), ()):
    m = DomainDiscriminator(hidden=widths, batch_norm=False)
    v = init_variables(m, jax.random.key(5), x)
    assert sorted(v["params"]) == [f"fc{i}" for i in range(1, len(widths) + 2)]
    assert "batch_stats" not in v or not v["batch_stats"]
    h = np.asarray(x, np.float64)
    for i in range(1, len(widths) + 1):
      h = np.maximum(h @ v["params"][f"fc{i}"]["kernel"] + v["params"][f"fc{i}"]["bias"], 0)
    last = v["params"][f"fc{len(widths) + 1}"]
    np.testing.assert_allclose(
      np.asarray(m.apply(v, x, train=True)), (h @ last["kernel"] + last["bias"])[:, 0], atol=1e-5
    )


def test_head_and_backbone_errors():
  with pytest.raises(ValueError, match="init_scheme must be one of"):
    init_variables(
      Classifier(3, init_scheme="xavier"), jax.random.key(0), jnp.ones((2, 4), jnp.float32)
    )
  with pytest.raises(ValueError, match=r"DomainDiscriminator: input must be \[n, d\]"):
    init_variables(DomainDiscriminator(), jax.random.key(0), jnp.ones((2, 4, 4), jnp.float32))
  with pytest.raises(ValueError, match=r"LeNet: x must be NHWC"):
    init_variables(LeNet(), jax.random.key(0), jnp.ones((2, 28, 28), jnp.float32))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 9, 7, 3)])
def test_max_pool_2x2_matches_flax_max_pool(shape):
  """Same values as nn.max_pool (VALID, odd edges dropped) and, without ties, the same
  gradient; checked against a float64 NumPy window max too."""
  from dtl_jax.models import max_pool_2x2

  x = np.random.default_rng(0).standard_normal(shape)
  n, h, w, c = shape
  want = np.empty((n, h // 2, w // 2, c))
  for i in range(h // 2):
    for j in range(w // 2):
      want[:, i, j] = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(1, 2))
  np.testing.assert_array_equal(np.asarray(max_pool_2x2(jnp.asarray(x))), want)
  ref = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(
    np.asarray(max_pool_2x2(jnp.asarray(x))), np.asarray(ref(jnp.asarray(x)))
  )
  g = jax.grad(lambda v: jnp.sum(jnp.sin(max_pool_2x2(v))))(jnp.asarray(x))
  g_ref = jax.grad(lambda v: jnp.sum(jnp.sin(ref(v))))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-12)
  with pytest.raises(ValueError, match="NHWC"):
    max_pool_2x2(jnp.zeros((8, 8, 3)))


def test_max_pool_2x2_splits_tied_gradients():
  """Exact ties: each window passes on its whole gradient, split half and half at each
  pairwise comparison (rows, then columns): evenly among two or four tied inputs."""
  from dtl_jax.models import max_pool_2x2

  windows = {
    "four tied": ([[1.0, 1.0], [1.0, 1.0]], [[0.25, 0.25], [0.25, 0.25]]),
    "two tied, one column": ([[2.0, 1.0], [2.0, 1.0]], [[0.5, 0.0], [0.5, 0.0]]),
    "two tied, diagonal": ([[2.0, 1.0], [0.0, 2.0]], [[0.5, 0.0], [0.0, 0.5]]),
    "three tied": ([[2.0, 2.0], [2.0, 1.0]], [[0.25, 0.5], [0.25, 0.0]]),
    "no tie": ([[0.0, 3.0], [1.0, 2.0]], [[0.0, 1.0], [0.0, 0.0]]),
  }
  for name, (x, want) in windows.items():
    g = jax.grad(lambda v: jnp.sum(max_pool_2x2(v)))(jnp.asarray(x).reshape(1, 2, 2, 1))
    np.testing.assert_array_equal(np.asarray(g).reshape(2, 2), want, err_msg=name)


def _np_conv_valid(x, k, b):
  """Direct float64 VALID cross-correlation, NHWC x [n,h,w,c], kernel [kh,kw,c,f]."""
  n, h, w, _ = x.shape
  kh, kw, _, f = k.shape
  out = np.zeros((n, h - kh + 1, w - kw + 1, f))
  for i in range(h - kh + 1):
    for j in range(w - kw + 1):
      out[:, i, j, :] = np.einsum("nabc,abcf->nf", x[:, i : i + kh, j : j + kw, :], k)
  return out + b


def test_patch_conv_matches_numpy_and_nn_conv(rng):
  x = rng.normal(size=(2, 9, 8, 3))
  conv = models.PatchConv(4, (3, 2))
  variables = conv.init(jax.random.key(0), x)
  k, b = variables["params"]["kernel"], variables["params"]["bias"] + 0.5
  variables = {"params": {"kernel": k, "bias": b}}
  got = conv.apply(variables, x)
  np.testing.assert_allclose(got, _np_conv_valid(x, np.asarray(k), np.asarray(b)), rtol=1e-10)
  ref = nn.Conv(4, (3, 2), padding="VALID").apply(variables, x)
  np.testing.assert_allclose(got, ref, rtol=1e-10)
  # Gradients w.r.t. input and parameters agree with nn.Conv too.
  g1 = jax.grad(lambda v, a: jnp.sum(jnp.sin(conv.apply(v, a))), argnums=(0, 1))(variables, x)
  g2 = jax.grad(
    lambda v, a: jnp.sum(jnp.sin(nn.Conv(4, (3, 2), padding="VALID").apply(v, a))), argnums=(0, 1)
  )(variables, x)
  for a, c in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
    np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-12)
  with pytest.raises(ValueError, match="smaller than the kernel"):
    conv.init(jax.random.key(0), x[:, :2])


def test_lenet_patch_convs_same_tree_and_values(rng):
  x = rng.normal(size=(3, 28, 28, 1)).astype(np.float32)
  base = models.LeNet()
  variables = base.init(jax.random.key(0), x, train=False)
  patched = models.LeNet(patch_convs=("conv1", "conv2"))
  assert jax.tree.structure(patched.init(jax.random.key(0), x, train=False)) == jax.tree.structure(
    variables
  )
  np.testing.assert_allclose(
    patched.apply(variables, x, train=False),
    base.apply(variables, x, train=False),
    rtol=2e-5,
    atol=2e-5,
  )
  with pytest.raises(ValueError, match="patch_convs must name"):
    models.LeNet(patch_convs=("fc",)).init(jax.random.key(0), x, train=False)
