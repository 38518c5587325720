"""TFDS datasets through ``tfds.data_source`` (random access, no TensorFlow).

``tfds.data_source`` reads datasets prepared in the ``array_record`` (or ``parquet``)
file format under ``data_dir``; it needs neither TensorFlow nor the network. Prepare
the data once on a machine with internet access, e.g.

    tfds build mnist --file_format=array_record --data_dir=/data/tfds

and copy ``/data/tfds`` to the training machine (a TPU VM can also read a
``gs://`` ``data_dir``). ``tensorflow_datasets`` is imported lazily, only by the
functions of this module; ``download=False`` is always passed, so nothing is ever
fetched at run time.

Known datasets and their features (others work by passing ``image_key`` /
``label_key``):

=====================  ==========  ===========  ========================================
name                   image key   label key    default (train, test) splits
=====================  ==========  ===========  ========================================
mnist                  image       label        train, test
svhn_cropped           image       label        train, test
mnist_corrupted/<c>    image       label        train, test
cifar10                image       label        train, test
cifar10_corrupted/<c>  image       label        test[:50%], test[50%:] (test-only data)
domainnet/<d>          image       label        train, test
=====================  ==========  ===========  ========================================
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from dtl_jax.data.domain import Domain
from dtl_jax.data.sources import Transform, _apply
from dtl_jax.data.transforms import resize

TFDS_DATASETS = {
  "mnist": ("image", "label", "train", "test"),
  "svhn_cropped": ("image", "label", "train", "test"),
  "mnist_corrupted": ("image", "label", "train", "test"),
  "cifar10": ("image", "label", "train", "test"),
  "cifar10_corrupted": ("image", "label", "test[:50%]", "test[50%:]"),
  "domainnet": ("image", "label", "train", "test"),
}


def _spec(name: str, image_key, label_key):
  base = name.split("/")[0].split(":")[0]
  if base in TFDS_DATASETS:
    ik, lk, tr, te = TFDS_DATASETS[base]
    return image_key or ik, label_key or lk, tr, te
  if image_key and label_key:
    return image_key, label_key, "train", "test"
  raise ValueError(
    f"unknown TFDS dataset {name!r}: known are {sorted(TFDS_DATASETS)} (with '/<config>' "
    "where the dataset has configs); for another dataset pass image_key= and label_key=."
  )


def open_data_source(name: str, *, split: str, data_dir: str | None = None):
  """``tfds.data_source(name, split=split, data_dir=data_dir, download=False)``.

  Raises:
    FileNotFoundError: when the prepared data cannot be opened, with instructions.
  """
  import tensorflow_datasets as tfds

  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types here.
    base = name.split("/")[0].split(":")[0]
    where = ""
    if data_dir is not None and "://" not in str(data_dir):
      if not os.path.isdir(os.path.join(data_dir, base)):
        where = f" There is no prepared {base!r} folder under data_dir={str(data_dir)!r}."
    detail = " ".join(str(e).split())
    raise FileNotFoundError(
      f"cannot open TFDS dataset {name!r} split {split!r} (data_dir={data_dir!r}).{where}"
      f" Prepare it where there is internet access with `tfds build {base} "
      "--file_format=array_record --data_dir=DIR` (or tfds.builder(...)"
      ".download_and_prepare(file_format='array_record')), copy DIR here and pass "
      f"data_dir=DIR. (tfds: {type(e).__name__}: {detail})"
    ) from e


def _to_float_image(img: np.ndarray, size, channels) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[..., None]
  if size is not None:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    if img.shape[:2] != (h, w):
      img = np.asarray(resize(img, (int(h), int(w))))
      if img.ndim == 2:
        img = img[..., None]
  x = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
  if channels is not None and x.shape[-1] != channels:
    if channels == 3 and x.shape[-1] == 1:
      x = np.repeat(x, 3, axis=-1)
    elif channels == 1 and x.shape[-1] == 3:
      x = (x @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None]
    else:
      raise ValueError(f"channels must be None, 1 or 3, got {channels!r}.")
  return x


class TFDSSource:
  """One split of a TFDS dataset as a lazily decoded source.

  Args:
    name: e.g. ``"mnist"``, ``"svhn_cropped"``, ``"domainnet/clipart"``.
    split: TFDS split string (default: the dataset's train split, see the table).
    data_dir: where the prepared data lives.
    image_key, label_key: feature names (default from the table).
    transform: per-example ``transform(image_uint8_hwc, rng) -> float32``; without one
      images become float32 in [0, 1], resized to ``size`` and converted to
      ``channels`` when those are given.
    size, channels: see ``transform``.

  ``labels`` is read (decoding every record once) on first access; the sampler
  instead takes labels from the same records as the images.
  """

  def __init__(
    self,
    name: str,
    *,
    split: str | None = None,
    data_dir: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    transform: Transform | None = None,
    size: int | None = None,
    channels: int | None = None,
  ):
    self.image_key, self.label_key, default_split, _ = _spec(name, image_key, label_key)
    self.name = name
    self.split = split or default_split
    self.ds = open_data_source(name, split=self.split, data_dir=data_dir)
    if len(self.ds) == 0:
      raise ValueError(f"TFDS {name!r} split {self.split!r} is empty.")
    feature = self.ds.dataset_info.features[self.label_key]
    self.num_classes = int(feature.num_classes)
    names = getattr(feature, "names", None)
    self.class_names = tuple(names) if names else tuple(str(i) for i in range(self.num_classes))
    self.transform = transform
    self.size = size
    self.channels = channels
    self._labels: np.ndarray | None = None
    self._batched_read = hasattr(self.ds, "__getitems__")

  def __len__(self) -> int:
    return len(self.ds)

  def _records(self, indices: Iterable[int]) -> list[dict]:
    rows = [int(i) for i in indices]
    if self._batched_read:
      try:
        return list(self.ds.__getitems__(rows))
      except TypeError:  # e.g. tfds.testing.mock_data's data source.
        self._batched_read = False
    return [self.ds[i] for i in rows]

  @property
  def labels(self) -> np.ndarray:
    if self._labels is None:
      out = np.empty(len(self), np.int32)
      for start in range(0, len(self), 1024):
        recs = self._records(range(start, min(start + 1024, len(self))))
        out[start : start + len(recs)] = [int(r[self.label_key]) for r in recs]
      self._labels = out
    return self._labels

  def decode(self, index: int) -> np.ndarray:
    """The raw ``[H, W, C]`` image of record ``index`` (as stored, before ``transform``)."""
    img = np.asarray(self._records([int(index)])[0][self.image_key])
    return img[..., None] if img.ndim == 2 else img

  def get_items(
    self, indices: np.ndarray, *, seeds: np.ndarray | None = None, executor: Any = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """``(x [b, ...] float32, y [b] int32)`` decoded from the same records."""
    recs = self._records(np.asarray(indices))
    images = [np.asarray(r[self.image_key]) for r in recs]
    y = np.asarray([int(r[self.label_key]) for r in recs], np.int32)
    if self.transform is not None:
      return _apply(self.transform, images, seeds, executor), y
    xs = [_to_float_image(im, self.size, self.channels) for im in images]
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
      raise ValueError(
        f"TFDS {self.name!r} images have different shapes {sorted(shapes)}; "
        "pass size= or a transform."
      )
    return np.stack(xs), y

  def get(
    self, indices: np.ndarray, *, seeds: np.ndarray | None = None, executor: Any = None
  ) -> np.ndarray:
    return self.get_items(indices, seeds=seeds, executor=executor)[0]


def load_tfds(
  name: str,
  *,
  data_dir: str | None = None,
  train_split: str | None = None,
  test_split: str | None = None,
  size: int | None = None,
  channels: int | None = None,
  image_key: str | None = None,
  label_key: str | None = None,
  max_examples: int | None = None,
) -> Domain:
  """Reads a (small) TFDS dataset fully into an in-memory :class:`Domain`.

  For MNIST / SVHN-sized data; use :class:`TFDSSource` with a sampler for large
  datasets such as DomainNet.

  Args:
    name: TFDS name, e.g. ``"mnist"``, ``"svhn_cropped"``, ``"mnist_corrupted/shot_noise"``.
    data_dir: where the prepared data lives.
    train_split, test_split: TFDS split strings (defaults from the table).
    size: resize images to ``size x size`` (bilinear) if given.
    channels: convert to 1 or 3 channels if given (e.g. ``channels=3`` to pair MNIST
      with SVHN).
    image_key, label_key: feature names (defaults from the table).
    max_examples: keep only the first ``max_examples`` of each split.

  Returns:
    a :class:`Domain` with float32 NHWC images in [0, 1] and int32 labels.
  """
  image_key, label_key, tr, te = _spec(name, image_key, label_key)
  if max_examples is not None and max_examples < 1:
    raise ValueError(f"max_examples must be >= 1, got {max_examples}.")
  arrays = []
  for split in (train_split or tr, test_split or te):
    source = TFDSSource(
      name,
      split=split,
      data_dir=data_dir,
      image_key=image_key,
      label_key=label_key,
      size=size,
      channels=channels,
    )
    n = len(source) if max_examples is None else min(len(source), max_examples)
    xs, ys = [], []
    for start in range(0, n, 1024):
      x, y = source.get_items(np.arange(start, min(start + 1024, n)))
      xs.append(x)
      ys.append(y)
    arrays.append((np.concatenate(xs), np.concatenate(ys)))
  return Domain(
    name=name,
    x_train=arrays[0][0],
    y_train=arrays[0][1],
    x_test=arrays[1][0],
    y_test=arrays[1][1],
    num_classes=source.num_classes,
    class_names=source.class_names,
    description=f"TFDS {name}",
  )
