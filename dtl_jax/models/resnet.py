"""ResNet-18/34/50/101 matching torchvision's architecture one-to-one.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, in torchvision's
"v1.5" form: the stride of a bottleneck block sits on the 3x3 conv, all padding is
symmetric (PyTorch's), BatchNorm momentum 0.1 / eps 1e-5 (PyTorch convention, see
:class:`~dtl_jax.models.layers.BatchNorm`). Inputs are NHWC ``[n, h, w, 3]``.

Module names equal torchvision's state-dict keys with ``.`` -> ``/``: ``conv1``,
``bn1``, ``layer1/0/conv1``, ``layer1/0/downsample/0`` (conv), ``.../downsample/1``
(BN), ``fc``. :mod:`dtl_jax.models.convert` relies on this.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from dtl_jax.models.layers import BatchNorm

# torchvision's init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features: int, kernel: int, stride: int, padding: int, name: str, dtype: Any) -> nn.Conv:
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((padding, padding), (padding, padding)),
    use_bias=False,
    kernel_init=_conv_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )


class Downsample(nn.Module):
  """torchvision's ``downsample``: 1x1 conv (``0``) -> BN (``1``)."""

  features: int
  stride: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = _conv(self.features, 1, self.stride, 0, "0", self.dtype)(x)
    return BatchNorm(name="1")(x, train=train)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34). Output channels ``planes``."""

  planes: int
  stride: int = 1
  dtype: Any = None
  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    identity = x
    y = _conv(self.planes, 3, self.stride, 1, "conv1", self.dtype)(x)
    y = nn.relu(BatchNorm(name="bn1")(y, train=train))
    y = _conv(self.planes, 3, 1, 1, "conv2", self.dtype)(y)
    y = BatchNorm(name="bn2")(y, train=train)
    if self.stride != 1 or x.shape[-1] != self.planes:
      identity = Downsample(self.planes, self.stride, self.dtype, name="downsample")(x, train=train)
    return nn.relu(y + identity)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (stride here) -> 1x1 convs (ResNet-50/101). Output ``4 * planes``."""

  planes: int
  stride: int = 1
  dtype: Any = None
  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    out = self.planes * self.expansion
    identity = x
    y = _conv(self.planes, 1, 1, 0, "conv1", self.dtype)(x)
    y = nn.relu(BatchNorm(name="bn1")(y, train=train))
    y = _conv(self.planes, 3, self.stride, 1, "conv2", self.dtype)(y)
    y = nn.relu(BatchNorm(name="bn2")(y, train=train))
    y = _conv(out, 1, 1, 0, "conv3", self.dtype)(y)
    y = BatchNorm(name="bn3")(y, train=train)
    if self.stride != 1 or x.shape[-1] != out:
      identity = Downsample(out, self.stride, self.dtype, name="downsample")(x, train=train)
    return nn.relu(y + identity)


class ResLayer(nn.Module):
  """torchvision's ``layerK``: blocks named ``0``, ``1``, ..."""

  block: str
  planes: int
  blocks: int
  stride: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    cls = BasicBlock if self.block == "basic" else BottleneckBlock
    for i in range(self.blocks):
      x = cls(self.planes, self.stride if i == 0 else 1, self.dtype, name=str(i))(x, train=train)
    return x


RESNET_CONFIGS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
  18: ("basic", (2, 2, 2, 2)),
  34: ("basic", (3, 4, 6, 3)),
  50: ("bottleneck", (3, 4, 6, 3)),
  101: ("bottleneck", (3, 4, 23, 3)),
  152: ("bottleneck", (3, 8, 36, 3)),
}


class ResNet(nn.Module):
  """torchvision ResNet as a backbone.

  ``x: [n, h, w, 3]`` -> pooled features ``[n, 512 * expansion]`` (``num_classes=None``)
  or logits ``[n, num_classes]`` through torchvision's ``fc``.

  Attributes:
    depth: 18, 34, 50, 101 or 152.
    num_classes: size of the ``fc`` layer; ``None`` for a headless backbone.
    frozen_bn: regexes of BatchNorm layers (paths relative to this module, e.g.
      ``"(bn1|layer1/.*)"``) kept in inference mode, see :mod:`dtl_jax.models.layers`.
    bn_axis_name: named axis for cross-device BatchNorm statistics.
    dtype: computation dtype of convs / fc (``None`` = promote from inputs).
  """

  depth: int = 50
  num_classes: int | None = None
  frozen_bn: tuple[str, ...] = ()
  bn_axis_name: str | None = None
  dtype: Any = None

  #: Stage names in forward order (stem first), for :func:`dtl_jax.params.freeze_first_k`.
  stages: ClassVar[tuple[str, ...]] = ("conv1|bn1", "layer1", "layer2", "layer3", "layer4")

  @property
  def out_features(self) -> int:
    """Width of the pooled features: 512 (18/34) or 2048 (50+)."""
    if self.depth not in RESNET_CONFIGS:
      raise ValueError(f"depth must be one of {sorted(RESNET_CONFIGS)}, got {self.depth}")
    return 512 if RESNET_CONFIGS[self.depth][0] == "basic" else 2048

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.depth not in RESNET_CONFIGS:
      raise ValueError(f"depth must be one of {sorted(RESNET_CONFIGS)}, got {self.depth}")
    if x.ndim != 4:
      raise ValueError(f"x must be NHWC [n, h, w, c], got shape {x.shape}")
    block, layers = RESNET_CONFIGS[self.depth]
    x = _conv(64, 7, 2, 3, "conv1", self.dtype)(x)
    x = nn.relu(BatchNorm(name="bn1")(x, train=train))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
      x = ResLayer(block, planes, n, 1 if i == 0 else 2, self.dtype, name=f"layer{i + 1}")(
        x, train=train
      )
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x)
    return x


def ResNet18(**kwargs) -> ResNet:
  """torchvision ``resnet18`` (BasicBlock, [2, 2, 2, 2]), features 512."""
  return ResNet(depth=18, **kwargs)


def ResNet34(**kwargs) -> ResNet:
  """torchvision ``resnet34`` (BasicBlock, [3, 4, 6, 3]), features 512."""
  return ResNet(depth=34, **kwargs)


def ResNet50(**kwargs) -> ResNet:
  """torchvision ``resnet50`` (Bottleneck, [3, 4, 6, 3]), features 2048."""
  return ResNet(depth=50, **kwargs)


def ResNet101(**kwargs) -> ResNet:
  """torchvision ``resnet101`` (Bottleneck, [3, 4, 23, 3]), features 2048."""
  return ResNet(depth=101, **kwargs)
