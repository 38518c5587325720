"""SVHN-scale digit backbones: TLlib's DTN and the DANN paper's SVHN network."""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from dtl_jax.models.layers import BatchNorm
from dtl_jax.models.lenet import _check_image


class DTN(nn.Module):
  """DTN (Taigman et al. 2017 / TLlib ``dtn``) for 32x32 digits.

  Three blocks conv5 (stride 2, pad 2) -> BN -> Dropout2d -> ReLU with 64 / 128 / 256
  channels and drop rates 0.1 / 0.3 / 0.5, then flatten -> fc-512 -> BN -> ReLU ->
  Dropout(0.5). ``x: [n, 32, 32, c] -> [n, 512]``. Names ``conv1..3``, ``bn1..3``,
  ``fc``, ``bn_fc``.
  """

  features: int = 512
  frozen_bn: tuple[str, ...] = ()
  bn_axis_name: str | None = None
  dtype: Any = None
  stages: ClassVar[tuple[str, ...]] = ("conv1|bn1", "conv2|bn2", "conv3|bn3", "fc|bn_fc")

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    _check_image(x, "DTN")
    for i, (c, rate) in enumerate(zip((64, 128, 256), (0.1, 0.3, 0.5), strict=True), start=1):
      x = nn.Conv(
        c,
        (5, 5),
        strides=(2, 2),
        padding=((2, 2), (2, 2)),
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=f"conv{i}",
      )(x)
      x = BatchNorm(name=f"bn{i}")(x, train=train)
      x = nn.Dropout(rate, broadcast_dims=(1, 2), deterministic=not train)(x)
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x)
    x = nn.relu(BatchNorm(name="bn_fc")(x, train=train))
    return nn.Dropout(0.5, deterministic=not train)(x)


class DANNSVHNNet(nn.Module):
  """Feature extractor of DANN's SVHN -> MNIST network (Ganin & Lempitsky, ICML 2015).

  conv5-64 -> ReLU -> maxpool3/2 -> conv5-64 -> ReLU -> maxpool3/2 -> conv5-128 -> ReLU
  -> flatten (convs padded 2). ``x: [n, 32, 32, c] -> [n, 7 * 7 * 128]``. The paper's
  label predictor is ``Classifier(10, hidden=(3072, 2048))`` and its domain classifier
  ``Classifier(1, hidden=(1024, 1024))``.
  """

  dtype: Any = None
  stages: ClassVar[tuple[str, ...]] = ("conv1", "conv2", "conv3")

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    _check_image(x, "DANNSVHNNet")
    kw = dict(padding=((2, 2), (2, 2)), dtype=self.dtype, param_dtype=jnp.float32)
    x = nn.relu(nn.Conv(64, (5, 5), name="conv1", **kw)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = nn.relu(nn.Conv(64, (5, 5), name="conv2", **kw)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = nn.relu(nn.Conv(128, (5, 5), name="conv3", **kw)(x))
    return x.reshape(x.shape[0], -1)
