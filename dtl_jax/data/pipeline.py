"""The input pipeline of training: batches decoded by workers, streamed with grain.

:class:`TrainBatches` turns a source and a target split into the batches of
:func:`dtl_jax.train.fit`; :func:`eval_batches` streams a split for evaluation. Both read
in-memory arrays (bundled domains) and :class:`~dtl_jax.data.streaming.LazyImages`
(``folder:`` / ``tfds:`` domains) through the same path, so no split is ever held in
memory whole: a batch is decoded when the pipeline reaches it, and host memory is
bounded by the number of batches in flight (``prefetch`` + ``workers``), not by the
dataset size.

Order and randomness are those of :class:`~dtl_jax.data.sampler.PairSampler`: the
global batch at step ``k`` is a pure function of ``(seed, k)`` -- epoch ``e`` of the
source visits ``default_rng([seed, 0, e]).permutation(n_s)`` (``drop_last``), the target
likewise with stream 1 (or, with ``target_sampling="uniform"``, uniform draws with
replacement), and example ``i`` of the batch is augmented with
``default_rng(default_rng([seed, 2 + stream, k]).integers(2**63 - 1, size=B)[i])``. So a
resumed run gets exactly the batches of an uninterrupted one: the pipeline's state is
the step, which the checkpoint holds (``TrainState.step``).

Processes: with ``process_count = P`` each process decodes only its rows
``[p B / P, (p + 1) B / P)`` of the source batch and of the target batch (the layout
``jax.make_array_from_process_local_data`` assembles into the global batch).

Parallelism (grain, ``grain.MapDataset`` -> ``to_iter_dataset`` -> ``mp_prefetch``): one
element is one step's batch; ``threads`` decode that many batches at once in this
process (PIL's decoder and resizer release the GIL), ``workers`` > 0 moves decoding
into that many worker processes (each with ``threads`` threads), and ``prefetch``
batches are kept ready ahead of the training step.

Augmentation protocols (:data:`AUGMENTATIONS`, config key ``data.augment``):

* ``"none"``: each domain's own images (bundled arrays; folders / TFDS resized to
  ``data.image_size``, normalized as ``data.normalize`` says), same for train and test;
* ``"tllib_imagenet"``: TLlib's ImageNet-style protocol (Office-31, Office-Home,
  VisDA): train ``ResizeImage(256) -> RandomResizedCrop(224) -> RandomHorizontalFlip ->
  Normalize(ImageNet)``, test ``ResizeImage(256) -> CenterCrop(224) -> Normalize``; for
  another ``image_size`` s the resize is ``round(256 s / 224)`` and the crop ``s``;
* ``"tllib_digits"``: TLlib's digits protocol: ``ResizeImage(s) -> Normalize(0.5,
  0.5)``, train and test (no random augmentation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from dtl_jax.data import transforms
from dtl_jax.data.sampler import _Stream, check_target_sampling
from dtl_jax.data.sources import Transform
from dtl_jax.data.streaming import LazyImages

AUGMENTATIONS = {
  "none": "each domain's own images, the same for training and test",
  "tllib_imagenet": "TLlib's ImageNet protocol: resize 256, random-resized crop 224, "
  "horizontal flip, ImageNet normalization (test: centre crop)",
  "tllib_digits": "TLlib's digits protocol: resize to data.image_size, normalize "
  "with mean 0.5 / std 0.5 (train and test)",
}


def augmentation(name: str, *, image_size: int) -> tuple[Transform | None, Transform | None]:
  """``(train_transform, test_transform)`` of protocol ``name`` (module docstring).

  ``(None, None)`` for ``"none"``: the domains' own images are used as they are.

  Raises:
    ValueError: an unknown name, or a protocol without an image size.
  """
  if name not in AUGMENTATIONS:
    raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}, got {name!r}.")
  if name == "none":
    return None, None
  if image_size < 1:
    raise ValueError(f"augmentation {name!r} needs an image size >= 1, got {image_size}.")
  if name == "tllib_imagenet":
    resize = int(round(256 * image_size / 224))
    return (
      transforms.train_transform(resize_size=resize, crop_size=image_size),
      transforms.test_transform(resize_size=resize, crop_size=image_size),
    )
  digits = transforms.digits_transform(image_size)
  return digits, digits


def examples(
  x: Any,
  indices: np.ndarray,
  *,
  transform: Transform | None = None,
  seeds: np.ndarray | None = None,
) -> np.ndarray:
  """Rows ``indices`` of ``x`` (``[n, ...]`` array or ``LazyImages``) as ``[k, ...]``.

  Without ``transform`` the rows are read as ``x`` holds them (a lazy view applies its
  own test transform); with one, ``transform(raw_row_i, default_rng(seeds[i]))`` is
  applied to each raw row (``seeds`` default to zeros).
  """
  idx = np.asarray(indices, np.int64)
  if transform is None:
    return np.asarray(x[idx])
  if seeds is None:
    seeds = np.zeros(len(idx), np.int64)
  rows = []
  for i, s in zip(idx, seeds, strict=True):
    raw = x.raw(int(i)) if isinstance(x, LazyImages) else x[int(i)]
    rows.append(np.asarray(transform(raw, np.random.default_rng(int(s))), np.float32))
  return np.stack(rows)


def _grain_stream(
  fn: Any, start: int, stop: int, *, threads: int, prefetch: int, workers: int
) -> Any:
  """``fn(i)`` for ``i`` in ``[start, stop)``, in order, computed ahead by grain."""
  import grain

  ds = grain.MapDataset.range(start, stop).map(fn)
  it_ds = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(prefetch, threads))
  )
  if workers:
    from absl import flags

    # grain 0.2.18 reads an absl flag in mp_prefetch, which fails in a program that
    # never parsed absl flags (google/grain#1355, fixed upstream after 0.2.18).
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=max(1, prefetch))
    )
  return iter(it_ds)


class TrainBatches:
  """This process's part of the training batch of every step (module docstring).

  Args:
    source_x: ``[n_s, ...]`` source training inputs (array or ``LazyImages``).
    source_y: ``[n_s]`` int labels.
    target_x: ``[n_t, ...]`` unlabelled target training inputs.
    batch_size: global source batch size ``B``.
    target_batch_size: global target batch size ``B_t``.
    seed: the run's seed (order and augmentation).
    transform: the training transform of the augmentation protocol, applied to raw
      rows; ``None``: rows as the inputs hold them.
    source_weights: optional ``[n_s]`` per-example weights, fed as ``"w_s"``.
    process_index, process_count: which rows this process decodes.
    target_sampling: ``"epochs"`` or ``"uniform"`` (config ``data.target_sampling``,
      :class:`~dtl_jax.data.sampler.PairSampler`).

  Calling ``batches(k)`` returns ``{"x_s": [B/P, ...], "y_s": [B/P], "x_t": [B_t/P,
  ...]}`` (plus ``"w_s"``); it is pure and picklable, so that grain can run it in
  threads or worker processes (:meth:`stream`).
  """

  def __init__(
    self,
    source_x: Any,
    source_y: np.ndarray,
    target_x: Any,
    *,
    batch_size: int,
    target_batch_size: int,
    seed: int,
    transform: Transform | None = None,
    source_weights: np.ndarray | None = None,
    process_index: int = 0,
    process_count: int = 1,
    target_sampling: str = "epochs",
  ):
    check_target_sampling(target_sampling)
    if len(source_x) != len(source_y):
      raise ValueError(
        f"source_x has {len(source_x)} rows but source_y has {len(source_y)}; they must match."
      )
    if source_weights is not None and len(source_weights) != len(source_y):
      raise ValueError(
        f"source_weights has {len(source_weights)} entries, expected one per source "
        f"example ({len(source_y)})."
      )
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index must lie in [0, {process_count}), got {process_index}.")
    for name, b in (("batch_size", batch_size), ("target_batch_size", target_batch_size)):
      if b % process_count:
        raise ValueError(
          f"{name} ({b}) must be divisible by the {process_count} processes, each of which "
          "reads its own slice."
        )
    self.source_x, self.target_x = source_x, target_x
    self.source_y = np.asarray(source_y, np.int32)
    self.transform = transform
    self.source_weights = None if source_weights is None else np.asarray(source_weights)
    self.batch_size, self.target_batch_size = int(batch_size), int(target_batch_size)
    self.process_index, self.process_count = int(process_index), int(process_count)
    self._src = _Stream(len(source_y), batch_size, int(seed), 0, True, "source")
    self._tgt = _Stream(
      len(target_x),
      target_batch_size,
      int(seed),
      1,
      True,
      "target",
      replacement=target_sampling == "uniform",
    )

  def _rows(self, b: int) -> slice:
    m = b // self.process_count
    return slice(self.process_index * m, (self.process_index + 1) * m)

  def source_indices(self, step: int) -> np.ndarray:
    """``[B]`` indices of the global source batch of ``step``."""
    return self._src.indices(int(step))

  def target_indices(self, step: int) -> np.ndarray:
    """``[B_t]`` indices of the global target batch of ``step``."""
    return self._tgt.indices(int(step))

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    step = int(step)
    rs, rt = self._rows(self.batch_size), self._rows(self.target_batch_size)
    idx_s = self._src.indices(step)[rs]
    idx_t = self._tgt.indices(step)[rt]
    batch = {
      "x_s": examples(
        self.source_x, idx_s, transform=self.transform, seeds=self._src.seeds(step)[rs]
      ),
      "y_s": self.source_y[idx_s],
      "x_t": examples(
        self.target_x, idx_t, transform=self.transform, seeds=self._tgt.seeds(step)[rt]
      ),
    }
    if self.source_weights is not None:
      batch["w_s"] = self.source_weights[idx_s]
    return batch

  def stream(
    self, start: int, stop: int, *, threads: int = 0, prefetch: int = 2, workers: int = 0
  ) -> Any:
    """The batches of steps ``start ... stop - 1``, decoded ahead by grain.

    Args:
      start, stop: the steps.
      threads: batches decoded at once by threads of each decoding process (0: in the
        consumer's thread, when it asks).
      prefetch: batches kept ready ahead (per process).
      workers: decoding processes (grain ``mp_prefetch``); 0 = this process.

    Returns:
      a grain ``DatasetIterator`` of the batch dicts; ``close()`` it when done (it stops
      the threads / workers).
    """
    if stop < start:
      raise ValueError(f"stop ({stop}) must be >= start ({start}).")
    return _grain_stream(self, start, stop, threads=threads, prefetch=prefetch, workers=workers)


class _EvalBatch:
  """Batch ``b`` of an evaluation pass: ``(x [B, ...], real_rows)``, padded by repeating
  the last real row."""

  def __init__(self, x: Any, batch_size: int, transform: Transform | None):
    self.x, self.batch_size, self.transform = x, batch_size, transform

  def __call__(self, b: int) -> tuple[np.ndarray, int]:
    n = len(self.x)
    idx = np.arange(b * self.batch_size, min((b + 1) * self.batch_size, n))
    xb = examples(self.x, idx, transform=self.transform)
    m = len(idx)
    if m < self.batch_size:
      xb = np.concatenate([xb, np.repeat(xb[-1:], self.batch_size - m, 0)], 0)
    return xb, m


def eval_batches(
  x: Any,
  *,
  batch_size: int,
  transform: Transform | None = None,
  threads: int = 0,
  prefetch: int = 2,
) -> Iterator[tuple[np.ndarray, int]]:
  """One ordered pass over ``x`` in fixed-size batches, decoded ahead by threads.

  Args:
    x: ``[n, ...]`` inputs (array or ``LazyImages``), ``n >= 1``.
    batch_size: rows per batch ``B``.
    transform: the test transform of the augmentation protocol (``None``: rows as ``x``
      holds them).
    threads, prefetch: as :meth:`TrainBatches.stream`; in-memory arrays without a
      transform are sliced in the consumer's thread.

  Yields:
    ``(x_b, m)``: ``x_b`` ``[B, ...]`` float32 whose first ``m`` rows are real (the last
    batch is padded by repeating its last row).
  """
  n = len(x)
  if n == 0:
    raise ValueError("x must hold at least one example")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  load = _EvalBatch(x, batch_size, transform)
  num = math.ceil(n / batch_size)
  if transform is None and not isinstance(x, LazyImages):
    yield from (load(b) for b in range(num))
    return
  it = _grain_stream(load, 0, num, threads=threads, prefetch=prefetch, workers=0)
  try:
    yield from it
  finally:
    it.close()
