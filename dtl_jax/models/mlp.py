"""A multilayer perceptron backbone for tabular data and toy problems (two moons)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from dtl_jax.models.layers import BatchNorm

ACTIVATIONS = {"relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": jnp.tanh}


class MLP(nn.Module):
  """``[n, d] -> [n, hidden[-1]]``: (Linear -> [BN] -> activation -> [Dropout]) per layer.

  Module names ``fc1``, ``bn1``, ``fc2``, ...

  Attributes:
    hidden: layer widths, at least one.
    dropout: dropout after each layer (0 disables).
    batch_norm: BatchNorm after each Linear.
    activation: ``"relu"``, ``"sigmoid"`` (the shallow DANN of Ganin et al., JMLR 2016,
      Algorithm 1: ``G_f(x) = sigm(b + W x)``) or ``"tanh"``.
  """

  hidden: Sequence[int] = (64, 64)
  dropout: float = 0.0
  batch_norm: bool = False
  activation: str = "relu"
  frozen_bn: tuple[str, ...] = ()
  bn_axis_name: str | None = None
  dtype: Any = None
  stages: ClassVar[tuple[str, ...]] = tuple(f"fc{i}|bn{i}" for i in range(1, 9))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if not self.hidden:
      raise ValueError("hidden must name at least one layer width")
    if x.ndim != 2:
      raise ValueError(f"MLP: x must be [n, d], got shape {x.shape}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(
        f"MLP: activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
      )
    act = ACTIVATIONS[self.activation]
    for i, h in enumerate(self.hidden, start=1):
      x = nn.Dense(h, dtype=self.dtype, param_dtype=jnp.float32, name=f"fc{i}")(x)
      if self.batch_norm:
        x = BatchNorm(name=f"bn{i}")(x, train=train)
      x = act(x)
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x
