"""Shared layers: a PyTorch-convention BatchNorm that knows whether it is frozen, and a
fast 2x2 max-pooling.

The BatchNorm here follows ``torch.nn.BatchNorm{1,2}d`` exactly: ``momentum`` is
PyTorch's (new statistic weight, default 0.1 = Flax momentum 0.9), ``epsilon`` 1e-5,
normalization with the biased batch variance and the running variance updated with the
unbiased one (``var * n / (n - 1)``), as PyTorch does.

Frozen BatchNorm (network-based transfer, Yosinski et al. 2014): a layer is *frozen*
when one of the regexes in ``frozen_bn`` of an enclosing module (usually
:class:`~dtl_jax.models.TransferModel`, or a backbone used on its own) fullmatches the
layer's path relative to that module, e.g. ``"backbone/layer1/0/bn1"``, or the path of
one of its variables (``".../scale"``, ``".../bias"``, ``".../mean"``, ``".../var"``).
So the regexes of the parameter rules in :mod:`dtl_jax.params` can be reused directly.
A frozen layer normalizes with its running statistics even when ``train=True`` and
never updates them: its ``batch_stats`` stay bit-identical.

Cross-device statistics: when an enclosing module has ``bn_axis_name`` set (or the
layer's own ``axis_name``), training-mode batch statistics are averaged over that
named axis (``pmap`` / ``shard_map``), so N devices equal one device on the
concatenated batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_BN_VARIABLES = ("scale", "bias", "mean", "var")


def _ancestors(module: nn.Module) -> Iterator[nn.Module]:
  parent = module.parent
  while isinstance(parent, nn.Module):
    yield parent
    parent = parent.parent


def _compile(patterns: Sequence[str] | str | None) -> list[re.Pattern]:
  if patterns is None:
    return []
  if isinstance(patterns, str):
    patterns = (patterns,)
  return [re.compile(p) for p in patterns]


def is_frozen_path(path: Sequence[str], patterns: Sequence[str] | str | None) -> bool:
  """Whether a BatchNorm module at ``path`` (tuple of names) matches ``patterns``.

  Args:
    path: module path relative to the module that holds the patterns.
    patterns: regexes, each fullmatched against ``"a/b/bn"`` and ``"a/b/bn/<var>"``.

  Returns:
    True when any pattern matches.
  """
  joined = "/".join(path)
  candidates = [joined] + [f"{joined}/{v}" for v in _BN_VARIABLES]
  return any(p.fullmatch(c) for p in _compile(patterns) for c in candidates)


class BatchNorm(nn.Module):
  """BatchNorm over the last axis with PyTorch semantics and frozen-layer support.

  ``y = (x - mu) / sqrt(sigma^2 + eps) * scale + bias`` with ``mu, sigma^2`` the batch
  statistics over all axes but the last (``x: [..., c]``) in training mode, the
  running ones otherwise (or when the layer is frozen, see the module docstring).
  Running update: ``m <- (1 - momentum) m + momentum mu``,
  ``v <- (1 - momentum) v + momentum sigma^2 n / (n - 1)`` (Ioffe & Szegedy 2015;
  PyTorch's convention).

  Attributes:
    momentum: PyTorch momentum (weight of the new batch statistic), in (0, 1].
    epsilon: added to the variance.
    axis_name: named axis to average batch statistics over; ``None`` looks for
      ``bn_axis_name`` on an enclosing module.
    frozen: force this layer frozen.
    param_dtype: dtype of scale / bias / running statistics.
  """

  momentum: float = 0.1
  epsilon: float = 1e-5
  axis_name: str | None = None
  frozen: bool = False
  param_dtype: Any = jnp.float32

  def _is_frozen(self) -> bool:
    if self.frozen:
      return True
    own = tuple(self.path)
    for anc in _ancestors(self):
      patterns = getattr(anc, "frozen_bn", None)
      if patterns:
        rel = own[len(tuple(anc.path)) :]
        if is_frozen_path(rel, patterns):
          return True
    return False

  def _axis_name(self) -> str | None:
    if self.axis_name is not None:
      return self.axis_name
    for anc in _ancestors(self):
      name = getattr(anc, "bn_axis_name", None)
      if name is not None:
        return name
    return None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Normalizes ``x: [..., c]``; returns the same shape and dtype."""
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), self.param_dtype))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), self.param_dtype))
    use_batch = train and not self._is_frozen() and not self.is_initializing()
    stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
    xs = x.astype(stat_dtype)
    if use_batch:
      axes = tuple(range(x.ndim - 1))
      n = 1
      for a in axes:
        n *= x.shape[a]
      mean = jnp.mean(xs, axis=axes)
      axis_name = self._axis_name()
      if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
        n = n * jax.lax.psum(1, axis_name)
      var = jnp.mean(jnp.square(xs - mean), axis=axes)
      if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
      m = self.momentum
      unbiased = var * (n / jnp.maximum(n - 1, 1))
      ra_mean.value = ((1 - m) * ra_mean.value + m * mean).astype(self.param_dtype)
      ra_var.value = ((1 - m) * ra_var.value + m * unbiased).astype(self.param_dtype)
    else:
      mean, var = ra_mean.value.astype(stat_dtype), ra_var.value.astype(stat_dtype)
    y = (xs - mean) * jax.lax.rsqrt(var + self.epsilon)
    y = y * scale.astype(stat_dtype) + bias.astype(stat_dtype)
    return y.astype(x.dtype)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2, stride-2 max pooling of NHWC ``x`` as a reshape and two elementwise maxima.

  ``[n, h, w, c] -> [n, h // 2, w // 2, c]``; like ``nn.max_pool(x, (2, 2),
  strides=(2, 2))`` (VALID padding: an odd last row / column is dropped) and equal to it
  value for value. The window's four inputs are compared pairwise (the two rows, then
  the two columns), so forward and backward are elementwise compares and selects that
  XLA fuses into a pass or two over the tensor. ``nn.max_pool``'s ``reduce_window``
  differentiates to XLA's ``select_and_scatter``, which dominated the CPU profile of a
  LeNet training step (benchmarks/steps.py); a ``reduce_max`` over the window (this
  function before) differentiates to a mask, a tie count and a division, 4.8x slower
  than the pairwise maxima for ReLU + pooling of DANN's first MNIST layer on one core
  (``benchmarks.e2e --profile``). With exact ties the gradient is split between the
  tied inputs, half and half at each comparison (two or four tied inputs: evenly;
  ``nn.max_pool`` gives it all to one of them).
  """
  if x.ndim != 4:
    raise ValueError(f"max_pool_2x2: x must be NHWC [n, h, w, c], got shape {x.shape}")
  n, h, w, c = x.shape
  y = x[:, : h - h % 2, : w - w % 2].reshape(n, h // 2, 2, w // 2, 2, c)
  y = jnp.maximum(y[:, :, 0], y[:, :, 1])  # the window's two rows: [n, h/2, w/2, 2, c]
  return jnp.maximum(y[:, :, :, 0], y[:, :, :, 1])


class PatchConv(nn.Module):
  """VALID, stride-1 2-D convolution as im2col + one matmul; drop-in for ``nn.Conv``.

  ``x: [n, h, w, c] -> [n, h - kh + 1, w - kw + 1, features]`` with the same parameter
  tree as ``nn.Conv(features, kernel_size, padding="VALID")`` (``kernel [kh, kw, c,
  features]``, ``bias [features]``), so checkpoints and converted weights are
  interchangeable. The patch matrix ``[n*ho*wo, kh*kw*c]`` is built from ``kh*kw``
  shifted slices (column ``(i*kw + j)*c + ch``, the row-major order of the kernel).

  Why: XLA's CPU convolution is slow for small inputs with few channels (LeNet's
  ``conv1`` on ``[n, 28, 28, 1]``); one GEMM over the patches is faster there
  (``benchmarks/steps.py`` measures both). On GPU / TPU keep ``nn.Conv``.

  Attributes:
    features: output channels.
    kernel_size: ``(kh, kw)``.
    use_bias: add a bias (True).
    dtype: computation dtype (None: the input's).
    param_dtype: parameter dtype (float32).
  """

  features: int
  kernel_size: tuple[int, int]
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"PatchConv: x must be NHWC [n, h, w, c], got shape {x.shape}")
    kh, kw = self.kernel_size
    n, h, w, c = x.shape
    if h < kh or w < kw:
      raise ValueError(f"PatchConv: input {h}x{w} is smaller than the kernel {kh}x{kw}")
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (kh, kw, c, self.features), self.param_dtype
    )
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    ho, wo = h - kh + 1, w - kw + 1
    cols = jnp.concatenate(
      [x[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    y = cols.reshape(n * ho * wo, kh * kw * c) @ kernel.astype(dtype).reshape(
      kh * kw * c, self.features
    )
    y = y.reshape(n, ho, wo, self.features)
    if self.use_bias:
      y = y + self.param(
        "bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype
      ).astype(dtype)
    return y
