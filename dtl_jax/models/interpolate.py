"""Bicubic resizing that reproduces ``torch.nn.functional.interpolate`` (for position embeddings).

Vision Transformers resize their learned position-embedding grid when an image of another
size comes in. The published PyTorch implementations (``transformers``' ViT, DINOv2, CLIP)
call ``F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)``, DINOv2 with
registers with ``antialias=True``. Both are separable linear maps, so they are written here
as two weight matrices ``W_h [out_h, in_h]`` and ``W_w [out_w, in_w]`` computed in float64
NumPy from PyTorch's CPU kernels (``aten/src/ATen/native/UpSample.h`` and
``cpu/UpSampleKernel.cpp``), and applied as ``out = W_h @ grid @ W_w^T``:

* plain bicubic (Keys' cubic convolution with ``A = -0.75``): source coordinate
  ``s = (in / out) * (i + 0.5) - 0.5``, taps ``floor(s) - 1 ... floor(s) + 2`` clamped to
  the border, weights of ``t = s - floor(s)``;
* antialiased bicubic (``A = -0.5`` as PIL): for a scale ``r = in / out`` the kernel is
  stretched by ``max(r, 1)``, centred at ``r * (i + 0.5)``, truncated at the borders and
  renormalized to sum 1.

Keys, "Cubic convolution interpolation for digital image processing", IEEE TASSP 1981.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _cubic1(x: float, a: float) -> float:
  return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0


def _cubic2(x: float, a: float) -> float:
  return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a


def _check_sizes(in_size: int, out_size: int) -> None:
  if int(in_size) < 1 or int(out_size) < 1:
    raise ValueError(f"sizes must be >= 1, got in_size={in_size}, out_size={out_size}")


@functools.lru_cache(maxsize=256)
def _plain_weights(in_size: int, out_size: int) -> np.ndarray:
  a = -0.75
  scale = in_size / out_size
  w = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    src = scale * (i + 0.5) - 0.5
    base = int(np.floor(src))
    t = src - base
    coeffs = (_cubic2(t + 1.0, a), _cubic1(t, a), _cubic1(1.0 - t, a), _cubic2(2.0 - t, a))
    for k, c in enumerate(coeffs):
      w[i, min(max(base - 1 + k, 0), in_size - 1)] += c
  return w


def _aa_filter(x: float) -> float:
  x = abs(x)
  if x < 1.0:
    return _cubic1(x, -0.5)
  if x < 2.0:
    return _cubic2(x, -0.5)
  return 0.0


@functools.lru_cache(maxsize=256)
def _antialias_weights(in_size: int, out_size: int) -> np.ndarray:
  scale = in_size / out_size
  support = 2.0 * scale if scale >= 1.0 else 2.0
  invscale = 1.0 / scale if scale >= 1.0 else 1.0
  w = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    center = scale * (i + 0.5)
    # int() truncates towards zero, as PyTorch's static_cast<int64_t>.
    xmin = max(int(center - support + 0.5), 0)
    xsize = min(int(center + support + 0.5), in_size) - xmin
    taps = [_aa_filter((j + xmin - center + 0.5) * invscale) for j in range(xsize)]
    total = sum(taps)
    for j, tap in enumerate(taps):
      w[i, xmin + j] = tap / total if total != 0.0 else tap
  return w


def bicubic_weights(in_size: int, out_size: int, *, antialias: bool = False) -> np.ndarray:
  """The ``[out_size, in_size]`` matrix of PyTorch's 1-D bicubic resize (float64).

  Args:
    in_size: input length, >= 1.
    out_size: output length, >= 1.
    antialias: PyTorch's ``antialias=True`` kernel (PIL's ``a = -0.5``, widened when
      downsampling) instead of the plain ``a = -0.75`` cubic convolution.

  Returns:
    ``W`` with ``resize(v) = W @ v`` for ``v: [in_size]``; a fresh copy.
  """
  _check_sizes(in_size, out_size)
  fn = _antialias_weights if antialias else _plain_weights
  return fn(int(in_size), int(out_size)).copy()


def resize_bicubic(
  grid: jax.Array,
  size: tuple[int, int],
  *,
  antialias: bool = False,
  precision: Any = jax.lax.Precision.HIGHEST,
) -> jax.Array:
  """Resizes ``grid: [h, w, d]`` to ``[size[0], size[1], d]`` like PyTorch's bicubic.

  Equals ``F.interpolate(grid.permute(2, 0, 1)[None], size=size, mode="bicubic",
  align_corners=False, antialias=antialias)[0].permute(1, 2, 0)`` (to rounding: the
  weights are computed in float64 and cast to ``grid.dtype``).

  Args:
    grid: ``[h, w, d]`` floating array (e.g. a ViT's patch position embeddings).
    size: output ``(height, width)``.
    antialias: see :func:`bicubic_weights`.
    precision: matmul precision (HIGHEST keeps float32 exact on accelerators).

  Returns:
    ``[size[0], size[1], d]`` in ``grid.dtype``.
  """
  if grid.ndim != 3:
    raise ValueError(f"grid must be [h, w, d], got shape {grid.shape}")
  if len(size) != 2:
    raise ValueError(f"size must be (height, width), got {size!r}")
  wh = jnp.asarray(bicubic_weights(grid.shape[0], size[0], antialias=antialias), grid.dtype)
  ww = jnp.asarray(bicubic_weights(grid.shape[1], size[1], antialias=antialias), grid.dtype)
  return jnp.einsum("ih,hwd,jw->ijd", wh, grid, ww, precision=precision)
