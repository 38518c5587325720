"""Bundled digits domains: built offline, checked against scikit-learn / torch / scipy."""

import itertools

import numpy as np
import pytest
import scipy.ndimage
import torch
from sklearn.datasets import load_digits, load_sample_images

from dtl_jax.data import digits as digits_lib
from dtl_jax.data import load_domain, load_pair
from dtl_jax.data.digits import DIGITS_DOMAINS

NATURAL_CHANNELS = {"digits_m": 3}


def reference_upsample(ids, size=28):
  """float64 torch bilinear (align_corners=False) into the centred 20/28 box."""
  raw = load_digits().images[ids] / 16.0
  inner = int(round(20 * size / 28))
  t = torch.from_numpy(raw[:, None].astype(np.float64))
  up = torch.nn.functional.interpolate(
    t, size=(inner, inner), mode="bilinear", align_corners=False
  )[:, 0].numpy()
  out = np.zeros((len(ids), size, size))
  off = (size - inner) // 2
  out[:, off : off + inner, off : off + inner] = up
  return np.clip(out, 0, 1)


@pytest.mark.parametrize("name", DIGITS_DOMAINS)
def test_shapes_dtypes_labels_balance(name):
  d = load_domain(name)
  c = NATURAL_CHANNELS.get(name, 1)
  assert d.x_train.shape[1:] == (28, 28, c) and d.x_test.shape[1:] == (28, 28, c)
  assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
  assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
  assert d.num_classes == 10 and set(d.y_train) == set(range(10)) == set(d.y_test)
  # Own share: 29-31 raw images per class, 20% of each class in the test split.
  raw = np.bincount(np.concatenate([d.y_train, d.y_test]), minlength=10)
  assert raw.min() >= 29 and raw.max() <= 31
  np.testing.assert_array_equal(np.bincount(d.y_test, minlength=10), np.round(0.2 * raw))
  # Labels are those of the raw sklearn images the domain claims to use.
  target = load_digits().target
  np.testing.assert_array_equal(target[d.ids_train], d.y_train)
  np.testing.assert_array_equal(target[d.ids_test], d.y_test)
  assert not d.x_train.flags.writeable


def test_default_pools_are_disjoint_for_every_pair():
  domains = {n: load_domain(n) for n in DIGITS_DOMAINS}
  all_ids = []
  for a, b in itertools.combinations(DIGITS_DOMAINS, 2):
    ids_a = np.concatenate([domains[a].ids_train, domains[a].ids_test])
    ids_b = np.concatenate([domains[b].ids_train, domains[b].ids_test])
    assert not set(ids_a) & set(ids_b), (a, b)
  for d in domains.values():
    ids = np.concatenate([d.ids_train, d.ids_test])
    assert len(set(ids)) == len(ids)
    assert not set(d.ids_train) & set(d.ids_test)
    all_ids.extend(ids)
  assert sorted(all_ids) == list(range(1797))  # the six shares partition the data


@pytest.mark.parametrize("seed", [0, 3])
def test_pool_does_not_depend_on_seed_and_pair_halves_are_disjoint(seed):
  s, t = load_pair("digits", "digits_m", seed=seed)
  ids_s = set(s.ids_train) | set(s.ids_test)
  ids_t = set(t.ids_train) | set(t.ids_test)
  assert not ids_s & ids_t
  assert len(ids_s) + len(ids_t) == 1797
  np.testing.assert_array_equal(sorted(ids_s), digits_lib.pool_indices("digits", "a"))
  assert s.input_shape == t.input_shape == (28, 28, 3)


def test_digits_pixels_match_torch_bilinear_reference():
  d = load_domain("digits", size=32)
  ref = reference_upsample(d.ids_train[:50], size=32)
  np.testing.assert_allclose(d.x_train[:50, ..., 0], ref, atol=1e-5)
  d3 = load_domain("digits", channels=3)
  ref = reference_upsample(d3.ids_test, size=28)
  for ch in range(3):
    np.testing.assert_allclose(d3.x_test[..., ch], ref, atol=1e-5)


def _by_id(domain):
  x = np.concatenate([domain.x_train, domain.x_test])
  ids = np.concatenate([domain.ids_train, domain.ids_test])
  return x[np.argsort(ids)]


def test_inv_and_thick_are_the_documented_transforms():
  base = _by_id(load_domain("digits", pool="all"))[..., 0]
  inv = _by_id(load_domain("digits_inv", pool="all"))[..., 0]
  np.testing.assert_allclose(inv, 1.0 - base, atol=1e-6)
  thick = _by_id(load_domain("digits_thick", pool="all"))[..., 0]
  ref = scipy.ndimage.grey_dilation(base, size=(1, 3, 3), mode="constant", cval=0.0)
  np.testing.assert_allclose(thick, ref, atol=1e-6)


