"""Domains whose images stay on disk: decoded when a batch asks for them.

A :class:`StreamingDomain` has the attributes of an in-memory
:class:`~dtl_jax.data.domain.Domain` (``x_train``, ``y_train``, ``x_test``, ``y_test``,
``num_classes``, ``class_names``, ``input_shape``, ...), but its ``x_train`` / ``x_test``
are :class:`LazyImages`: array-like views of a lazily decoded source (an image folder, a
TFDS split). Labels are known without decoding; an image is decoded, converted and
resized only when it is read:

* ``x[i]``, ``x[i:j]``, ``x[indices]`` decode those rows (``[k, H, W, C]`` float32);
* ``x.take(indices, axis=0)`` is a sub-view (nothing is decoded);
* ``x.raw(i)`` is example ``i`` as decoded, before the view's transform (the input
  pipeline applies its own train / test transforms to it, see
  :mod:`dtl_jax.data.pipeline`);
* ``np.asarray(x)`` decodes every row: the one explicit way to hold a whole split in
  memory (instance weighting on raw inputs does; training and evaluation never do).

``folder:<path>`` and ``tfds:<name>`` domains (:mod:`dtl_jax.data.external`) are
streaming domains; the bundled domains are small and stay in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from dtl_jax.data.domain import check_labels
from dtl_jax.data.sources import Transform


class Decodable(Protocol):
  """A random-access source of raw examples: ``len(source)``, ``source.decode(i)``."""

  def __len__(self) -> int: ...

  def decode(self, index: int) -> np.ndarray: ...


class LazyImages:
  """``[n, H, W, C]`` float32 images of a lazily decoded source (module docstring).

  Args:
    source: has ``len()`` and ``decode(i) -> [h, w, c]`` (uint8 or float in [0, 1]),
      e.g. an :class:`~dtl_jax.data.folder.ImageFolder` or a
      :class:`~dtl_jax.data.tfds_source.TFDSSource`.
    transform: deterministic ``transform(raw, rng) -> [H, W, C]`` float32 applied when a
      row is read (e.g. :func:`dtl_jax.data.transforms.resize_transform`); ``None``: the
      decoded example converted to float32 in [0, 1].
    indices: the rows of ``source`` this view shows, in order (default: all).
    example_shape: the shape of one transformed row; default: found by reading row 0
      (once, on first use).
  """

  dtype = np.dtype(np.float32)

  def __init__(
    self,
    source: Decodable,
    *,
    transform: Transform | None = None,
    indices: np.ndarray | None = None,
    example_shape: Sequence[int] | None = None,
  ):
    self.source = source
    self.transform = transform
    self.indices = (
      np.arange(len(source), dtype=np.int64)
      if indices is None
      else np.asarray(indices, np.int64).reshape(-1)
    )
    if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(source)):
      raise ValueError(
        f"indices must lie in [0, {len(source)}), got [{self.indices.min()}, {self.indices.max()}]."
      )
    self._example_shape = None if example_shape is None else tuple(int(s) for s in example_shape)

  def __len__(self) -> int:
    return int(self.indices.shape[0])

  @property
  def example_shape(self) -> tuple[int, ...]:
    """The shape of one (transformed) row."""
    if self._example_shape is None:
      if not len(self):
        raise ValueError("an empty view has no example shape; pass example_shape=.")
      self._example_shape = tuple(self._row(0).shape)
    return self._example_shape

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self), *self.example_shape)

  @property
  def ndim(self) -> int:
    return 1 + len(self.example_shape)

  def raw(self, i: int) -> np.ndarray:
    """Row ``i`` as decoded (before this view's transform)."""
    return self.source.decode(int(self.indices[i]))

  def _row(self, i: int) -> np.ndarray:
    raw = self.raw(i)
    if self.transform is None:
      x = np.asarray(raw)
      x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
      return x[..., None] if x.ndim == 2 else x
    return np.asarray(self.transform(raw, np.random.default_rng(0)), np.float32)

  def _positions(self, key: Any) -> np.ndarray:
    if isinstance(key, slice):
      return np.arange(len(self))[key]
    pos = np.asarray(key)
    if pos.dtype == bool:
      if pos.shape != (len(self),):
        raise IndexError(f"a boolean mask must have shape ({len(self)},), got {pos.shape}.")
      return np.flatnonzero(pos)
    if not np.issubdtype(pos.dtype, np.integer):
      raise IndexError(f"rows must be selected by int, slice or int array, got {key!r}.")
    pos = np.where(pos < 0, pos + len(self), pos)
    if pos.size and (pos.min() < 0 or pos.max() >= len(self)):
      raise IndexError(f"row index out of range for {len(self)} rows.")
    return pos.reshape(-1)

  def __getitem__(self, key: Any) -> np.ndarray:
    """Decodes the rows ``key`` selects (an int gives one ``[H, W, C]`` row)."""
    if isinstance(key, (int, np.integer)):
      i = int(key) + (len(self) if key < 0 else 0)
      if not 0 <= i < len(self):
        raise IndexError(f"row {key} out of range for {len(self)} rows.")
      return self._row(i)
    pos = self._positions(key)
    if not pos.size:
      return np.zeros((0, *self.example_shape), np.float32)
    return np.stack([self._row(int(i)) for i in pos])

  def take(self, indices: Any, axis: int = 0) -> LazyImages:
    """The sub-view of rows ``indices`` (nothing is decoded); ``axis`` must be 0."""
    if axis != 0:
      raise ValueError(f"LazyImages.take supports axis=0 only, got axis={axis}.")
    return LazyImages(
      self.source,
      transform=self.transform,
      indices=self.indices[self._positions(indices)],
      example_shape=self._example_shape,
    )

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    out = self[:]
    return out if dtype is None else out.astype(dtype)

  def __repr__(self) -> str:
    shape = self._example_shape or ("?",)
    return f"LazyImages({len(self)} rows of {shape}, source={type(self.source).__name__})"


@dataclasses.dataclass(frozen=True, eq=False)
class StreamingDomain:
  """A domain whose images are decoded on demand; the interface of ``Domain``.

  Attributes:
    name: e.g. ``"folder:data/office31/amazon/images"``.
    x_train: ``[n_train, H, W, C]`` :class:`LazyImages`.
    y_train: ``[n_train]`` int32 labels.
    x_test: ``[n_test, H, W, C]`` :class:`LazyImages` (may share the source of
      ``x_train``: a folder of class folders is both splits, TLlib's protocol).
    y_test: ``[n_test]`` int32 labels.
    num_classes, class_names, description, ids_train, ids_test: as ``Domain``.
  """

  name: str
  x_train: LazyImages
  y_train: np.ndarray
  x_test: LazyImages
  y_test: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  description: str = ""
  ids_train: np.ndarray | None = None
  ids_test: np.ndarray | None = None

  def __post_init__(self):
    check_labels(self, kind="StreamingDomain")
    for y in (self.y_train, self.y_test):
      y.setflags(write=False)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one example, e.g. ``(224, 224, 3)``."""
    return self.x_train.example_shape

  @property
  def num_train(self) -> int:
    return len(self.x_train)

  @property
  def num_test(self) -> int:
    return len(self.x_test)

  def split(self, split: str) -> tuple[LazyImages, np.ndarray]:
    """Returns ``(x, y)`` of ``split`` in ``{"train", "test"}``."""
    if split not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

  def __repr__(self) -> str:
    return (
      f"StreamingDomain(name={self.name!r}, train={len(self.x_train)}, "
      f"test={len(self.x_test)}, num_classes={self.num_classes})"
    )


class ArrayRows:
  """In-memory ``[n, ...]`` rows as a :class:`Decodable` (``decode(i) = x[i]``)."""

  def __init__(self, x: np.ndarray):
    self.x = x

  def __len__(self) -> int:
    return int(self.x.shape[0])

  def decode(self, index: int) -> np.ndarray:
    return self.x[int(index)]


def with_transform(x: Any, transform: Transform | None) -> Any:
  """``x`` (``[n, ...]`` array or :class:`LazyImages`) seen through ``transform``.

  ``transform`` is applied to the raw rows (a lazy view's own transform is replaced);
  ``None`` returns ``x`` unchanged. Nothing is decoded.
  """
  if transform is None:
    return x
  if isinstance(x, LazyImages):
    return LazyImages(x.source, transform=transform, indices=x.indices)
  return LazyImages(ArrayRows(np.asarray(x)), transform=transform)


def with_test_transform(domain: Any, transform: Transform | None) -> Any:
  """``domain`` (a ``Domain`` or :class:`StreamingDomain`) with both splits seen through
  ``transform`` (``None``: ``domain`` itself)."""
  if transform is None:
    return domain
  return StreamingDomain(
    name=domain.name,
    x_train=with_transform(domain.x_train, transform),
    y_train=domain.y_train,
    x_test=with_transform(domain.x_test, transform),
    y_test=domain.y_test,
    num_classes=domain.num_classes,
    class_names=tuple(domain.class_names),
    description=domain.description,
    ids_train=domain.ids_train,
    ids_test=domain.ids_test,
  )
