"""Infinite, shuffled, resumable source / target samplers for one or many devices.

A :class:`PairSampler` yields one :class:`Batch` per training step: a labelled
source batch and an unlabelled target batch. Its whole state is ``(seed, step)``:
the batch at step ``k`` is a pure function of ``(seed, k)``, so
``sampler.at_step(k)`` and ``load_state_dict(state_dict())`` continue exactly.

Order. Each domain (stream ``0`` = source, ``1`` = target) is read in epochs; epoch
``e`` visits the examples in the order ``np.random.default_rng([seed, stream, e])
.permutation(n)``.

* ``drop_last=True`` (default): an epoch has ``n // B`` batches; step ``k`` takes
  batch ``k mod (n // B)`` of epoch ``k // (n // B)`` (the ``n mod B`` left-over
  examples of an epoch are skipped, different ones each epoch).
* ``drop_last=False``: the epochs are concatenated into one stream and step ``k``
  takes stream positions ``[k B, (k + 1) B)``, so batches may straddle two epochs and
  every example is used exactly once per epoch.

``target_sampling="uniform"`` draws the target examples independently and uniformly, with
replacement, instead (an example may come twice in an epoch, another not at all): the
``n`` draws of target "epoch" ``e`` are ``default_rng([seed, 1, e, 1]).integers(n,
size=n)``, read like a permutation above. This is how the released code of Ganin et al.
(GRAAL-Research/domain_adversarial_neural_network, ``DANN.py``) pairs each source example
with a target example, which its two-moons result depends on
(``experiments/results/two_moons_ablation/``).

Random per-example transforms get the seed
``default_rng([seed, 2 + stream, k]).integers(2**63, size=B)[i]``.

Devices. With ``num_devices=D`` every array is reshaped to ``[D, B / D, ...]`` (the
layout ``jax.pmap`` expects); device ``d`` gets source rows ``d B/D ... (d+1) B/D - 1``
and target rows likewise, so each device holds ``B/D`` source and ``B_t/D`` target
examples. With ``sharding=`` (e.g. ``NamedSharding(mesh, P("data"))``, see
:func:`data_sharding`) the global ``[B, ...]`` arrays are placed with
``jax.device_put`` for ``jax.jit`` / ``shard_map`` steps; the same per-device balance
holds because both batches are split along their leading axis.

Target labels are never part of a :class:`Batch`; evaluation code reads them with
:meth:`PairSampler.target_labels` or iterates a labelled split with
:func:`eval_batches`.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from dtl_jax.data.prefetch import Prefetcher
from dtl_jax.data.sources import Source, Transform, as_source, check_same_classes


class Batch(NamedTuple):
  """One training step's data.

  Attributes:
    step: the step number this batch belongs to.
    x_source: ``[B, ...]`` (or ``[D, B/D, ...]``) source inputs.
    y_source: ``[B]`` (or ``[D, B/D]``) int32 source labels.
    x_target: ``[B_t, ...]`` (or ``[D, B_t/D, ...]``) target inputs, or ``None``
      when the sampler has no target.
  """

  step: int
  x_source: Any
  y_source: Any
  x_target: Any


class _Stream:
  """Stateless batch indices of one domain."""

  def __init__(
    self,
    n: int,
    batch_size: int,
    seed: int,
    stream: int,
    drop_last: bool,
    name: str,
    replacement: bool = False,
  ):
    if batch_size < 1:
      raise ValueError(f"{name} batch size must be >= 1, got {batch_size}.")
    if drop_last and n < batch_size:
      raise ValueError(
        f"{name} has {n} examples, fewer than its batch size {batch_size}; lower the "
        "batch size or use drop_last=False."
      )
    self.n, self.b, self.seed, self.stream, self.drop_last = (
      n,
      batch_size,
      seed,
      stream,
      drop_last,
    )
    self.replacement = replacement
    self._perm_cache: dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    """Epoch ``epoch``'s order: a permutation, or ``n`` uniform draws with replacement."""
    perm = self._perm_cache.get(epoch)
    if perm is None:
      if self.replacement:
        rng = np.random.default_rng([self.seed, self.stream, epoch, 1])
        perm = rng.integers(self.n, size=self.n)
      else:
        perm = np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.n)
      if len(self._perm_cache) > 4:
        self._perm_cache.clear()
      self._perm_cache[epoch] = perm
    return perm

  def indices(self, step: int) -> np.ndarray:
    if self.drop_last:
      per_epoch = self.n // self.b
      epoch, j = divmod(step, per_epoch)
      return self._perm(epoch)[j * self.b : (j + 1) * self.b]
    pos = np.arange(step * self.b, (step + 1) * self.b)
    epochs, within = np.divmod(pos, self.n)
    return np.array([self._perm(int(e))[w] for e, w in zip(epochs, within, strict=True)], np.int64)

  def seeds(self, step: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, 2 + self.stream, step])
    return rng.integers(2**63 - 1, size=self.b, dtype=np.int64)


