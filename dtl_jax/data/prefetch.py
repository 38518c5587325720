"""Background-thread prefetching with a small bounded queue.

A daemon thread pulls items from an iterator (decoding, augmentation, host-to-device
transfer all happen there) and keeps at most ``buffer_size`` ready items in a queue,
so that the training step does not wait on data. Exceptions raised by the producer
are re-raised in the consumer at the position where they happened.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_END = object()


class _Raised:
  def __init__(self, exc: BaseException):
    self.exc = exc


def _put(q: queue.Queue, stop: threading.Event, item) -> bool:
  while not stop.is_set():
    try:
      q.put(item, timeout=0.05)
      return True
    except queue.Full:
      continue
  return False


def _produce(iterator, q: queue.Queue, stop: threading.Event):
  try:
    for item in iterator:
      if not _put(q, stop, item):
        return
  except BaseException as e:
    _put(q, stop, _Raised(e))
    return
  _put(q, stop, _END)


class Prefetcher(Iterator):
  """Iterates ``iterable`` in a background thread, ``buffer_size`` items ahead.

  Args:
    iterable: the producer (e.g. a :class:`~dtl_jax.data.sampler.PairSampler`).
    buffer_size: maximum number of ready items held (>= 1).
    state_fn: ``state_fn(last_consumed_item_or_None) -> dict``; makes
      :meth:`state_dict` report the position of what the *consumer* has seen, not of
      the read-ahead producer.

  Use as an iterator, ideally in a ``with`` block (or call :meth:`close`), which
  stops the thread.
  """

  def __init__(
    self, iterable: Iterable, *, buffer_size: int = 2, state_fn: Callable[[Any], dict] | None = None
  ):
    if not isinstance(buffer_size, int) or buffer_size < 1:
      raise ValueError(f"buffer_size must be an int >= 1, got {buffer_size!r}.")
    self._queue: queue.Queue = queue.Queue(maxsize=buffer_size)
    self._stop = threading.Event()
    self._state_fn = state_fn
    self._last = None
    self._done = False
    self._iterator = iter(iterable)
    # The thread holds only the queue, the event and the iterator (not ``self``), so
    # an abandoned Prefetcher is garbage-collected and its __del__ stops the thread.
    self._thread = threading.Thread(
      target=_produce,
      args=(self._iterator, self._queue, self._stop),
      daemon=True,
      name="dtl_jax-prefetch",
    )
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    item = self._queue.get()
    if item is _END:
      self._done = True
      raise StopIteration
    if isinstance(item, _Raised):
      self._done = True
      raise item.exc
    self._last = item
    return item

  def state_dict(self) -> dict:
    """State after the last item handed to the consumer (needs ``state_fn``)."""
    if self._state_fn is None:
      raise ValueError("this Prefetcher was built without state_fn, so it has no state.")
    return self._state_fn(self._last)

  def close(self):
    """Stops the producer thread (idempotent)."""
    self._stop.set()
    self._done = True
    # Unblock a producer waiting on a full queue.
    while True:
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join(timeout=5.0)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    try:
      self._stop.set()
    except Exception:
      pass


def prefetch(iterable: Iterable, *, buffer_size: int = 2) -> Prefetcher:
  """Shorthand for :class:`Prefetcher` without state tracking."""
  return Prefetcher(iterable, buffer_size=buffer_size)
