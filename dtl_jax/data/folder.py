"""Image folders and TLlib-style image lists, decoded lazily with PIL.

* :class:`ImageFolder`: ``root/<class_name>/**/<image>`` -- the layout of Office-31,
  Office-Home, VisDA-2017 and the PyTorch "ants and bees" tutorial. Classes are the
  sorted sub-folder names (as torchvision's ``ImageFolder``), label ``i`` =
  ``classes[i]``.
* :class:`ImageList`: a text file with one ``<path> <label>`` per line (TLlib's
  ``image_list/*.txt``); relative paths are joined to ``root``.

Both are sources for :class:`~dtl_jax.data.sampler.PairSampler` (``labels`` known
without decoding; ``get`` decodes, converts to RGB (or L) and applies ``transform``).
No TensorFlow is needed.

Errors: a missing root / list file is a ``FileNotFoundError`` naming it; a class
folder without images is a ``ValueError`` naming it (unless
``allow_empty_classes=True``); a file PIL cannot decode raises
:class:`CorruptImageError` naming the file, or, with ``on_corrupt="skip"``, every file
is decoded once at construction and the bad ones are dropped and counted
(``num_skipped``, ``skipped``). Source and target class lists are compared by
:func:`~dtl_jax.data.sources.check_same_classes`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from dtl_jax.data.sources import Transform, _apply, check_same_classes

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class CorruptImageError(ValueError):
  """An image file that PIL cannot decode (the message names the file)."""


def decode_image(path: str, *, mode: str = "RGB") -> np.ndarray:
  """Decodes ``path`` with PIL to ``[H, W, C]`` uint8 (``mode`` ``"RGB"`` or ``"L"``)."""
  from PIL import Image

  try:
    with Image.open(path) as img:
      img.load()
      arr = np.asarray(img.convert(mode))
  except FileNotFoundError:
    raise
  except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError).
    raise CorruptImageError(f"cannot decode image file {path!r}: {e}") from e
  return arr[..., None] if arr.ndim == 2 else arr


class _FileSource:
  """Shared decoding logic of :class:`ImageFolder` and :class:`ImageList`."""

  paths: list[str]
  labels: np.ndarray
  classes: tuple[str, ...]

  def _init_common(self, transform: Transform | None, on_corrupt: str, channels: int) -> None:
    if on_corrupt not in ("raise", "skip"):
      raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}.")
    if channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
    self.transform = transform
    self.on_corrupt = on_corrupt
    self.mode = "RGB" if channels == 3 else "L"
    self.skipped: list[str] = []
    if on_corrupt == "skip":
      keep = []
      for i, p in enumerate(self.paths):
        try:
          decode_image(p, mode=self.mode)
          keep.append(i)
        except CorruptImageError:
          self.skipped.append(p)
      if self.skipped:
        logging.warning("skipped %d corrupt image(s), e.g. %s", len(self.skipped), self.skipped[0])
      self.paths = [self.paths[i] for i in keep]
      self.labels = self.labels[keep]
    if not self.paths:
      raise ValueError(f"{type(self).__name__}: no decodable images found.")

  @property
  def num_skipped(self) -> int:
    return len(self.skipped)

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.classes

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  def __len__(self) -> int:
    return len(self.paths)

  def decode(self, index: int) -> np.ndarray:
    """The raw ``[H, W, C]`` uint8 image ``index``."""
    return decode_image(self.paths[index], mode=self.mode)

  def get(
    self, indices: np.ndarray, *, seeds: np.ndarray | None = None, executor: Any = None
  ) -> np.ndarray:
    rows = [int(i) for i in np.asarray(indices)]
    if executor is not None:
      raw = list(executor.map(self.decode, rows))
    else:
      raw = [self.decode(i) for i in rows]
    if self.transform is not None:
      return _apply(self.transform, raw, seeds, executor)
    shapes = {r.shape for r in raw}
    if len(shapes) > 1:
      raise ValueError(
        f"images in this batch have different shapes {sorted(shapes)}; pass a "
        "transform that outputs a fixed size, e.g. "
        "dtl_jax.data.transforms.resize_transform(224) or train_transform()."
      )
    return np.stack(raw).astype(np.float32) / 255.0


class ImageFolder(_FileSource):
  """``root/<class>/**/<image>`` as a lazily decoded source.

  Args:
    root: dataset folder (e.g. ``office31/amazon/images``).
    classes: expected class names in label order. If given, the sub-folders must be
      exactly these (a mismatch lists the differing classes); default: sorted
      sub-folder names.
    transform: per-example ``transform(image_uint8_hwc, rng) -> float32``; without one,
      images are returned as float32 in [0, 1] and must share a size.
    on_corrupt: ``"raise"`` (default; decoding errors name the file) or ``"skip"``
      (decode everything once now, drop and count the failures).
    allow_empty_classes: keep class folders without images (their label exists but
      is never sampled) instead of raising.
    channels: 3 (RGB) or 1 (L).
    extensions: accepted file suffixes (case-insensitive).
  """

  def __init__(
    self,
    root: str,
    *,
    classes: Sequence[str] | None = None,
    transform: Transform | None = None,
    on_corrupt: str = "raise",
    allow_empty_classes: bool = False,
    channels: int = 3,
    extensions: Sequence[str] = IMG_EXTENSIONS,
  ):
    root = os.fspath(root)
    if not os.path.isdir(root):
      raise FileNotFoundError(f"image folder root {root!r} does not exist or is not a directory.")
    found = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if classes is None:
      classes = found
      if not classes:
        raise ValueError(
          f"image folder root {root!r} has no class sub-folders; expected "
          "root/<class_name>/<image files>."
        )
    else:
      check_same_classes(
        classes, found, what=("expected classes", f"folders in {root!r}"), ordered=False
      )
    self.root = root
    self.classes = tuple(classes)
    exts = tuple(e.lower() for e in extensions)
    paths, labels, empty = [], [], []
    for label, name in enumerate(self.classes):
      files: list[str] = []
      for dirpath, dirnames, filenames in os.walk(os.path.join(root, name)):
        dirnames.sort()
        files.extend(
          os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(exts)
        )
      if not files:
        empty.append(name)
      paths.extend(files)
      labels.extend([label] * len(files))
    if empty and not allow_empty_classes:
      raise ValueError(
        f"class folder(s) without images under {root!r}: {empty}; remove them, or pass "
        "allow_empty_classes=True to keep their labels."
      )
    self.empty_classes = tuple(empty)
    self.paths = paths
    self.labels = np.asarray(labels, np.int32)
    self._init_common(transform, on_corrupt, channels)


class ImageList(_FileSource):
  """TLlib image-list file (``<path> <label>`` per line) as a lazily decoded source.

  Args:
    list_file: the text file.
    root: folder relative paths are joined to (default: the list file's folder).
    classes: class names in label order (default: ``"0" ... str(max label)``);
      labels must lie in ``[0, len(classes))``.
    transform, on_corrupt, channels: as :class:`ImageFolder`.
  """

  def __init__(
    self,
    list_file: str,
    *,
    root: str | None = None,
    classes: Sequence[str] | None = None,
    transform: Transform | None = None,
    on_corrupt: str = "raise",
    channels: int = 3,
  ):
    list_file = os.fspath(list_file)
    if not os.path.isfile(list_file):
      raise FileNotFoundError(f"image list file {list_file!r} does not exist.")
    root = os.path.dirname(os.path.abspath(list_file)) if root is None else os.fspath(root)
    if not os.path.isdir(root):
      raise FileNotFoundError(f"image list root {root!r} does not exist.")
    paths: list[str] = []
    label_list: list[int] = []
    with open(list_file) as f:
      for lineno, line in enumerate(f, 1):
        line = line.strip()
        if not line:
          continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
          raise ValueError(f"{list_file}:{lineno}: expected '<path> <label>', got {line!r}.")
        path, label = parts[0], int(parts[1])
        paths.append(path if os.path.isabs(path) else os.path.join(root, path))
        label_list.append(label)
    if not paths:
      raise ValueError(f"image list file {list_file!r} has no entries.")
    labels = np.asarray(label_list, np.int32)
    if classes is None:
      classes = tuple(str(i) for i in range(int(labels.max()) + 1))
    self.classes = tuple(classes)
    bad = np.flatnonzero((labels < 0) | (labels >= len(self.classes)))
    if bad.size:
      raise ValueError(
        f"{list_file}: label {labels[bad[0]]} of {paths[bad[0]]!r} is outside "
        f"[0, {len(self.classes)})."
      )
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
      raise FileNotFoundError(
        f"{len(missing)} file(s) listed in {list_file!r} do not exist, e.g. {missing[:3]}."
      )
    self.root = root
    self.paths = paths
    self.labels = labels
    self._init_common(transform, on_corrupt, channels)
