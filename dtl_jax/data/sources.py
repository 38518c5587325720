"""Random-access example sources consumed by the samplers.

A *source* is anything with

* ``__len__()`` -- number of examples ``n``;
* ``labels`` -- ``[n]`` int32 labels (known without decoding any image);
* ``num_classes`` and ``class_names``;
* ``get(indices, *, seeds=None, executor=None) -> x`` -- the examples at ``indices``
  stacked into ``[b, ...]`` float32; ``seeds`` (``[b]`` int) seeds each example's random
  transform (``np.random.default_rng(seeds[i])``), so a batch is a pure function of the
  indices and seeds; ``executor`` (a ``concurrent.futures.Executor``) may decode in
  parallel.

:class:`ArraySource` wraps in-memory arrays (a :class:`~dtl_jax.data.domain.Domain`
split); :class:`~dtl_jax.data.folder.ImageFolder`, :class:`~dtl_jax.data.folder.ImageList`
and :class:`~dtl_jax.data.tfds_source.TFDSSource` decode lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

# transform(example, rng) -> float32 array; example is an HWC uint8/float array.
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@runtime_checkable
class Source(Protocol):
  """The random-access protocol the samplers use (see module docstring)."""

  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]

  def __len__(self) -> int: ...

  def get(
    self, indices: np.ndarray, *, seeds: np.ndarray | None = None, executor: Any = None
  ) -> np.ndarray: ...


def _apply(transform, examples: Sequence[np.ndarray], seeds, executor):
  if seeds is None:
    seeds = np.zeros(len(examples), np.int64)

  def one(i):
    return np.asarray(transform(examples[i], np.random.default_rng(int(seeds[i]))), np.float32)

  if executor is not None:
    out = list(executor.map(one, range(len(examples))))
  else:
    out = [one(i) for i in range(len(examples))]
  return np.stack(out)


class ArraySource:
  """In-memory ``(x, y)`` arrays as a source.

  Args:
    x: ``[n, ...]`` inputs.
    y: ``[n]`` integer labels in ``[0, num_classes)``.
    num_classes: defaults to ``max(y) + 1``.
    class_names: defaults to ``("0", "1", ...)``.
    transform: optional per-example ``transform(x_i, rng) -> array``.
  """

  def __init__(
    self,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    transform: Transform | None = None,
  ):
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1 or x.shape[0] != y.shape[0]:
      raise ValueError(f"x must be [n, ...] and y [n]; got x {x.shape}, y {y.shape}.")
    if x.shape[0] == 0:
      raise ValueError("x must hold at least one example, got n = 0.")
    self.x = x
    self.labels = y.astype(np.int32)
    self.num_classes = int(num_classes if num_classes is not None else y.max() + 1)
    self.class_names = (
      tuple(class_names)
      if class_names is not None
      else tuple(str(i) for i in range(self.num_classes))
    )
    self.transform = transform

  def __len__(self) -> int:
    return int(self.x.shape[0])

  def get(
    self, indices: np.ndarray, *, seeds: np.ndarray | None = None, executor: Any = None
  ) -> np.ndarray:
    indices = np.asarray(indices)
    if self.transform is None:
      return self.x[indices]
    return _apply(self.transform, [self.x[i] for i in indices], seeds, executor)


def as_source(data: Any, split: str = "train", *, transform: Transform | None = None) -> Source:
  """Turns a Domain (its ``split``), an ``(x, y)`` tuple or a source into a source."""
  from dtl_jax.data.domain import Domain

  if isinstance(data, Domain):
    x, y = data.split(split)
    return ArraySource(
      x, y, num_classes=data.num_classes, class_names=data.class_names, transform=transform
    )
  if isinstance(data, tuple) and len(data) == 2:
    return ArraySource(data[0], data[1], transform=transform)
  if isinstance(data, Source):
    if transform is not None:
      raise ValueError(
        "transform= applies to a Domain or (x, y); a source already has its own transform."
      )
    return data
  raise ValueError(
    "data must be a Domain, an (x, y) tuple or a source with labels/num_classes/"
    f"__len__/get, got {type(data).__name__}."
  )


def check_same_classes(
  source: Any, target: Any, *, what: tuple[str, str] = ("source", "target"), ordered: bool = True
) -> None:
  """Raises ``ValueError`` unless ``source`` and ``target`` share the class list.

  Args:
    source, target: sources / Domains (their ``class_names``) or sequences of names.
    what: how to call the two sides in the message.
    ordered: also require the same order (label ``i`` must mean the same class).

  Raises:
    ValueError: listing the classes only in one side, or the first position where
      the orders differ.
  """
  a = tuple(getattr(source, "class_names", source))
  b = tuple(getattr(target, "class_names", target))
  only_a = sorted(set(a) - set(b))
  only_b = sorted(set(b) - set(a))
  if only_a or only_b:
    raise ValueError(
      f"class lists differ: only in {what[0]}: {only_a}; only in {what[1]}: {only_b}. "
      "Source and target must share the class list."
    )
  if len(a) != len(b):
    raise ValueError(f"class lists differ in length ({len(a)} vs {len(b)}): duplicates?")
  if ordered and a != b:
    i = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    raise ValueError(
      f"class lists have the same names in a different order: label {i} is "
      f"{a[i]!r} in {what[0]} but {b[i]!r} in {what[1]}."
    )