def test_noisy_background_is_rectified_gaussian():
  base = _by_id(load_domain("digits", pool="all"))[..., 0]
  noisy = _by_id(load_domain("digits_noisy", pool="all", noise_std=0.3))[..., 0]
  bg = noisy[base == 0]  # there x = max(0, e), e ~ N(0, 0.3^2)
  assert abs(np.mean(bg == 0) - 0.5) < 0.01
  np.testing.assert_allclose(bg.mean(), 0.3 / np.sqrt(2 * np.pi), rtol=0.03)


def test_rotate_matches_scipy():
  rng = np.random.default_rng(0)
  imgs = reference_upsample(np.arange(4)).astype(np.float32)
  angles = rng.uniform(30, 60, size=4)
  out = digits_lib._rotate(imgs, angles)
  for i in range(4):
    # scipy's rotate turns an image counter-clockwise as displayed (row 0 at top).
    ref = scipy.ndimage.rotate(
      imgs[i].astype(np.float64), angles[i], reshape=False, order=1, mode="constant", cval=0.0
    )
    np.testing.assert_allclose(out[i], np.clip(ref, 0, 1), atol=1e-4)
  d = load_domain("digits_rot")
  assert d.x_train.shape == (d.num_train, 28, 28, 1)


def test_digits_m_is_abs_difference_with_a_photo_crop():
  d = load_domain("digits_m", pool="all")
  base = _by_id(load_domain("digits", pool="all"))[..., 0]
  m = _by_id(d)
  photos = [np.asarray(p, np.float64) / 255.0 for p in load_sample_images().images]
  windows = [
    np.lib.stride_tricks.sliding_window_view(p, (4, 4, 3))[..., 0, :, :, :] for p in photos
  ]
  for i in [0, 1, 500, 1796]:
    # The 4-pixel border is background (digit 0), where the blend equals the photo.
    corner = m[i, :4, :4]
    hits = [
      (k, *np.argwhere(np.all(np.abs(w - corner) < 1e-6, axis=(2, 3, 4)))[0])
      for k, w in enumerate(windows)
      if np.any(np.all(np.abs(w - corner) < 1e-6, axis=(2, 3, 4)))
    ]
    assert hits, f"image {i}: no photo crop found"
    k, top, left = hits[0]
    crop = photos[k][top : top + 28, left : left + 28]
    np.testing.assert_allclose(m[i], np.abs(base[i][..., None] - crop), atol=1e-5)


@pytest.mark.parametrize("name", ["digits", "digits_m", "digits_rot", "digits_noisy"])
def test_determinism(name):
  a = digits_lib.build_digits_domain(name, seed=5)
  b = digits_lib.build_digits_domain(name, seed=5)
  c = digits_lib.build_digits_domain(name, seed=6)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_test, b.y_test)
  assert not np.array_equal(a.ids_test, c.ids_test)  # a different split
  # Same pool regardless of seed.
  assert set(a.ids_train) | set(a.ids_test) == set(c.ids_train) | set(c.ids_test)
  assert load_domain(name, seed=5) is load_domain(name, seed=5)  # cached


def test_errors():
  with pytest.raises(ValueError, match=r"unknown domain name 'svhn_m'.*digits_m.*moons"):
    load_domain("svhn_m")
  with pytest.raises(ValueError, match=r"does not accept option\(s\) \['angle'\]"):
    load_domain("digits", angle=3)
  with pytest.raises(ValueError, match="channels must be None, 1 or 3"):
    load_domain("digits", channels=2)
  with pytest.raises(ValueError, match="pool must be one of"):
    load_domain("digits", pool="c")
  with pytest.raises(ValueError, match="size must be an int >= 8"):
    load_domain("digits", size=4)
  with pytest.raises(ValueError, match="source and target must differ"):
    load_pair("digits", "digits")
  with pytest.raises(ValueError, match="must share the label space"):
    load_pair("digits", "moons")
  # A grayscale domain paired with a colour one has its channel repeated (not an error).
  gray, colour = load_pair("digits", "digits_m", channels=None, size=16)
  assert gray.input_shape == colour.input_shape == (16, 16, 3)
  own = load_domain("digits", pool="a", size=16)
  np.testing.assert_array_equal(gray.x_train, np.repeat(own.x_train, 3, axis=-1))
