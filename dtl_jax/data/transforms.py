"""Image preprocessing in NumPy / PIL, as TLlib's train and test transforms.

Every transform has the signature ``transform(image, rng) -> np.ndarray`` where
``image`` is an ``[H, W, C]`` uint8 (or float in [0, 1]) array or a PIL image and
``rng`` a ``np.random.Generator``; the output is ``[h, w, C]`` float32. Given the same
``rng`` state the output is identical (the samplers seed ``rng`` per example from
``(seed, step)``).

TLlib (``tllib/vision/transforms`` and ``examples/.../utils.py``, "default" resizing):

* train: ``ResizeImage(256)`` -> ``RandomResizedCrop(224)`` -> ``RandomHorizontalFlip``
  -> ``ToTensor`` -> ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``;
* test:  ``ResizeImage(256)`` -> ``CenterCrop(224)`` -> ``ToTensor`` -> ``Normalize``.

* digits (``--train-resizing res. --val-resizing res. --no-hflip --norm-mean 0.5
  --norm-std 0.5`` in TLlib's digits scripts, e.g. ``dann.sh``): ``ResizeImage(28 or 32)``
  -> ``ToTensor`` -> ``Normalize(0.5, 0.5)``, for training and test alike.

``ResizeImage(s)`` resizes to exactly ``s x s`` (not the shorter side). Output is
channels-last (NHWC once batched), unlike PyTorch's CHW.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_pil(image):
  from PIL import Image

  if isinstance(image, Image.Image):
    return image
  arr = np.asarray(image)
  if arr.dtype != np.uint8:
    arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  return Image.fromarray(arr)


def _to_float(image) -> np.ndarray:
  arr = np.asarray(image)
  if arr.ndim == 2:
    arr = arr[..., None]
  if arr.dtype == np.uint8:
    return arr.astype(np.float32) / 255.0
  return arr.astype(np.float32)


def _size2(size) -> tuple[int, int]:
  if isinstance(size, (int, np.integer)):
    size = (int(size), int(size))
  h, w = (int(s) for s in size)
  if h < 1 or w < 1:
    raise ValueError(f"size must be positive, got {size!r}.")
  return h, w


def resize(image, size: int | Sequence[int]):
  """Bilinear resize to exactly ``size`` (int: ``size x size``; or ``(h, w)``); PIL out."""
  h, w = _size2(size)
  from PIL import Image

  return _to_pil(image).resize((w, h), Image.Resampling.BILINEAR)


def resize_shorter(image, size: int):
  """Bilinear resize so that the shorter side is ``size`` (torchvision ``Resize(int)``)."""
  pil = _to_pil(image)
  w, h = pil.size
  if h <= w:
    new = (int(size * w / h), int(size))
  else:
    new = (int(size), int(size * h / w))
  from PIL import Image

  return pil.resize(new, Image.Resampling.BILINEAR)


def center_crop(image, size: int | Sequence[int]):
  """Central ``size`` crop (torchvision rounding: ``top = round((H - h) / 2)``)."""
  ch, cw = _size2(size)
  pil = _to_pil(image)
  w, h = pil.size
  if ch > h or cw > w:
    raise ValueError(f"crop size {(ch, cw)} exceeds the image size {(h, w)}.")
  top = int(round((h - ch) / 2.0))
  left = int(round((w - cw) / 2.0))
  return pil.crop((left, top, left + cw, top + ch))


def random_resized_crop_box(
  height: int, width: int, rng: np.random.Generator, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
  """``(top, left, h, w)`` of torchvision's ``RandomResizedCrop`` (10 tries, then centre).

  Area fraction ``~ U(scale)``, log aspect ratio ``~ U(log ratio)``.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
  image,
  rng: np.random.Generator,
  size: int | Sequence[int],
  *,
  scale=(0.08, 1.0),
  ratio=(3 / 4, 4 / 3),
):
  """Random area / aspect crop resized (bilinear) to ``size``; PIL out."""
  oh, ow = _size2(size)
  pil = _to_pil(image)
  w, h = pil.size
  top, left, ch, cw = random_resized_crop_box(h, w, rng, scale=scale, ratio=ratio)
  from PIL import Image

  return pil.resize((ow, oh), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))


