"""TransferModel, the apply contract, and BatchNorm (PyTorch semantics, frozen, pmap)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dtl_jax.models import (
  MLP,
  BatchNorm,
  Bottleneck,
  Classifier,
  ResNet18,
  TransferModel,
  init_variables,
  make_apply_fn,
)

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_batchnorm_matches_torch_training_and_eval(rng):
  x = (3.0 * rng.standard_normal((6, 4)) + 1.0).astype(np.float32)
  bn = BatchNorm()
  v = init_variables(bn, jax.random.key(0), jnp.asarray(x))
  scale = rng.uniform(0.5, 1.5, 4).astype(np.float32)
  bias = rng.standard_normal(4).astype(np.float32)
  v["params"] = {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)}
  y, st = bn.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
  rm, rv = torch.zeros(4), torch.ones(4)
  ref = F.batch_norm(
    torch.from_numpy(x),
    rm,
    rv,
    torch.from_numpy(scale),
    torch.from_numpy(bias),
    training=True,
    momentum=0.1,
    eps=1e-5,
  )
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y), ref.numpy(), atol=1e-5)
  # running stats: PyTorch's momentum 0.1 and unbiased variance
  np.testing.assert_allclose(np.asarray(st["batch_stats"]["mean"]), rm.numpy(), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(st["batch_stats"]["var"]), rv.numpy(), rtol=1e-6)
  v["batch_stats"] = st["batch_stats"]
  y_eval = bn.apply(v, jnp.asarray(x), train=False)
  ref_eval = F.batch_norm(
    torch.from_numpy(x),
    rm,
    rv,
    torch.from_numpy(scale),
    torch.from_numpy(bias),
    training=False,
    eps=1e-5,
  )
  np.testing.assert_allclose(np.asarray(y_eval), ref_eval.numpy(), atol=1e-5)


def test_apply_fn_contract_and_named_layers(rng):
  model = TransferModel(MLP((8, 6), batch_norm=True), Bottleneck(4, dropout=0.5), Classifier(3))
  x = jnp.asarray(rng.standard_normal((5, 7)), jnp.float32)
  v = init_variables(model, jax.random.key(0), x)
  apply_fn = make_apply_fn(model, layers=("backbone/fc2", "bottleneck/bn"))
  out, state = apply_fn(v, x, train=False)
  assert set(out) == {"features", "bottleneck", "logits", "backbone/fc2", "bottleneck/bn"}
  assert out["features"].shape == (5, 6) and out["bottleneck"].shape == (5, 4)
  assert out["logits"].shape == (5, 3) and all(o.dtype == jnp.float32 for o in out.values())
  # eval: state unchanged (the very same batch_stats)
  assert state.keys() == {"batch_stats"}
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_array_equal(a, b), state["batch_stats"], v["batch_stats"]
  )
  # independent reference for the intermediate and the logits in eval mode (NumPy)
  p, s = v["params"], v["batch_stats"]

  def bn(h, pp, ss):
    return (h - ss["mean"]) / np.sqrt(ss["var"] + 1e-5) * pp["scale"] + pp["bias"]

  h = np.asarray(x, np.float64)
  h = np.maximum(
    bn(
      h @ p["backbone"]["fc1"]["kernel"] + p["backbone"]["fc1"]["bias"],
      p["backbone"]["bn1"],
      s["backbone"]["bn1"],
    ),
    0,
  )
  fc2 = h @ p["backbone"]["fc2"]["kernel"] + p["backbone"]["fc2"]["bias"]
  np.testing.assert_allclose(np.asarray(out["backbone/fc2"]), fc2, atol=1e-5)
  f = np.maximum(bn(fc2, p["backbone"]["bn2"], s["backbone"]["bn2"]), 0)
  b = np.maximum(
    bn(
      f @ p["bottleneck"]["fc"]["kernel"] + p["bottleneck"]["fc"]["bias"],
      p["bottleneck"]["bn"],
      s["bottleneck"]["bn"],
    ),
    0,
  )
  logits = b @ p["head"]["fc"]["kernel"] + p["head"]["fc"]["bias"]
  np.testing.assert_allclose(np.asarray(out["logits"]), logits, atol=1e-5)
  # train: stats move, dropout needs and uses the key
  out_t, state_t = apply_fn(v, x, train=True, rngs={"dropout": jax.random.key(1)})
  assert not np.array_equal(
    np.asarray(state_t["batch_stats"]["backbone"]["bn1"]["mean"]),
    np.asarray(v["batch_stats"]["backbone"]["bn1"]["mean"]),
  )
  out_t2, _ = apply_fn(v, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.array_equal(np.asarray(out_t["bottleneck"]), np.asarray(out_t2["bottleneck"]))
  with pytest.raises(ValueError, match=r"layers: no module 'backbone/fc9'.*'backbone/fc1'"):
    make_apply_fn(model, layers=("backbone/fc9",))(v, x, train=False)


def test_model_without_batchnorm_returns_empty_state(rng):
  model = TransferModel(MLP((4,)), None, Classifier(2))
  x = jnp.asarray(rng.standard_normal((3, 2)), jnp.float32)
  v = init_variables(model, jax.random.key(0), x)
  assert v["batch_stats"] == {}
  out, state = make_apply_fn(model)(v, x, train=True)
  assert state == {} and out["bottleneck"] is out["features"]


def test_frozen_bn_resnet_layer1_keeps_stats_and_uses_running_averages(rng):
  x = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
  model = TransferModel(ResNet18(), None, Classifier(2), frozen_bn=("backbone/(bn1|layer1/.*)",))
  v = init_variables(model, jax.random.key(0), x)
  _, st = make_apply_fn(model)(v, x, train=True)
  old, new = v["batch_stats"]["backbone"], st["batch_stats"]["backbone"]
  for part in ("bn1", "layer1"):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), old[part], new[part])
  assert not np.array_equal(
    np.asarray(old["layer2"]["0"]["bn1"]["mean"]), np.asarray(new["layer2"]["0"]["bn1"]["mean"])
  )
  # A fully frozen backbone in train mode computes exactly the eval-mode features.
  frozen = model.clone(frozen_bn=("backbone/.*",))
  f_train, _ = make_apply_fn(frozen)(v, x, train=True)
  f_eval, _ = make_apply_fn(frozen)(v, x, train=False)
  np.testing.assert_array_equal(np.asarray(f_train["features"]), np.asarray(f_eval["features"]))


def test_bn_axis_name_pmap_equals_single_device(rng):
  model = TransferModel(MLP((6,), batch_norm=True), None, Classifier(2))
  x = jnp.asarray(rng.standard_normal((8, 3)), jnp.float32)
  v = init_variables(model, jax.random.key(0), x)
  out1, st1 = make_apply_fn(model)(v, x, train=True)
  pm = make_apply_fn(model.clone(bn_axis_name="batch"))
  outs, sts = jax.pmap(lambda xx: pm(v, xx, train=True), axis_name="batch")(x.reshape(4, 2, 3))
  np.testing.assert_allclose(
    np.asarray(outs["logits"]).reshape(8, 2), np.asarray(out1["logits"]), atol=1e-5
  )
  for d in range(4):
    jax.tree_util.tree_map(
      lambda a, b, d=d: np.testing.assert_allclose(np.asarray(a)[d], np.asarray(b), rtol=1e-5),
      sts["batch_stats"],
      st1["batch_stats"],
    )


def test_backbone_must_return_vectors():
  class Bad(MLP):
    def __call__(self, x, *, train):
      return x[:, None, :]

  with pytest.raises(ValueError, match=r"backbone must return \[n, d\] features"):
    init_variables(TransferModel(Bad()), jax.random.key(0), jnp.ones((2, 3), jnp.float32))
