"""Bicubic position-embedding resize == torch.nn.functional.interpolate (float64)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dtl_jax.models.interpolate import bicubic_weights, resize_bicubic

SIZES = [
  ((4, 4), (6, 5)),  # up, non-square output
  ((4, 4), (2, 9)),  # down in h, up in w
  ((7, 7), (3, 3)),  # down: the antialiased kernel widens
  ((37, 37), (16, 24)),  # DINOv2 518/14 grid to a 224x336 image
  ((5, 5), (5, 5)),
]  # same size: identity


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("src,dst", SIZES)
def test_matches_torch_float64(src, dst, antialias):
  grid = np.random.default_rng(0).standard_normal((*src, 6))
  expected = (
    F.interpolate(
      torch.from_numpy(grid).permute(2, 0, 1)[None],
      size=dst,
      mode="bicubic",
      align_corners=False,
      antialias=antialias,
    )[0]
    .permute(1, 2, 0)
    .numpy()
  )
  out = resize_bicubic(jnp.asarray(grid), dst, antialias=antialias)
  assert out.dtype == jnp.float64 and out.shape == (*dst, 6)
  np.testing.assert_allclose(np.asarray(out), expected, atol=1e-12, rtol=0)
  if src == dst:
    np.testing.assert_allclose(np.asarray(out), grid, atol=1e-15)


def test_weights_rows_sum_to_one_and_plain_is_not_antialiased():
  for n_in, n_out in [(4, 9), (9, 4), (16, 37)]:
    for aa in (False, True):
      np.testing.assert_allclose(bicubic_weights(n_in, n_out, antialias=aa).sum(1), 1.0, atol=1e-14)
  # downsampling: the plain kernel keeps 4 taps, the antialiased one spreads over more
  assert (np.abs(bicubic_weights(12, 3)) > 0).sum(1).max() <= 4
  assert (np.abs(bicubic_weights(12, 3, antialias=True)) > 0).sum(1).max() > 4


def test_errors():
  with pytest.raises(ValueError, match="sizes must be >= 1"):
    bicubic_weights(0, 3)
  with pytest.raises(ValueError, match=r"grid must be \[h, w, d\]"):
    resize_bicubic(jnp.zeros((4, 4)), (2, 2))
