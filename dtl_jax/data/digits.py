"""Bundled digit domains from scikit-learn's handwritten digits (no download).

The raw material is ``sklearn.datasets.load_digits()``: 1,797 real 8x8 grayscale
images (values 0..16) of the digits 0-9 (174-183 per class). Each image is upsampled
bilinearly to an MNIST-like ``inner x inner`` box (``inner = round(20 * size / 28)``)
and zero-padded to ``size x size``, then scaled to [0, 1].

Disjointness by construction (``pool`` option, never depends on ``seed``):

* ``pool="own"`` (default): the 1,797 images are split once, by a fixed permutation
  stratified by class, into six disjoint shares, one per digits domain, in the order
  ``digits, digits_m, digits_rot, digits_inv, digits_thick, digits_noisy`` (image ``i``
  of class ``c`` at position ``p`` of the class's fixed permutation goes to share
  ``p mod 6``). Each share has 29-31 images per class (296-304 in all), so ANY
  two different digits domains loaded with the default are disjoint.
* ``pool="a"`` / ``pool="b"``: the two stratified halves (positions ``p`` even / odd;
  87-92 images per class, about 900 in all). :func:`dtl_jax.data.load_pair` gives
  the source half ``a`` and the target half ``b`` for a larger disjoint pair.
* ``pool="all"``: all 1,797 images (no disjointness guarantee).

Within its pool each domain is split by ``seed`` into train / test, stratified by
class, with ``round(0.2 * n_c)`` test images per class (``own``: about 240 train /
60 test; half: about 720 train / 180 test).

Shifts (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016,
for the MNIST-M recipe):

* ``digits``       grayscale, white digit on black.
* ``digits_m``     MNIST-M: ``|digit - patch|`` per channel, where ``patch`` is a random
  ``size x size`` crop of one of scikit-learn's two bundled colour photos
  (``load_sample_images``); 3 channels.
* ``digits_rot``   each digit rotated by a random angle ``~ U(angle_range)`` degrees
  (default 30-60, counter-clockwise), bilinear, zero fill.
* ``digits_inv``   inverted intensities, ``1 - x`` (black digit on white).
* ``digits_thick`` thick strokes: a 3x3 grey-scale dilation (max filter).
* ``digits_noisy`` additive Gaussian pixel noise ``N(0, noise_std^2)``, clipped to [0, 1].
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os

import numpy as np

from dtl_jax.data.domain import Domain, register_domain

DIGITS_DOMAINS = ("digits", "digits_m", "digits_rot", "digits_inv", "digits_thick", "digits_noisy")
_POOLS = ("own", "a", "b", "all")
_PARTITION_SEED = 1797  # fixed: the partition must not depend on any user seed.
_TEST_FRACTION = 0.2
_CLASS_NAMES = tuple(str(i) for i in range(10))


def _sklearn_datasets_dir() -> str | None:
  """scikit-learn's ``datasets`` folder, found without importing scikit-learn (slow)."""
  spec = importlib.util.find_spec("sklearn")
  if spec is None or not spec.submodule_search_locations:
    return None
  return os.path.join(list(spec.submodule_search_locations)[0], "datasets")


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
  """``load_digits()`` images ``[1797, 8, 8]`` in [0, 1] and targets ``[1797]``."""
  base = _sklearn_datasets_dir()
  path = base and os.path.join(base, "data", "digits.csv.gz")
  if path and os.path.exists(path):
    # The file load_digits() itself reads: 64 pixel columns then the target.
    data = np.loadtxt(path, delimiter=",")
    images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
  else:  # pragma: no cover - layout change in a future scikit-learn.
    from sklearn.datasets import load_digits

    d = load_digits()
    images, target = d.images, d.target
  images = (images / 16.0).astype(np.float32)
  target = target.astype(np.int32)
  images.setflags(write=False)
  target.setflags(write=False)
  return images, target


@functools.lru_cache(maxsize=1)
def _sample_photos() -> tuple[np.ndarray, ...]:
  """``load_sample_images()`` photos (china, flower), ``[427, 640, 3]`` in [0, 1]."""
  base = _sklearn_datasets_dir()
  folder = base and os.path.join(base, "images")
  if folder and os.path.isdir(folder):
    from PIL import Image

    names = sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))
    raw = [np.asarray(Image.open(os.path.join(folder, f)).convert("RGB")) for f in names]
  else:  # pragma: no cover
    from sklearn.datasets import load_sample_images

    raw = load_sample_images().images
  photos = tuple(np.asarray(im, np.float32) / 255.0 for im in raw)
  for p in photos:
    p.setflags(write=False)
  return photos


@functools.lru_cache(maxsize=1)
def _positions() -> np.ndarray:
  """Position ``p`` of every image inside its class's fixed permutation."""
  _, y = _raw_digits()
  rng = np.random.default_rng(_PARTITION_SEED)
  pos = np.empty(len(y), np.int64)
  for c in range(10):
    idx = np.flatnonzero(y == c)
    pos[rng.permutation(idx)] = np.arange(len(idx))
  return pos


