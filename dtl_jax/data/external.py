"""Real datasets as domains: ``folder:<path>`` (image folders) and ``tfds:<name>``.

Registered with :func:`dtl_jax.data.domain.register_prefix` when :mod:`dtl_jax.data`
is imported, so that ``load_domain("folder:office31/amazon/images", size=224)`` and a
config's ``data.source = "folder:..."`` work like bundled names.

* ``folder:<root>``: ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` (the
  PyTorch "ants and bees" layout) give the train / test splits; a root with class
  folders directly (Office-31 ``amazon/images``, Office-Home ``Art``) is used whole for
  both splits, TLlib's protocol for unsupervised domain adaptation (the target is
  trained on without labels and tested on all its images).
* ``tfds:<name>``: a prepared TFDS dataset (``tfds.data_source``, no TensorFlow) under
  ``$TFDS_DATA_DIR`` or ``data_dir=``.

Both are :class:`~dtl_jax.data.streaming.StreamingDomain` objects: labels are read when
the domain is opened, images are decoded when a batch needs them (by the input
pipeline's workers, :mod:`dtl_jax.data.pipeline`), resized to ``size`` x ``size``
(option ``size``, default 224) and, with ``normalize="imagenet"``, normalized with
ImageNet's mean and standard deviation. Opening a folder reads every file's header
once, so a file that is not an image is reported before training starts. Nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dtl_jax.data.domain import register_prefix

FOLDER_PREFIX = "folder:"
TFDS_PREFIX = "tfds:"
DEFAULT_SIZE = 224


def _check_normalize(normalize: str) -> bool:
  if normalize not in ("none", "imagenet"):
    raise ValueError(f"normalize must be 'none' or 'imagenet', got {normalize!r}.")
  return normalize == "imagenet"


def check_headers(paths: Sequence[str]) -> None:
  """Opens every file's header with PIL (no pixel decoding).

  Raises:
    CorruptImageError: the first file PIL cannot identify, named.
  """
  from PIL import Image

  from dtl_jax.data.folder import CorruptImageError

  for path in paths:
    try:
      with Image.open(path):
        pass
    except FileNotFoundError:
      raise
    except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError).
      raise CorruptImageError(f"cannot decode image file {path!r}: {e}") from e


def _folder_builder(path: str):
  root = Path(path).expanduser()
  if not root.is_dir():
    raise ValueError(
      f"data folder {str(root)!r} does not exist; place the images as "
      f"{root}/<class_name>/*.jpg (or {root}/train/... and {root}/val/...), "
      "see the README's 'Real datasets' section"
    )

  def build(*, seed: int = 0, size: int = DEFAULT_SIZE, normalize: str = "none") -> Any:
    del seed  # the split is given by the folder layout
    from dtl_jax.data import folder, transforms
    from dtl_jax.data.streaming import LazyImages, StreamingDomain

    tf = transforms.resize_transform(int(size), normalize_imagenet=_check_normalize(normalize))
    shape = (int(size), int(size), 3)
    if (root / "train").is_dir():
      train = folder.ImageFolder(str(root / "train"))
      test = folder.ImageFolder(str(root / "val"), classes=train.classes)
      check_headers(train.paths + test.paths)
    else:
      train = test = folder.ImageFolder(str(root))
      check_headers(train.paths)
    return StreamingDomain(
      name=f"{FOLDER_PREFIX}{path}",
      x_train=LazyImages(train, transform=tf, example_shape=shape),
      y_train=np.asarray(train.labels, np.int32),
      x_test=LazyImages(test, transform=tf, example_shape=shape),
      y_test=np.asarray(test.labels, np.int32),
      num_classes=len(train.classes),
      class_names=tuple(train.classes),
      description=f"image folder {root}",
    )

  return build


def tfds_transform(size: int, *, normalize_imagenet: bool = False):
  """A TFDS record's image (``[h, w, 1 or 3]`` uint8) -> ``[size, size, 3]`` float32:
  bilinear resize, grey repeated to 3 channels, optional ImageNet normalization."""
  from dtl_jax.data import transforms

  resize = transforms.resize_transform(int(size))

  def transform(image: np.ndarray, rng: Any = None) -> np.ndarray:
    x = resize(image, rng)
    if x.shape[-1] == 1:
      x = np.repeat(x, 3, axis=-1)
    return transforms.normalize(x) if normalize_imagenet else x

  return transform


def _tfds_builder(name: str):
  if not name:
    raise ValueError("tfds: needs a dataset name, e.g. tfds:mnist")

  def build(
    *, seed: int = 0, size: int = DEFAULT_SIZE, normalize: str = "none", data_dir: str | None = None
  ) -> Any:
    del seed  # TFDS splits are fixed
    from dtl_jax.data.streaming import LazyImages, StreamingDomain
    from dtl_jax.data.tfds_source import TFDSSource, _spec

    _, _, train_split, test_split = _spec(name, None, None)
    tf = tfds_transform(int(size), normalize_imagenet=_check_normalize(normalize))
    shape = (int(size), int(size), 3)
    splits = [TFDSSource(name, split=s, data_dir=data_dir) for s in (train_split, test_split)]
    return StreamingDomain(
      name=f"{TFDS_PREFIX}{name}",
      x_train=LazyImages(splits[0], transform=tf, example_shape=shape),
      y_train=splits[0].labels,
      x_test=LazyImages(splits[1], transform=tf, example_shape=shape),
      y_test=splits[1].labels,
      num_classes=splits[0].num_classes,
      class_names=splits[0].class_names,
      description=f"TFDS {name}",
    )

  return build


register_prefix(FOLDER_PREFIX, "an image folder", _folder_builder)
register_prefix(TFDS_PREFIX, "a prepared TFDS dataset", _tfds_builder)
