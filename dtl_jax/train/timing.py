"""Wall-clock time of the phases of a training run (``fit``'s ``result["timings"]``).

:class:`PhaseClock` splits a run into exclusive phases: *laps* (consecutive stretches
of the main flow: data, build, first step, steps, finish) and *timed* phases nested in
them (evaluation, checkpoints). A timed phase's seconds are removed from the lap (and from
any timed phase) that encloses it, so the phases add up to the total.

JAX dispatches asynchronously: a phase may ``wait`` on arrays first (outside its own
timer), so that device work of earlier steps is charged to the steps, not to the
evaluation that happens to wait for it.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any


def _wait(tree: Any) -> None:
  if tree is not None:
    import jax

    jax.block_until_ready(tree)


class PhaseClock:
  """Exclusive wall-clock seconds per named phase, from construction on."""

  def __init__(self) -> None:
    self.start = self._mark = time.perf_counter()
    self.totals: dict[str, float] = {}
    self._inner = [0.0]  # seconds of timed phases inside the current lap / phase

  def _add(self, name: str, seconds: float) -> None:
    self.totals[name] = self.totals.get(name, 0.0) + seconds

  def lap(self, name: str, *, wait: Any = None) -> None:
    """Charges the time since the previous lap (minus timed phases in it) to ``name``."""
    _wait(wait)
    now = time.perf_counter()
    self._add(name, now - self._mark - self._inner[0])
    self._mark, self._inner[0] = now, 0.0

  @contextlib.contextmanager
  def phase(self, name: str, *, wait: Any = None) -> Iterator[None]:
    """Times the ``with`` body as ``name`` (after waiting for ``wait``)."""
    _wait(wait)
    t = time.perf_counter()
    self._inner.append(0.0)
    try:
      yield
    finally:
      elapsed = time.perf_counter() - t
      self._add(name, elapsed - self._inner.pop())
      self._inner[-1] += elapsed

  def timed(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: each call is a ``name`` phase that first waits for its first argument."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
      @functools.wraps(fn)
      def call(*args: Any, **kwargs: Any) -> Any:
        with self.phase(name, wait=args[0] if args else None):
          return fn(*args, **kwargs)

      return call

    return wrap

  def summary(self) -> dict[str, float]:
    """``{"<phase>_s": seconds, ..., "total_s": seconds since construction}``."""
    out = {f"{k}_s": round(v, 4) for k, v in self.totals.items()}
    out["total_s"] = round(time.perf_counter() - self.start, 4)
    return out
