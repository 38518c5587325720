"""Two-moons (DANN toy) and blobs covariate-shift domains."""

import numpy as np
import pytest
from sklearn.datasets import make_moons

from dtl_jax.data import load_domain, load_pair


def _sorted_rows(x, y):
  order = np.lexsort((x[:, 1], x[:, 0], y))
  return x[order], y[order]


def test_moons_geometry_matches_sklearn_and_paper_sizes():
  d = load_domain("moons", noise=0.0)
  ref_x, ref_y = make_moons(n_samples=300, noise=0.0, shuffle=False)
  x, y = _sorted_rows(d.x_train.astype(np.float64), d.y_train)
  rx, ry = _sorted_rows(ref_x, ref_y)
  np.testing.assert_allclose(x, rx, atol=1e-6)
  np.testing.assert_array_equal(y, ry)
  default = load_domain("moons")
  assert default.x_train.shape == (300, 2) and default.x_train.dtype == np.float32
  np.testing.assert_array_equal(np.bincount(default.y_train), [150, 150])
  np.testing.assert_array_equal(np.bincount(default.y_test), [150, 150])


def test_moons_rot_is_rotated_by_35_degrees_about_the_centre():
  d = load_domain("moons_rot", noise=0.0)
  ref_x, ref_y = make_moons(n_samples=300, noise=0.0, shuffle=False)
  a = np.deg2rad(35.0)
  c = np.array([0.5, 0.25])
  rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  ref = (ref_x - c) @ rot.T + c
  x, y = _sorted_rows(d.x_train.astype(np.float64), d.y_train)
  rx, ry = _sorted_rows(ref, ref_y)
  np.testing.assert_allclose(x, rx, atol=1e-6)
  np.testing.assert_array_equal(y, ry)
  # The angle option is honoured: the centroid turns by 90 degrees about the centre.
  d90 = load_domain("moons_rot", noise=0.0, angle=90.0)
  rot90 = np.array([[0.0, -1.0], [1.0, 0.0]])
  np.testing.assert_allclose(d90.x_train.mean(0), (ref_x.mean(0) - c) @ rot90.T + c, atol=1e-6)


def test_moons_scale_centres_and_scales_both_domains():
  # The released DANN script's coordinates: 2 (x - centre); the target is the rotated
  # geometry turned about the new origin.
  ref_x, ref_y = make_moons(n_samples=300, noise=0.0, shuffle=False)
  ref = 2.0 * (ref_x - np.array([0.5, 0.25]))
  a = np.deg2rad(35.0)
  ref_rot = ref @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T
  for name, expected in (("moons", ref), ("moons_rot", ref_rot)):
    d = load_domain(name, noise=0.0, scale=2.0)
    x, y = _sorted_rows(d.x_train.astype(np.float64), d.y_train)
    rx, ry = _sorted_rows(expected, ref_y)
    np.testing.assert_allclose(x, rx, atol=1e-5)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_allclose(d.x_train.mean(0), 0.0, atol=1e-5)  # centred on the origin
  # with noise: the same draws as the default coordinates, mapped
  for name in ("moons", "moons_rot"):
    raw, scaled = load_domain(name, seed=3), load_domain(name, seed=3, scale=0.5)
    for split in ("train", "test"):
      np.testing.assert_allclose(
        getattr(scaled, f"x_{split}"), 0.5 * (getattr(raw, f"x_{split}") - [0.5, 0.25]), atol=1e-6
      )
      np.testing.assert_array_equal(getattr(scaled, f"y_{split}"), getattr(raw, f"y_{split}"))
    assert scaled.x_train.dtype == np.float32


def test_moons_noise_and_independent_draws():
  s, t = load_pair("moons", "moons_rot", seed=1)
  # Train and test are different draws; target is not the rotated source draw.
  assert not np.allclose(s.x_train, s.x_test)
  a = np.deg2rad(-35.0)
  c = np.array([0.5, 0.25])
  unrot = (t.x_train - c) @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T + c
  assert not np.allclose(np.sort(unrot, 0), np.sort(s.x_train, 0), atol=1e-3)


def test_moons_noise_level():
  d = load_domain("moons", n_per_class=2000, noise=0.1, seed=2)
  # Points of the upper moon: distance to the unit circle has std ~0.1 (noise is
  # isotropic, the radial component carries sigma).
  up = d.x_train[d.y_train == 0].astype(np.float64)
  radial = np.linalg.norm(up, axis=1) - 1.0
  np.testing.assert_allclose(radial.std(), 0.1, rtol=0.08)


def test_blobs_covariate_shift():
  s, t = load_pair("blobs", "blobs_shift", dim=3)
  for d in (s, t):
    x = d.x_train.astype(np.float64)
    q = x[:, 1] - 0.5 * x[:, 0] ** 2
    ref = np.select([q < -1, q < 1], [0, 1], 2)
    np.testing.assert_array_equal(d.y_train, ref)
    assert d.x_train.shape == (500, 3) and d.num_classes == 3
  np.testing.assert_allclose(s.x_train.mean(0), [0, 0, 0], atol=0.25)
  np.testing.assert_allclose(t.x_train.mean(0), [1.5, 1.0, 0], atol=0.15)
  np.testing.assert_allclose(s.x_train.std(0), 1.5, rtol=0.12)
  np.testing.assert_allclose(t.x_train.std(0), 0.75, rtol=0.12)
  # The label marginal differs (that is what makes the shift matter).
  assert abs(np.mean(s.y_train == 1) - np.mean(t.y_train == 1)) > 0.1


@pytest.mark.parametrize("name", ["moons", "moons_rot", "blobs", "blobs_shift"])
def test_toy_determinism(name):
  from dtl_jax.data import toy

  build = getattr(toy, f"build_{name}")  # uncached: each call builds anew
  a, b, c = build(seed=4), build(seed=4), build(seed=5)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_test, b.y_test)
  assert not np.array_equal(a.x_train, c.x_train)


def test_toy_errors():
  with pytest.raises(ValueError, match="noise must be >= 0"):
    load_domain("moons", noise=-1.0)
  for bad in (0.0, -2.0, float("nan"), float("inf"), "2", True):
    with pytest.raises(ValueError, match="scale must be None or a finite number > 0"):
      load_domain("moons_rot", scale=bad)
  with pytest.raises(ValueError, match="dim must be >= 2"):
    load_domain("blobs", dim=1)
  with pytest.raises(ValueError, match="accepted by neither"):
    load_pair("moons", "moons_rot", size=3)
