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

Images are decoded into memory, resized to ``size`` x ``size`` (option ``size``,
default 224) and, with ``normalize="imagenet"``, normalized with ImageNet's mean and
standard deviation. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dtl_jax.data.domain import Domain, register_prefix

FOLDER_PREFIX = "folder:"
TFDS_PREFIX = "tfds:"
DEFAULT_SIZE = 224


def _check_normalize(normalize: str) -> bool:
  if normalize not in ("none", "imagenet"):
    raise ValueError(f"normalize must be 'none' or 'imagenet', got {normalize!r}.")
  return normalize == "imagenet"


def _folder_builder(path: str):
  root = Path(path).expanduser()
  if not root.is_dir():
    raise ValueError(
      f"data folder {str(root)!r} does not exist; place the images as "
      f"{root}/<class_name>/*.jpg (or {root}/train/... and {root}/val/...), "
      "see the README's 'Real datasets' section"
    )

  def build(*, seed: int = 0, size: int = DEFAULT_SIZE, normalize: str = "none") -> Domain:
    del seed  # the split is given by the folder layout
    from dtl_jax.data import folder, transforms

    tf = transforms.resize_transform(int(size), normalize_imagenet=_check_normalize(normalize))
    splits = [root / "train", root / "val"] if (root / "train").is_dir() else [root, root]
    arrays: list[tuple[np.ndarray, np.ndarray]] = []
    classes: Any = None
    for d in splits:
      src = folder.ImageFolder(str(d), classes=classes, transform=tf)
      classes = src.classes
      x = (
        src.get(np.arange(len(src)))
        if len(src)
        else np.zeros((0, int(size), int(size), 3), np.float32)
      )
      arrays.append((np.asarray(x, np.float32), np.asarray(src.labels, np.int32)))
    return Domain(
      name=f"{FOLDER_PREFIX}{path}",
      x_train=arrays[0][0],
      y_train=arrays[0][1],
      x_test=arrays[1][0],
      y_test=arrays[1][1],
      num_classes=len(classes),
      class_names=tuple(classes),
      description=f"image folder {root}",
    )

  return build


def _tfds_builder(name: str):
  if not name:
    raise ValueError("tfds: needs a dataset name, e.g. tfds:mnist")

  def build(
    *, seed: int = 0, size: int = DEFAULT_SIZE, normalize: str = "none", data_dir: str | None = None
  ) -> Domain:
    del seed  # TFDS splits are fixed
    from dtl_jax.data import transforms
    from dtl_jax.data.tfds_source import load_tfds

    domain = load_tfds(name, data_dir=data_dir, size=int(size), channels=3)
    if not _check_normalize(normalize):
      return domain
    import dataclasses

    return dataclasses.replace(
      domain,
      x_train=transforms.normalize(domain.x_train),
      x_test=transforms.normalize(domain.x_test),
    )

  return build


register_prefix(FOLDER_PREFIX, "an image folder", _folder_builder)
register_prefix(TFDS_PREFIX, "a prepared TFDS dataset", _tfds_builder)
