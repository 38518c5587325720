"""Where a result came from: code commit, package versions, machine.

Shared by every writer of results (``fit``'s ``result.json``, the demo, the studies in
``experiments/`` and the speed benchmarks in ``benchmarks/``), so that each results file
names the same facts in the same way.

* :func:`git_commit` -- the commit the running code was loaded from (pinned at import);
* :func:`versions` -- Python and the numerical packages;
* :func:`machine` -- OS, CPU model, cores usable by this process, GPU, JAX devices;
* :func:`run_metadata` -- all of the above plus date, command line, seeds and config.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_PACKAGES = (
  "dtl-jax",
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "numpy",
  "orbax-checkpoint",
  "ml-collections",
)


def _git(*args: str) -> str | None:
  here = Path(__file__).resolve().parent.parent
  try:
    out = subprocess.run(
      ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=5, check=False
    )
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def _commit_now() -> str | None:
  """``HEAD``'s short hash, with ``+dirty`` when tracked Python files differ from it."""
  head = _git("rev-parse", "--short", "HEAD")
  if head and _git("status", "--porcelain", "--untracked-files=no", "--", "*.py"):
    head += "+dirty"
  return head


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
  """Short hash of the commit this process's code came from, ``None`` outside git.

  ``+dirty`` is appended when tracked ``.py`` files differed from that commit. The value
  is pinned when :mod:`dtl_jax.provenance` is imported: a long study that runs while the
  repository moves on still records the commit its code was loaded from.
  """
  return _commit_now()


git_commit()  # pin it at import


def versions(extra: Sequence[str] = ()) -> dict[str, str]:
  """Versions of Python and of the packages a result depends on (installed ones only).

  Args:
    extra: more distribution names to report (e.g. ``("torch", "dalib")``).
  """
  out = {"python": platform.python_version()}
  for dist in (*_PACKAGES, *extra):
    try:
      out[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def cpu_model() -> str:
  """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def cpu_mhz() -> float | None:
  """The first core's current frequency in MHz (``/proc/cpuinfo``), if the OS says."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("cpu MHz"):
          return float(line.split(":", 1)[1])
  except (OSError, ValueError):
    pass
  return None


def gpu_name() -> str | None:
  """The first NVIDIA GPU's name (``nvidia-smi``), ``None`` without one."""
  try:
    out = subprocess.run(
      ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
      capture_output=True,
      text=True,
      timeout=10,
      check=False,
    )
  except (OSError, subprocess.SubprocessError):
    return None
  lines = out.stdout.strip().splitlines()
  return lines[0] if out.returncode == 0 and lines else None


def machine() -> dict[str, Any]:
  """The machine a result was produced on: OS, CPU, usable cores, GPU, JAX devices.

  ``cpu_affinity_count`` is the number of cores this process may run on (``taskset``,
  cgroups), which is what a timing depends on; ``cpu_count`` is the machine's total.
  JAX devices are listed only when JAX is already imported (this never imports it).
  """
  info: dict[str, Any] = {
    "platform": platform.platform(),
    "processor": platform.processor() or platform.machine(),
    "cpu_model": cpu_model(),
    "cpu_count": os.cpu_count(),
  }
  if hasattr(os, "sched_getaffinity"):
    info["cpu_affinity_count"] = len(os.sched_getaffinity(0))
  mhz = cpu_mhz()
  if mhz is not None:
    info["cpu_mhz"] = mhz
  gpu = gpu_name()
  if gpu:
    info["gpu"] = gpu
  if "jax" in sys.modules:
    import jax

    devices = jax.devices()
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = f"{len(devices)} x {devices[0].device_kind}"
  return info


def run_metadata(
  *,
  config: Mapping[str, Any] | None = None,
  seeds: Sequence[int] | None = None,
  command: str | None = None,
) -> dict[str, Any]:
  """Everything needed to say where a result came from.

  Args:
    config: the run's config (a ``ConfigDict`` or dict), recorded as plain JSON.
    seeds: the seeds the result covers.
    command: the command line; default: this process's ``sys.argv``.

  Returns:
    ``{"date_utc", "command", "git_commit", "versions", "machine"[, "seeds", "config"]}``.
  """
  meta: dict[str, Any] = {
    "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
    "command": command
    if command is not None
    else " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    "git_commit": git_commit(),
    "versions": versions(),
    "machine": machine(),
  }
  if seeds is not None:
    meta["seeds"] = [int(s) for s in seeds]
  if config is not None:
    from dtl_jax.config import config_to_dict

    meta["config"] = config_to_dict(config)
  return meta
