"""Ctrl-C (SIGINT) as a request to stop after the current step, not an exception."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class StopRequest:
  """Context manager: while active, SIGINT sets :attr:`requested` instead of raising.

  The training loop checks the flag after each step, saves a checkpoint and returns
  (``interrupted=True``). On exit the caller's own handler is restored, whatever it was
  (Python's default, ``SIG_IGN`` under ``nohup``, or a handler of its own). Outside the
  main thread signals cannot be caught; there it only carries the flag.
  """

  def __init__(self) -> None:
    self.requested = False
    self._old: Any = None

  def _handler(self, signum: int, frame: FrameType | None) -> None:
    del signum, frame
    self.requested = True

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGINT, self._handler)
    return self

  def __exit__(
    self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
  ) -> None:
    if self._old is not None:
      signal.signal(signal.SIGINT, self._old)
      self._old = None
