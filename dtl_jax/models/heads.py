"""Heads on top of a backbone: bottleneck, classifier, domain discriminator.

Initializations (``init_scheme=``):

* ``"default"`` -- Flax's (LeCun normal kernels, zero biases).
* ``"mdd"`` -- Zhang et al., "Bridging Theory and Algorithm for Domain Adaptation"
  (MDD, ICML 2019) / TLlib: bottleneck kernels ``N(0, 0.005^2)`` with bias 0.1,
  classifier kernels ``N(0, 0.01^2)`` with bias 0. MDD's adversarial head is a second
  :class:`Classifier` with the same configuration (``Classifier.adversarial_copy``),
  fed through a gradient reversal layer by the method.
* ``"dann"`` -- Ganin et al. (JMLR 2016) / TLlib's ``DomainDiscriminator``: kernels
  ``N(0, 0.01^2)`` hidden, ``N(0, 0.3^2)`` output, biases 0 (Caffe DANN code).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dtl_jax.models.layers import BatchNorm

_INITS = ("default", "mdd", "dann")


def _dense(features: int, *, std: float | None, bias: float, name: str, dtype: Any) -> nn.Dense:
  kernel_init = (
    nn.initializers.lecun_normal() if std is None else nn.initializers.normal(stddev=std)
  )
  return nn.Dense(
    features,
    kernel_init=kernel_init,
    bias_init=nn.initializers.constant(bias),
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )


def _check_init(init: str) -> None:
  if init not in _INITS:
    raise ValueError(f"init_scheme must be one of {_INITS}, got {init!r}")


def _check_features(x: jax.Array, name: str) -> None:
  if x.ndim != 2:
    raise ValueError(f"{name}: input must be [n, d], got shape {x.shape}")


class Bottleneck(nn.Module):
  """TLlib bottleneck: Linear(d -> features) -> BatchNorm1d -> ReLU -> Dropout.

  ``[n, d] -> [n, features]``. Module names: ``fc``, ``bn``.

  Attributes:
    features: bottleneck width (TLlib: 256).
    dropout: dropout rate after the ReLU (MDD uses 0.5; 0 disables).
    batch_norm: include the BatchNorm layer.
    init_scheme: ``"default"`` or ``"mdd"`` (kernel ``N(0, 0.005^2)``, bias 0.1).
  """

  features: int = 256
  dropout: float = 0.5
  batch_norm: bool = True
  init_scheme: str = "default"
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    _check_init(self.init_scheme)
    _check_features(x, "Bottleneck")
    std, bias = (0.005, 0.1) if self.init_scheme == "mdd" else (None, 0.0)
    x = _dense(self.features, std=std, bias=bias, name="fc", dtype=self.dtype)(x)
    if self.batch_norm:
      x = BatchNorm(name="bn")(x, train=train)
    x = nn.relu(x)
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x


class Classifier(nn.Module):
  """Linear classifier, optionally with hidden layers (MDD's two-layer head).

  ``[n, d] -> [n, num_classes]`` logits. With ``hidden=(h1, ...)``:
  Linear -> ReLU -> Dropout per hidden layer (names ``fc1``, ``fc2``, ...), then the
  output layer ``fc``.

  Attributes:
    num_classes: number of logits.
    hidden: widths of hidden layers (MDD: ``(1024,)``).
    dropout: dropout after each hidden layer.
    init_scheme: ``"default"`` or ``"mdd"`` (every kernel ``N(0, 0.01^2)``, biases 0).
  """

  num_classes: int
  hidden: Sequence[int] = ()
  dropout: float = 0.0
  init_scheme: str = "default"
  dtype: Any = None

  @nn.nowrap
  def adversarial_copy(self) -> Classifier:
    """MDD's adversarial head: same shape and init, independent parameters."""
    return self.clone(parent=None, name=None)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    _check_init(self.init_scheme)
    _check_features(x, "Classifier")
    if self.num_classes < 1:
      raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
    std = 0.01 if self.init_scheme in ("mdd", "dann") else None
    for i, h in enumerate(self.hidden):
      x = nn.relu(_dense(h, std=std, bias=0.0, name=f"fc{i + 1}", dtype=self.dtype)(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return _dense(self.num_classes, std=std, bias=0.0, name="fc", dtype=self.dtype)(x)


class DomainDiscriminator(nn.Module):
  """Domain discriminator / critic: ``(Linear -> [BN] -> ReLU -> [Dropout])`` per hidden
  width, then ``Linear -> 1``.

  ``[n, d] -> [n]`` domain **logits** (source = 1); apply ``sigmoid`` for
  probabilities. The one discriminator of the library, used by DANN, CDAN, ADDA, WDGRL
  (as the critic) and domain confusion (Ganin et al., JMLR 2016; Long et al., NeurIPS
  2018; Tzeng et al., CVPR 2017; Shen et al., AAAI 2018). The default is TLlib's
  ``DomainDiscriminator``: two hidden layers of 1024 with BatchNorm; TLlib's variant
  without BatchNorm is ``batch_norm=False, dropout=0.5``. Module names: ``fc1``,
  ``bn1``, ``fc2``, ``bn2``, ..., output ``fc<len(hidden) + 1>``.

  Attributes:
    hidden: hidden widths (an int ``h`` means ``(h, h)``); ``()`` is a logistic
      regression on the input.
    batch_norm: BatchNorm after each hidden Linear.
    dropout: dropout after each hidden ReLU (0 = none).
    init_scheme: ``"default"`` or ``"dann"``.
    bn_axis_name: named axis for BN statistics when run under ``pmap``.
  """

  hidden: int | Sequence[int] = (1024, 1024)
  batch_norm: bool = True
  dropout: float = 0.0
  init_scheme: str = "default"
  bn_axis_name: str | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    _check_init(self.init_scheme)
    _check_features(x, "DomainDiscriminator")
    widths = (self.hidden, self.hidden) if isinstance(self.hidden, int) else tuple(self.hidden)
    dann = self.init_scheme == "dann"
    for i, h in enumerate(widths, 1):
      x = _dense(h, std=0.01 if dann else None, bias=0.0, name=f"fc{i}", dtype=self.dtype)(x)
      if self.batch_norm:
        x = BatchNorm(name=f"bn{i}", axis_name=self.bn_axis_name)(x, train=train)
      x = nn.relu(x)
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = _dense(
      1, std=0.3 if dann else None, bias=0.0, name=f"fc{len(widths) + 1}", dtype=self.dtype
    )(x)
    return x[:, 0]