def hflip(image) -> np.ndarray:
  """Horizontal flip of ``[H, W, C]``."""
  return np.asarray(image)[:, ::-1]


def normalize(
  x: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
  """``(x - mean) / std`` per channel on ``[..., C]`` float32 (ImageNet stats default)."""
  x = np.asarray(x, np.float32)
  m = np.asarray(mean, np.float32)
  s = np.asarray(std, np.float32)
  if m.shape[-1] != x.shape[-1] or s.shape[-1] != x.shape[-1]:
    raise ValueError(
      f"mean/std have {m.shape[-1]}/{s.shape[-1]} channels but x "
      f"has {x.shape[-1]} (shape {x.shape})."
    )
  return (x - m) / s


def train_transform(
  *,
  resize_size: int | None = 256,
  crop_size: int = 224,
  scale=(0.08, 1.0),
  ratio=(3 / 4, 4 / 3),
  horizontal_flip: bool = True,
  normalize_imagenet: bool = True,
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
  """TLlib's training transform: resize, random-resized crop, flip, normalise.

  Args:
    resize_size: first resize to ``resize_size x resize_size`` (``None``: skip).
    crop_size: output side.
    scale, ratio: ``RandomResizedCrop`` ranges.
    horizontal_flip: flip with probability 1/2.
    normalize_imagenet: apply ImageNet mean / std.

  Returns:
    ``transform(image, rng) -> [crop_size, crop_size, C]`` float32.
  """

  def transform(image, rng: np.random.Generator) -> np.ndarray:
    img = resize(image, resize_size) if resize_size else _to_pil(image)
    img = random_resized_crop(img, rng, crop_size, scale=scale, ratio=ratio)
    x = _to_float(img)
    if horizontal_flip and rng.uniform() < 0.5:
      x = hflip(x)
    return np.ascontiguousarray(normalize(x) if normalize_imagenet else x)

  return transform


def test_transform(
  *, resize_size: int | None = 256, crop_size: int = 224, normalize_imagenet: bool = True
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
  """TLlib's test transform: resize, centre crop, normalise (deterministic)."""

  def transform(image, rng: np.random.Generator | None = None) -> np.ndarray:
    del rng
    img = resize(image, resize_size) if resize_size else _to_pil(image)
    x = _to_float(center_crop(img, crop_size))
    return np.ascontiguousarray(normalize(x) if normalize_imagenet else x)

  return transform


# Not a pytest test when imported into a test module. (mypy does not type function
# attributes.)
test_transform.__test__ = False  # type: ignore[attr-defined]


def resize_transform(
  size: int | Sequence[int], *, normalize_imagenet: bool = False
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
  """Plain resize to ``size`` then float32 in [0, 1] (optionally ImageNet-normalised)."""

  def transform(image, rng: np.random.Generator | None = None) -> np.ndarray:
    del rng
    x = _to_float(resize(image, size))
    return normalize(x) if normalize_imagenet else x

  return transform


def digits_transform(
  size: int | Sequence[int], *, mean: float = 0.5, std: float = 0.5
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
  """TLlib's digits transform (train and test): resize to ``size``, ``(x - mean) / std``.

  ``ResizeImage(size)`` -> ``ToTensor`` -> ``Normalize(mean, std)`` with one ``mean`` /
  ``std`` for every channel (TLlib passes 0.5 for MNIST -> USPS and SVHN -> MNIST).
  """
  if std <= 0:
    raise ValueError(f"std must be > 0, got {std!r}.")

  def transform(image, rng: np.random.Generator | None = None) -> np.ndarray:
    del rng
    x = _to_float(resize(image, size))
    return (x - np.float32(mean)) / np.float32(std)

  return transform
