"""Flax ResNet after conversion == PyTorch ResNet on the same random state dict.

torchvision does not import in this environment, so the PyTorch side is a forward pass
written here with ``torch.nn.functional`` directly over the state dict (torchvision's
architecture: stride on the 3x3 conv, symmetric padding, eval-mode BatchNorm eps 1e-5).
The state-dict keys are generated here from torchvision's naming, independently of the
Flax module names.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dtl_jax.models import ResNet, ResNet18
from dtl_jax.models.convert import (
  StateDictMismatchError,
  load_state_dict,
  load_torchvision_resnet,
  resnet_depth_of,
)

CONFIGS = {
  18: ("basic", [2, 2, 2, 2]),
  34: ("basic", [3, 4, 6, 3]),
  50: ("bottleneck", [3, 4, 6, 3]),
}


@pytest.fixture(scope="module", autouse=True)
def _fast_compile_two_torch_threads(fast_compile):
  torch.set_num_threads(2)
  yield


def random_torchvision_state_dict(depth: int, num_classes: int, seed: int) -> dict:
  """A random torchvision-resnet state dict (keys and shapes as torchvision)."""
  g = np.random.default_rng(seed)
  sd = {}

  def conv(name, o, i, k):
    sd[f"{name}.weight"] = (g.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))).astype(
      np.float32
    )

  def bn(name, c, last=False):
    sd[f"{name}.weight"] = g.uniform(0.1, 0.4 if last else 1.2, c).astype(np.float32)
    sd[f"{name}.bias"] = (0.1 * g.standard_normal(c)).astype(np.float32)
    sd[f"{name}.running_mean"] = (0.1 * g.standard_normal(c)).astype(np.float32)
    sd[f"{name}.running_var"] = g.uniform(0.5, 2.0, c).astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

  block, layers = CONFIGS[depth]
  exp = 1 if block == "basic" else 4
  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  inplanes = 64
  for li, (planes, n) in enumerate(zip([64, 128, 256, 512], layers, strict=True)):
    for b in range(n):
      p = f"layer{li + 1}.{b}"
      stride = 2 if (b == 0 and li > 0) else 1
      if block == "basic":
        conv(f"{p}.conv1", planes, inplanes, 3)
        bn(f"{p}.bn1", planes)
        conv(f"{p}.conv2", planes, planes, 3)
        bn(f"{p}.bn2", planes, last=True)
      else:
        conv(f"{p}.conv1", planes, inplanes, 1)
        bn(f"{p}.bn1", planes)
        conv(f"{p}.conv2", planes, planes, 3)
        bn(f"{p}.bn2", planes)
        conv(f"{p}.conv3", planes * exp, planes, 1)
        bn(f"{p}.bn3", planes * exp, last=True)
      if stride != 1 or inplanes != planes * exp:
        conv(f"{p}.downsample.0", planes * exp, inplanes, 1)
        bn(f"{p}.downsample.1", planes * exp)
      inplanes = planes * exp
  sd["fc.weight"] = (g.standard_normal((num_classes, inplanes)) / np.sqrt(inplanes)).astype(
    np.float32
  )
  sd["fc.bias"] = (0.1 * g.standard_normal(num_classes)).astype(np.float32)
  return sd


def torch_resnet_forward(sd: dict, depth: int, x_nchw: np.ndarray) -> np.ndarray:
  """torchvision ResNet.forward in eval mode, with torch.nn.functional."""
  t = {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}

  def bn(x, name):
    return F.batch_norm(
      x,
      t[f"{name}.running_mean"],
      t[f"{name}.running_var"],
      t[f"{name}.weight"],
      t[f"{name}.bias"],
      training=False,
      eps=1e-5,
    )

  def conv(x, name, stride=1, padding=0):
    return F.conv2d(x, t[f"{name}.weight"], stride=stride, padding=padding)

  block, layers = CONFIGS[depth]
  with torch.no_grad():
    x = torch.from_numpy(x_nchw)
    x = F.relu(bn(conv(x, "conv1", 2, 3), "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for li, n in enumerate(layers):
      for b in range(n):
        p = f"layer{li + 1}.{b}"
        stride = 2 if (b == 0 and li > 0) else 1
        identity = x
        if block == "basic":
          y = F.relu(bn(conv(x, f"{p}.conv1", stride, 1), f"{p}.bn1"))
          y = bn(conv(y, f"{p}.conv2", 1, 1), f"{p}.bn2")
        else:
          y = F.relu(bn(conv(x, f"{p}.conv1"), f"{p}.bn1"))
          y = F.relu(bn(conv(y, f"{p}.conv2", stride, 1), f"{p}.bn2"))
          y = bn(conv(y, f"{p}.conv3"), f"{p}.bn3")
        if f"{p}.downsample.0.weight" in t:
          identity = bn(conv(x, f"{p}.downsample.0", stride), f"{p}.downsample.1")
        x = F.relu(y + identity)
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    x = F.linear(x, t["fc.weight"], t["fc.bias"])
  return x.numpy()


@pytest.mark.parametrize("depth,fmt", [(18, "safetensors"), (50, "npz")])
def test_resnet_logits_match_pytorch(depth, fmt, tmp_path):
  num_classes = 10
  sd = random_torchvision_state_dict(depth, num_classes, seed=depth)
  path = tmp_path / f"resnet{depth}.{fmt}"
  if fmt == "safetensors":
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(path))
  else:
    np.savez(path, **sd)
  x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
  expected = torch_resnet_forward(sd, depth, x)

  model = ResNet(depth=depth, num_classes=num_classes)
  variables = load_torchvision_resnet(path, model)
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
    variables, jnp.asarray(x.transpose(0, 2, 3, 1))
  )
  assert logits.dtype == jnp.float32
  assert np.abs(expected).max() > 0.1  # a non-degenerate comparison
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)


def test_pth_and_headless_backbone(tmp_path):
  sd = random_torchvision_state_dict(18, 5, seed=3)
  path = tmp_path / "r18.pth"
  torch.save({"state_dict": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}}, path)
  loaded = load_state_dict(path)
  assert set(loaded) == set(sd)
  # Headless backbone: fc is dropped, features = the pooled activations before fc.
  model = ResNet18()
  variables = load_torchvision_resnet(path, model)
  assert "fc" not in variables["params"]
  x = np.random.default_rng(2).standard_normal((2, 64, 64, 3)).astype(np.float32)
  feats = model.apply(variables, jnp.asarray(x), train=False)
  assert feats.shape == (2, 512)
  full = ResNet18(num_classes=5)
  logits = full.apply(load_torchvision_resnet(sd, full), jnp.asarray(x), train=False)
  np.testing.assert_allclose(
    np.asarray(feats) @ sd["fc.weight"].T + sd["fc.bias"], np.asarray(logits), atol=1e-5
  )


def test_wrong_depth_is_reported():
  sd50 = random_torchvision_state_dict(50, 4, seed=0)
  assert resnet_depth_of(sd50) == 50
  assert resnet_depth_of(random_torchvision_state_dict(34, 4, seed=0)) == 34
  with pytest.raises(ValueError, match=r"state dict is a ResNet-50 .* model is a ResNet-18"):
    load_torchvision_resnet(sd50, ResNet18(num_classes=4))
  with pytest.raises(ValueError, match=r"ResNet-34 .* model is a ResNet-18"):
    load_torchvision_resnet(random_torchvision_state_dict(34, 4, seed=0), ResNet18(num_classes=4))


def test_missing_unexpected_misshaped_keys_are_listed():
  sd = random_torchvision_state_dict(18, 4, seed=0)
  del sd["layer2.1.bn2.running_var"]
  sd["layer9.extra.weight"] = np.zeros(3, np.float32)
  sd["layer3.0.conv1.weight"] = np.zeros((256, 64, 3, 3), np.float32)
  with pytest.raises(StateDictMismatchError) as err:
    load_torchvision_resnet(sd, ResNet18(num_classes=4))
  msg = str(err.value)
  assert "missing keys (1)" in msg and "layer2.1.bn2.running_var" in msg
  assert "unexpected keys (1)" in msg and "layer9.extra.weight" in msg
  assert "mis-shaped keys (1)" in msg
  assert "layer3.0.conv1.weight: state dict (256, 64, 3, 3), model expects (256, 128, 3, 3)" in msg
  # the head size differs from the model's: reported as mis-shaped
  with pytest.raises(
    StateDictMismatchError,
    match=r"fc.weight: state dict \(4, 512\), "
    r"model expects \(7, 512\)",
  ):
    load_torchvision_resnet(random_torchvision_state_dict(18, 4, seed=0), ResNet18(num_classes=7))