def pool_indices(name: str, pool: str = "own") -> np.ndarray:
  """Indices (into ``load_digits()``) of the raw images domain ``name`` draws from.

  Args:
    name: a digits domain name (see :data:`DIGITS_DOMAINS`).
    pool: ``"own"``, ``"a"``, ``"b"`` or ``"all"`` (see the module docstring).

  Returns:
    ``[n_pool]`` sorted int64 indices.
  """
  if name not in DIGITS_DOMAINS:
    raise ValueError(f"name must be one of {DIGITS_DOMAINS}, got {name!r}.")
  if pool not in _POOLS:
    raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}.")
  pos = _positions()
  if pool == "all":
    return np.arange(len(pos), dtype=np.int64)
  if pool == "own":
    return np.flatnonzero(pos % len(DIGITS_DOMAINS) == DIGITS_DOMAINS.index(name))
  return np.flatnonzero(pos % 2 == (0 if pool == "a" else 1))


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
  """``[n_out, n_in]`` bilinear (half-pixel centres) resampling matrix."""
  src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
  src = np.clip(src, 0, n_in - 1)
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, n_in - 1)
  w = src - lo
  m = np.zeros((n_out, n_in), np.float32)
  m[np.arange(n_out), lo] += 1 - w
  m[np.arange(n_out), hi] += w
  return m


def _upsample(images: np.ndarray, size: int) -> np.ndarray:
  """``[n, 8, 8]`` -> ``[n, size, size]``: bilinear into a centred 20/28 box, zero pad."""
  inner = int(round(20 * size / 28))
  r = _interp_matrix(inner, images.shape[1])
  up = np.einsum("ij,njk,lk->nil", r, images, r, optimize=True)
  out = np.zeros((images.shape[0], size, size), np.float32)
  off = (size - inner) // 2
  out[:, off : off + inner, off : off + inner] = up
  return np.clip(out, 0.0, 1.0)


