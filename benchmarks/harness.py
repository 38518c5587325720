"""Timing harness: both frameworks in one process, alternating, after warm-up, same threads.

Discipline (issue 8):

* Thread pinning: :func:`pin_threads` must run BEFORE ``jax`` or ``torch`` is imported. It
  restricts the process to ``threads`` cores with ``os.sched_setaffinity`` (what ``taskset``
  does), sets ``torch.set_num_threads`` and, for one thread, the XLA CPU flags that turn off
  its multi-threaded Eigen pool. XLA sizes its own pool from the affinity mask, so both
  frameworks see the same cores.
* Each implementation is warmed up (JAX compile and torch.compile happen there and are
  timed separately), then calibrated so that one sample lasts at least ``min_sample_s``
  (``inner`` calls per sample), then the implementations are timed round-robin, one sample
  each per round, with the order rotated every round, so slow drifts of a shared machine hit
  all of them alike.
* JAX outputs are ``block_until_ready``-ed inside the timed region; PyTorch CPU is
  synchronous.
* Reported: median seconds per call, the inter-quartile range, min and max, and ratios.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def pin_threads(threads: int | None) -> dict[str, Any]:
  """Pins this process (and its future children) to ``threads`` cores.

  Call before importing jax / torch. Returns the settings for the results file.

  Args:
    threads: number of cores to use; None uses every core in the current affinity mask.
  """
  cores = sorted(os.sched_getaffinity(0))
  if threads is None or threads >= len(cores):
    threads = len(cores)
  chosen = cores[:threads]
  os.sched_setaffinity(0, chosen)
  os.environ["OMP_NUM_THREADS"] = str(threads)
  os.environ["MKL_NUM_THREADS"] = str(threads)
  flags = os.environ.get("XLA_FLAGS", "")
  if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
    # Every token must be a --flag: XLA reads XLA_FLAGS as a command line.
    flags = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    os.environ["XLA_FLAGS"] = flags
  return {
    "threads": threads,
    "cpu_affinity": chosen,
    "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"],
  }


def set_torch_threads(threads: int) -> None:
  import torch

  torch.set_num_threads(threads)
  try:
    torch.set_num_interop_threads(1)
  except RuntimeError:  # already set once in this process
    pass


def block(x: Any) -> Any:
  """Waits for every JAX array in the pytree ``x`` (no-op for torch / numpy)."""
  import jax

  return jax.block_until_ready(x)


@dataclasses.dataclass
class Timing:
  """Seconds per call of one implementation."""

  name: str
  median_s: float
  q1_s: float
  q3_s: float
  min_s: float
  max_s: float
  samples: int
  inner: int
  warmup_s: float  # the first call (includes JAX compile / torch.compile)

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
  if len(xs) == 1:
    return xs[0], xs[0], xs[0]
  q = statistics.quantiles(xs, n=4, method="inclusive")
  return q[0], statistics.median(xs), q[2]


def time_alternating(
  fns: Mapping[str, Callable[[], Any]],
  *,
  repeats: int = 15,
  warmup: int = 2,
  min_sample_s: float = 0.02,
  max_inner: int = 1000,
  budget_s: float | None = None,
  min_repeats: int = 5,
) -> dict[str, Timing]:
  """Times zero-argument callables round-robin.

  Each callable must do the complete work (e.g. forward + gradient) and must block until
  its result is ready (wrap JAX callables with :func:`block`).

  Args:
    fns: name -> callable.
    repeats: timed samples per implementation.
    warmup: untimed calls per implementation before calibration (the first one is
      reported as ``warmup_s``).
    min_sample_s: a sample repeats the call ``inner`` times so that it lasts at least this.
    max_inner: upper bound on ``inner``.
    budget_s: if given, fewer rounds (but at least ``min_repeats``) when the slowest
      implementation would need more than ``budget_s`` seconds for ``repeats`` samples.

  Returns:
    name -> :class:`Timing`.
  """
  names = list(fns)
  first_call, inner, per_call = {}, {}, {}
  for name in names:
    fn = fns[name]
    t0 = time.perf_counter()
    fn()
    first_call[name] = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
      fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    per_call[name] = one
    inner[name] = int(min(max_inner, max(1, round(min_sample_s / one))))
  if budget_s is not None:
    slowest = max(per_call[name] * inner[name] for name in names)
    repeats = max(min(repeats, min_repeats), min(repeats, int(budget_s / slowest)))
  samples: dict[str, list[float]] = {name: [] for name in names}
  for r in range(repeats):
    k = r % len(names)
    for name in names[k:] + names[:k]:
      fn, m = fns[name], inner[name]
      t0 = time.perf_counter()
      for _ in range(m):
        fn()
      samples[name].append((time.perf_counter() - t0) / m)
  out = {}
  for name in names:
    xs = samples[name]
    q1, med, q3 = _quartiles(xs)
    out[name] = Timing(
      name=name,
      median_s=med,
      q1_s=q1,
      q3_s=q3,
      min_s=min(xs),
      max_s=max(xs),
      samples=len(xs),
      inner=inner[name],
      warmup_s=first_call[name],
    )
  return out


def jax_compile_seconds(fn: Callable[..., Any], *args: Any) -> tuple[Callable[..., Any], float]:
  """AOT-compiles ``jax.jit(fn)`` for ``args``; returns (compiled callable, seconds)."""
  import jax

  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def machine_slug(threads: int) -> str:
  """A directory name for the results: '<cpu-model>-<n>cores' (or the GPU name)."""
  from dtl_jax.provenance import cpu_model, gpu_name

  gpu = gpu_name()
  slug = "".join(c if c.isalnum() else "-" for c in (gpu or cpu_model()).lower())
  while "--" in slug:
    slug = slug.replace("--", "-")
  return f"{slug.strip('-')}-{threads}t" if not gpu else slug.strip("-")


def machine_info(thread_settings: Mapping[str, Any]) -> dict[str, Any]:
  """CPU / GPU model and frequency, core counts, memory, versions, PyTorch's build
  configuration and the thread settings (the facts come from :mod:`dtl_jax.provenance`)."""
  import jax

  from dtl_jax import provenance

  machine = provenance.machine()
  versions = provenance.versions(("torch", "dalib"))
  info: dict[str, Any] = {
    "cpu_model": machine["cpu_model"],
    "cpu_mhz": machine.get("cpu_mhz"),
    "cpu_count_total": machine["cpu_count"],
    "cpu_count_affinity": machine.get("cpu_affinity_count"),
    "gpu": machine.get("gpu"),
    "platform": machine["platform"],
    "python": versions["python"],
    "jax": versions.get("jax"),
    "jaxlib": versions.get("jaxlib"),
    "jax_backend": jax.default_backend(),
    "jax_devices": [str(d) for d in jax.devices()],
    "numpy": versions.get("numpy"),
    "flax": versions.get("flax"),
    "optax": versions.get("optax"),
    "torch": versions.get("torch"),
    "dalib": versions.get("dalib"),
    "threads": dict(thread_settings),
    "load_average_at_start": os.getloadavg(),
  }
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal"):
          info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
  except OSError:
    pass
  try:
    import torch

    info["torch_num_threads"] = torch.get_num_threads()
    info["torch_num_interop_threads"] = torch.get_num_interop_threads()
    info["torch_config"] = torch.__config__.show()
  except ImportError:
    pass
  return info


def write_json_md(out_dir: str, stem: str, result: Mapping[str, Any], markdown: str) -> str:
  """Writes ``<out_dir>/<stem>.json`` (the measured data) and ``<stem>.md`` (its tables,
  written by the benchmark's own formatter); returns a line saying so."""
  import json

  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
    json.dump(result, f, indent=1, default=str)
  with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
    f.write(markdown)
  return f"wrote {out_dir}/{stem}.json and {stem}.md"


def patch_dalib_numpy() -> None:
  """dalib 0.2's gradient reversal layer calls ``np.float`` (removed in NumPy 1.24)."""
  import numpy as np

  if not hasattr(np, "float"):
    np.float = float  # type: ignore[attr-defined]