TARGET_SAMPLING = ("epochs", "uniform")


def check_target_sampling(value: str) -> None:
  """Raises ``ValueError`` (naming the argument) unless ``value`` is in :data:`TARGET_SAMPLING`."""
  if value not in TARGET_SAMPLING:
    raise ValueError(
      f"target_sampling must be one of {', '.join(map(repr, TARGET_SAMPLING))}, got {value!r}."
    )


def _get_items(source, idx, seeds, executor):
  """``(x, y)`` at ``idx``; sources with ``get_items`` (TFDS) read both at once."""
  if hasattr(source, "get_items"):
    return source.get_items(idx, seeds=seeds, executor=executor)
  return source.get(idx, seeds=seeds, executor=executor), source.labels[idx]


def _check_divisible(b: int, name: str, d: int) -> None:
  if b % d:
    raise ValueError(
      f"{name} ({b}) must be divisible by num_devices ({d}) so that every "
      "device gets the same number of examples."
    )


class PairSampler:
  """Yields ``Batch(step, x_source, y_source, x_target)`` forever.

  Args:
    source: labelled source data: a :class:`~dtl_jax.data.domain.Domain` (its train
      split), an ``(x, y)`` tuple, or a source (image folder, TFDS).
    target: unlabelled target data, same kinds, or ``None`` (source-only training).
    batch_size: global source batch size ``B``.
    target_batch_size: global target batch size ``B_t`` (defaults to ``B``).
    seed: fixes the order and the random transforms.
    drop_last: see the module docstring.
    num_devices: if given, arrays are ``[D, B / D, ...]`` for ``jax.pmap``.
    sharding: if given, arrays are ``jax.device_put`` with it (e.g. a
      ``NamedSharding`` over a ``"data"`` mesh axis) for ``jax.jit`` / ``shard_map``.
    source_transform, target_transform: per-example ``transform(x, rng)`` applied when
      ``source`` / ``target`` is a Domain or ``(x, y)``.
    target_sampling: ``"epochs"`` (each epoch a permutation of the target) or
      ``"uniform"`` (independent uniform draws with replacement; module docstring).
    num_workers: threads decoding examples within a batch (0: decode inline).
    start_step: the first step to yield.
  """

  def __init__(
    self,
    source: Any,
    target: Any = None,
    *,
    batch_size: int,
    target_batch_size: int | None = None,
    seed: int = 0,
    drop_last: bool = True,
    num_devices: int | None = None,
    sharding: Any = None,
    source_transform: Transform | None = None,
    target_transform: Transform | None = None,
    num_workers: int = 0,
    start_step: int = 0,
    target_sampling: str = "epochs",
  ):
    check_target_sampling(target_sampling)
    self.source: Source = as_source(source, "train", transform=source_transform)
    self.target: Source | None = (
      None if target is None else as_source(target, "train", transform=target_transform)
    )
    if self.target is not None:
      check_same_classes(self.source, self.target)
    if target_batch_size is None:
      target_batch_size = batch_size
    if num_devices is not None and sharding is not None:
      raise ValueError("give num_devices (pmap layout) or sharding (jit layout), not both.")
    if num_devices is not None:
      if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}.")
      _check_divisible(batch_size, "batch_size", num_devices)
      if self.target is not None:
        _check_divisible(target_batch_size, "target_batch_size", num_devices)
    if num_workers < 0:
      raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
    if start_step < 0:
      raise ValueError(f"start_step must be >= 0, got {start_step}.")
    self.seed = int(seed)
    self.batch_size = int(batch_size)
    self.target_batch_size = int(target_batch_size)
    self.drop_last = bool(drop_last)
    self.num_devices = num_devices
    self.sharding = sharding
    self.num_workers = num_workers
    self._src = _Stream(len(self.source), batch_size, self.seed, 0, drop_last, "source")
    self._tgt = (
      None
      if self.target is None
      else _Stream(
        len(self.target),
        target_batch_size,
        self.seed,
        1,
        drop_last,
        "target",
        replacement=target_sampling == "uniform",
      )
    )
    self._executor = concurrent.futures.ThreadPoolExecutor(num_workers) if num_workers else None
    self.step = int(start_step)

  # -- state ----------------------------------------------------------------
  def state_dict(self) -> dict:
    """``{"seed", "step"}``: the next batch to be yielded."""
    return {"seed": self.seed, "step": self.step}

  def load_state_dict(self, state: dict):
    """Continues from ``state`` (from :meth:`state_dict`); the seed must match."""
    if int(state["seed"]) != self.seed:
      raise ValueError(
        f"state seed {state['seed']} differs from this sampler's seed "
        f"{self.seed}; build the sampler with seed={state['seed']}."
      )
    if int(state["step"]) < 0:
      raise ValueError(f"state step must be >= 0, got {state['step']}.")
    self.step = int(state["step"])

  def at_step(self, step: int) -> PairSampler:
    """Moves to ``step`` (the next batch yielded is ``batch(step)``); returns self."""
    self.load_state_dict({"seed": self.seed, "step": step})
    return self

  # -- batches --------------------------------------------------------------
  def _layout(self, arr: np.ndarray):
    if self.num_devices is not None:
      return arr.reshape((self.num_devices, arr.shape[0] // self.num_devices) + arr.shape[1:])
    if self.sharding is not None:
      import jax

      return jax.device_put(arr, self.sharding)
    return arr

  def batch(self, step: int) -> Batch:
    """The batch at ``step`` (pure: does not move the sampler)."""
    idx = self._src.indices(step)
    x_s, y_s = _get_items(self.source, idx, self._src.seeds(step), self._executor)
    x_t = None
    if self._tgt is not None and self.target is not None:
      x_t = self._layout(
        self.target.get(
          self._tgt.indices(step), seeds=self._tgt.seeds(step), executor=self._executor
        )
      )
    return Batch(step=step, x_source=self._layout(x_s), y_source=self._layout(y_s), x_target=x_t)

  def target_labels(self, step: int) -> np.ndarray:
    """Evaluation / diagnostics only: labels of the target batch at ``step``."""
    if self._tgt is None or self.target is None:
      raise ValueError("this sampler has no target domain.")
    y = self.target.labels[self._tgt.indices(step)]
    if self.num_devices is not None:
      y = y.reshape(self.num_devices, -1)
    return y

  def source_indices(self, step: int) -> np.ndarray:
    """``[B]`` indices (into the source) of the source batch at ``step``."""
    return self._src.indices(step)

  def target_indices(self, step: int) -> np.ndarray:
    """``[B_t]`` indices (into the target) of the target batch at ``step``."""
    if self._tgt is None:
      raise ValueError("this sampler has no target domain.")
    return self._tgt.indices(step)

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    b = self.batch(self.step)
    self.step += 1
    return b

  def steps_per_epoch(self) -> int:
    """Source batches per source epoch (``n // B``, or ``ceil(n / B)``)."""
    n, b = len(self.source), self.batch_size
    return n // b if self.drop_last else -(-n // b)

  def prefetch(self, buffer_size: int = 2) -> Prefetcher:
    """This sampler's batches from a background thread, ``buffer_size`` ahead.

    The prefetcher's ``state_dict()`` is that of the last batch *consumed* (the
    read-ahead is not counted), so checkpoints taken while prefetching resume exactly.
    The sampler itself must not be iterated elsewhere meanwhile.
    """
    start = self.step

    def state_fn(last):
      return {"seed": self.seed, "step": start if last is None else last.step + 1}

    return Prefetcher(self, buffer_size=buffer_size, state_fn=state_fn)


def data_sharding(mesh: Any = None, axis_name: str = "data"):
  """``NamedSharding(mesh, P(axis_name))``; ``mesh`` defaults to all devices on one axis."""
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  if mesh is None:
    mesh = Mesh(np.asarray(jax.devices()), (axis_name,))
  if axis_name not in mesh.axis_names:
    raise ValueError(f"axis_name {axis_name!r} is not a mesh axis {mesh.axis_names}.")
  return NamedSharding(mesh, PartitionSpec(axis_name))


def eval_batches(
  data: Any,
  *,
  batch_size: int,
  split: str = "test",
  num_devices: int | None = None,
  transform: Transform | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """One ordered pass over a labelled split, with fixed-shape padded batches.

  Args:
    data: a Domain (its ``split``), an ``(x, y)`` tuple or a source.
    batch_size: global batch size ``B`` (divisible by ``num_devices``).
    split: Domain split to read.
    num_devices: reshape to ``[D, B / D, ...]`` for ``jax.pmap``.
    transform: deterministic per-example transform (e.g. a test transform).

  Yields:
    ``(x, y, mask)``: ``x`` ``[B, ...]``, ``y`` ``[B]``, ``mask`` ``[B]`` float32 with
    ``1`` for real examples and ``0`` for the padding of the last batch (padding
    repeats example 0).
  """
  src = as_source(data, split, transform=transform)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if num_devices is not None:
    _check_divisible(batch_size, "batch_size", num_devices)
  n = len(src)
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    mask: np.ndarray = np.ones(batch_size, np.float32)
    if len(idx) < batch_size:
      mask[len(idx) :] = 0
      idx = np.concatenate([idx, np.zeros(batch_size - len(idx), idx.dtype)])
    x, y = _get_items(src, idx, np.zeros(batch_size, np.int64), None)
    if num_devices is not None:
      x, y, mask = (a.reshape((num_devices, -1) + a.shape[1:]) for a in (x, y, mask))
    yield x, y, mask
