"""NumPy / PIL preprocessing against independent NumPy references."""

import math

import numpy as np
import pytest
from PIL import Image

from dtl_jax.data import transforms as T


@pytest.fixture
def image(rng):
  return rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)


def test_center_crop_matches_slicing(image):
  out = np.asarray(T.center_crop(image, (20, 30)))
  np.testing.assert_array_equal(out, image[10:30, 15:45])
  out = np.asarray(T.center_crop(image, 25))
  top, left = int(round(15 / 2)), int(round(35 / 2))
  np.testing.assert_array_equal(out, image[top : top + 25, left : left + 25])
  with pytest.raises(ValueError, match="exceeds the image size"):
    T.center_crop(image, 41)


def test_normalize_and_flip(image):
  x = image.astype(np.float32) / 255
  ref = (x.astype(np.float64) - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  out = T.normalize(x)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(T.hflip(image), image[:, ::-1])
  with pytest.raises(ValueError, match="mean/std have 3/3 channels but x has 1"):
    T.normalize(x[..., :1])


def test_resize_sizes(image):
  assert np.asarray(T.resize(image, 16)).shape == (16, 16, 3)
  assert np.asarray(T.resize(image, (10, 20))).shape == (10, 20, 3)
  assert np.asarray(T.resize_shorter(image, 20)).shape == (20, 30, 3)
  # Resizing to the same size is the identity.
  np.testing.assert_array_equal(np.asarray(T.resize(image, (40, 60))), image)


def test_random_resized_crop_box_distribution():
  rng = np.random.default_rng(0)
  areas, ratios = [], []
  for _ in range(400):
    top, left, h, w = T.random_resized_crop_box(200, 300, rng, scale=(0.2, 0.6))
    assert 0 <= top and top + h <= 200 and 0 <= left and left + w <= 300
    areas.append(h * w / (200 * 300))
    ratios.append(w / h)
  assert 0.18 < min(areas) and max(areas) < 0.62
  assert 3 / 4 - 0.05 < min(ratios) and max(ratios) < 4 / 3 + 0.05
  # Fallback (no valid try): a centred crop clipped to the ratio range.
  top, left, h, w = T.random_resized_crop_box(10, 100, np.random.default_rng(0), scale=(0.99, 1.0))
  assert h == 10 and w == int(round(10 * 4 / 3)) and left == (100 - w) // 2


def test_random_resized_crop_full_square_equals_resize(image):
  sq = image[:, :40]
  out = T.random_resized_crop(sq, np.random.default_rng(0), 20, scale=(1, 1), ratio=(1, 1))
  ref = Image.fromarray(sq).resize((20, 20), Image.BILINEAR)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))


def test_train_and_test_transforms(image):
  train = T.train_transform(resize_size=32, crop_size=24)
  a = train(image, np.random.default_rng(3))
  b = train(image, np.random.default_rng(3))
  c = train(image, np.random.default_rng(4))
  assert a.shape == (24, 24, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  test = T.test_transform(resize_size=32, crop_size=24)
  ref = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))[4:28, 4:28]
  ref = (ref / 255.0 - np.array(T.IMAGENET_MEAN)) / np.array(T.IMAGENET_STD)
  np.testing.assert_allclose(test(image, None), ref, atol=1e-5)
  plain = T.resize_transform(8)(image, None)
  assert plain.shape == (8, 8, 3) and 0 <= plain.min() and plain.max() <= 1


def test_flip_probability_is_one_half(image):
  # With a full-image crop, the output is either the resize or its mirror.
  train = T.train_transform(
    resize_size=None, crop_size=40, scale=(1, 1), ratio=(1, 1), normalize_imagenet=False
  )
  sq = image[:, :40]
  base = np.asarray(Image.fromarray(sq).resize((40, 40), Image.BILINEAR)) / 255.0
  flips = 0
  for s in range(200):
    out = train(sq, np.random.default_rng(s))
    if np.allclose(out, base[:, ::-1], atol=1e-6):
      flips += 1
    else:
      np.testing.assert_allclose(out, base, atol=1e-6)
  assert abs(flips / 200 - 0.5) < 3 * math.sqrt(0.25 / 200)