def _rotate(images: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
  """Rotates ``[n, H, W]`` images counter-clockwise about their centre, bilinear."""
  n, h, w = images.shape
  theta = np.deg2rad(angles_deg)[:, None, None]
  yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
  # Inverse map: output pixel (x, y) samples input at R(-theta) (x, y) (y axis down).
  cos, sin = np.cos(theta), np.sin(theta)
  src_x = cos * xx[None] - sin * yy[None] + (w - 1) / 2
  src_y = sin * xx[None] + cos * yy[None] + (h - 1) / 2
  x0 = np.floor(src_x).astype(int)
  y0 = np.floor(src_y).astype(int)
  fx = (src_x - x0).astype(np.float32)
  fy = (src_y - y0).astype(np.float32)
  batch = np.arange(n)[:, None, None]

  def at(yi, xi):
    valid = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    vals = images[batch, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
    return np.where(valid, vals, 0.0)

  out = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * (
    (1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)
  )
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def _dilate(images: np.ndarray) -> np.ndarray:
  """3x3 grey-scale dilation (max filter) of ``[n, H, W]``, zero padding."""
  padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
  h, w = images.shape[1:]
  return np.max(
    np.stack([padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]), axis=0
  )


def _mnist_m_blend(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """MNIST-M: ``|digit - random photo crop|`` per channel; ``[n, S, S] -> [n, S, S, 3]``."""
  photos = _sample_photos()
  n, s, _ = images.shape
  which = np.asarray(rng.integers(0, len(photos), size=n))
  out = np.empty((n, s, s, 3), np.float32)
  for i in range(n):
    photo = photos[which[i]]
    top = rng.integers(0, photo.shape[0] - s + 1)
    left = rng.integers(0, photo.shape[1] - s + 1)
    out[i] = np.abs(images[i][..., None] - photo[top : top + s, left : left + s])
  return out


def _set_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
  """NHWC with the requested channel count (1 <-> 3 by replication / luminance)."""
  if channels is None or x.shape[-1] == channels:
    return x
  if channels == 3 and x.shape[-1] == 1:
    return np.repeat(x, 3, axis=-1)
  if channels == 1 and x.shape[-1] == 3:
    lum = np.asarray([0.299, 0.587, 0.114], np.float32)
    return (x @ lum)[..., None].astype(np.float32)
  raise ValueError(f"channels must be None, 1 or 3, got {channels!r}.")


def _stratified_split(y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  train_parts, test_parts = [], []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    n_test = int(round(_TEST_FRACTION * len(idx)))
    test_parts.append(idx[:n_test])
    train_parts.append(idx[n_test:])
  train, test = np.concatenate(train_parts), np.concatenate(test_parts)
  return rng.permutation(train), rng.permutation(test)


def build_digits_domain(
  name: str,
  *,
  seed: int = 0,
  size: int = 28,
  channels: int | None = None,
  pool: str = "own",
  angle_range: tuple[float, float] = (30.0, 60.0),
  noise_std: float = 0.3,
) -> Domain:
  """Builds one digits domain (prefer :func:`dtl_jax.data.load_domain`, which caches).

  Args:
    name: one of :data:`DIGITS_DOMAINS`.
    seed: train / test split and random transformations.
    size: output height = width (>= 8), e.g. 28 or 32.
    channels: ``None`` (natural: 3 for ``digits_m``, else 1), ``1`` or ``3``.
    pool: which raw images to draw from (``"own"``, ``"a"``, ``"b"``, ``"all"``).
    angle_range: ``digits_rot`` rotation range in degrees.
    noise_std: ``digits_noisy`` noise standard deviation.

  Returns:
    a :class:`Domain` with ``x`` ``[n, size, size, C]`` float32 in [0, 1] and
    ``ids_*`` = indices into ``load_digits()``.
  """
  if not isinstance(size, (int, np.integer)) or size < 8:
    raise ValueError(f"size must be an int >= 8, got {size!r}.")
  if channels not in (None, 1, 3):
    raise ValueError(f"channels must be None, 1 or 3, got {channels!r}.")
  code = DIGITS_DOMAINS.index(name)
  ids = pool_indices(name, pool)
  raw_x, raw_y = _raw_digits()
  y = raw_y[ids]
  x = _upsample(raw_x[ids], int(size))
  rng = np.random.default_rng([seed, code, 1])
  if name == "digits_m":
    x = _mnist_m_blend(x, rng)
  else:
    if name == "digits_rot":
      lo, hi = angle_range
      if not lo <= hi:
        raise ValueError(f"angle_range must be (low, high) with low <= high, got {angle_range}.")
      x = _rotate(x, rng.uniform(lo, hi, size=len(x)))
    elif name == "digits_inv":
      x = 1.0 - x
    elif name == "digits_thick":
      x = _dilate(x)
    elif name == "digits_noisy":
      if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}.")
      x = np.clip(x + rng.normal(0.0, noise_std, size=x.shape).astype(np.float32), 0, 1)
    x = x[..., None]
  x = _set_channels(x.astype(np.float32), channels)
  tr, te = _stratified_split(y, np.random.default_rng([seed, code, 0]))
  return Domain(
    name=name,
    x_train=np.ascontiguousarray(x[tr]),
    y_train=y[tr].astype(np.int32),
    x_test=np.ascontiguousarray(x[te]),
    y_test=y[te].astype(np.int32),
    num_classes=10,
    class_names=_CLASS_NAMES,
    description=_DESCRIPTIONS[name],
    ids_train=ids[tr],
    ids_test=ids[te],
  )


_DESCRIPTIONS = {
  "digits": "sklearn digits (8x8 -> 28x28), grayscale",
  "digits_m": "MNIST-M recipe: |digit - crop of a colour photo|, 3 channels",
  "digits_rot": "digits rotated by U(30, 60) degrees",
  "digits_inv": "digits with inverted intensities (1 - x)",
  "digits_thick": "digits with thick strokes (3x3 dilation)",
  "digits_noisy": "digits with additive Gaussian noise (std 0.3)",
}


def _make_builder(name):
  def builder(
    *, seed: int = 0, size: int = 28, channels: int | None = None, pool: str = "own", **extra
  ) -> Domain:
    return build_digits_domain(name, seed=seed, size=size, channels=channels, pool=pool, **extra)

  # Expose only the options that this domain accepts (load_domain validates them).
  params = [
    inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, default=d)
    for p, d in (("seed", 0), ("size", 28), ("channels", None), ("pool", "own"))
  ]
  if name == "digits_rot":
    params.append(
      inspect.Parameter("angle_range", inspect.Parameter.KEYWORD_ONLY, default=(30.0, 60.0))
    )
  if name == "digits_noisy":
    params.append(inspect.Parameter("noise_std", inspect.Parameter.KEYWORD_ONLY, default=0.3))
  builder.__signature__ = inspect.Signature(params)
  builder.__name__ = f"build_{name}"
  return builder


def pair_options(source: str, target: str) -> tuple[dict, dict]:
  """:func:`dtl_jax.data.load_pair`'s defaults for two digits domains: the source draws
  from pool ``"a"`` and the target from pool ``"b"`` (disjoint halves), both with 3
  channels when either is ``digits_m``, else 1."""
  channels = 3 if "digits_m" in (source, target) else 1
  return {"pool": "a", "channels": channels}, {"pool": "b", "channels": channels}


for _name in DIGITS_DOMAINS:
  register_domain(_name, _DESCRIPTIONS[_name], pair_options=pair_options)(_make_builder(_name))
