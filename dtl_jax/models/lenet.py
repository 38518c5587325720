"""Digit backbones: TLlib's LeNet and the DANN paper's MNIST network.

Inputs are NHWC; flattening follows NHWC order (``[h, w, c]``). 2x2 max-pooling is
:func:`~dtl_jax.models.layers.max_pool_2x2` (same values as ``nn.max_pool``, a much
cheaper backward on CPU).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from dtl_jax.models.layers import PatchConv, max_pool_2x2


def _check_image(x: jax.Array, name: str) -> None:
  if x.ndim != 4:
    raise ValueError(f"{name}: x must be NHWC [n, h, w, c], got shape {x.shape}")


class LeNet(nn.Module):
  """LeNet as in TLlib's digit experiments (LeCun et al. 1998 variant).

  conv5-20 -> maxpool2 -> ReLU -> conv5-50 -> Dropout2d(0.5) -> maxpool2 -> ReLU ->
  flatten -> fc-500 -> ReLU -> Dropout(0.5). ``x: [n, 28, 28, c] -> [n, 500]``.
  Module names ``conv1``, ``conv2``, ``fc``.

  Attributes:
    features: width of the last layer (500).
    dropout: rate of both dropouts (0.5).
    dtype: computation dtype (None: the input's); parameters stay float32.
    patch_convs: names of the convolutions (``"conv1"``, ``"conv2"``) computed as
      im2col + matmul (:class:`~dtl_jax.models.layers.PatchConv`, same parameters and
      values); faster on CPU for ``conv1`` (``benchmarks/steps.py``).
  """

  features: int = 500
  dropout: float = 0.5
  dtype: Any = None
  patch_convs: tuple[str, ...] = ()
  stages: ClassVar[tuple[str, ...]] = ("conv1", "conv2", "fc")

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    _check_image(x, "LeNet")
    unknown = set(self.patch_convs) - {"conv1", "conv2"}
    if unknown:
      raise ValueError(
        f"LeNet: patch_convs must name 'conv1' and/or 'conv2', got {sorted(unknown)}"
      )

    def conv(features, name):
      if name in self.patch_convs:
        return PatchConv(features, (5, 5), dtype=self.dtype, name=name)
      return nn.Conv(
        features, (5, 5), padding="VALID", dtype=self.dtype, param_dtype=jnp.float32, name=name
      )

    x = conv(20, "conv1")(x)
    x = nn.relu(max_pool_2x2(x))
    x = conv(50, "conv2")(x)
    x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
    x = nn.relu(max_pool_2x2(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x))
    return nn.Dropout(self.dropout, deterministic=not train)(x)


class DANNMNISTNet(nn.Module):
  """Feature extractor of DANN's MNIST -> MNIST-M network (Ganin & Lempitsky, ICML 2015).

  conv5-32 -> ReLU -> maxpool2 -> conv5-48 -> ReLU -> maxpool2 -> flatten.
  ``x: [n, 28, 28, c] -> [n, 768]``. The paper's label predictor is
  ``Classifier(10, hidden=(100, 100))`` and its domain classifier
  ``Classifier(1, hidden=(100,))`` on these features.
  """

  dtype: Any = None
  stages: ClassVar[tuple[str, ...]] = ("conv1", "conv2")

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    _check_image(x, "DANNMNISTNet")
    kw = dict(padding="VALID", dtype=self.dtype, param_dtype=jnp.float32)
    x = max_pool_2x2(nn.relu(nn.Conv(32, (5, 5), name="conv1", **kw)(x)))
    x = max_pool_2x2(nn.relu(nn.Conv(48, (5, 5), name="conv2", **kw)(x)))
    return x.reshape(x.shape[0], -1)
