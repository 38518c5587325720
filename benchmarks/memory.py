"""Peak memory of ``mk_mmd`` + gradient, one configuration per capped subprocess.

Each configuration runs in a fresh ``python -m benchmarks.memory '<json>'`` child:

1. imports, builds the float32 inputs, compiles the JAX function ahead of time;
2. records its resident set (``VmRSS``) as the baseline, caps any FURTHER address space
   at ``cap_gib`` with ``resource.setrlimit(RLIMIT_AS)`` (so a ``[2n, 2n, d]`` tensor
   fails inside the child instead of exhausting a shared machine), and resets the
   kernel's high-water mark (``/proc/self/clear_refs`` <- 5);
3. runs forward + gradient once and reports ``VmHWM - baseline`` (peak extra resident
   memory of the computation) and ``VmHWM`` (whole process).

An allocation failure, a crash or a time-out is reported as such; it never stops the run.
The parent also polls the child's RSS and kills it above ``cap_gib + baseline``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

IMPLS = ("jax_tiled", "jax_dense", "torch_gram", "dalib")


def proc_status(pid: int | str = "self") -> dict[str, int]:
  """``VmSize``, ``VmRSS`` and ``VmHWM`` (peak RSS) of process ``pid``, in bytes, from
  ``/proc/<pid>/status``.

  Raises:
    OSError: no such process (any more).
  """
  out = {}
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      key, _, val = line.partition(":")
      if key in ("VmSize", "VmRSS", "VmHWM"):
        out[key] = int(val.split()[0]) * 1024
  return out


def _is_oom(err: BaseException) -> bool:
  text = f"{type(err).__name__}: {err}".lower()
  return isinstance(err, MemoryError) or any(
    s in text for s in ("memory", "alloc", "resource_exhausted", "resource exhausted")
  )


def _child(cfg: dict[str, Any]) -> dict[str, Any]:
  """Runs one configuration in this process; returns the result dict."""
  import numpy as np

  impl, n, d = cfg["impl"], int(cfg["n"]), int(cfg["d"])
  rng = np.random.default_rng(0)
  zs = rng.standard_normal((n, d), dtype=np.float32)
  zt = (rng.standard_normal((n, d), dtype=np.float32) + 0.5).astype(np.float32)
  if impl.startswith("jax"):
    import jax

    from benchmarks import jax_losses

    fn = jax_losses.mk_mmd_value_and_grad(tiled=impl == "jax_tiled", n=n)
    xs, xt = jax.device_put(zs), jax.device_put(zt)
    compiled = jax.jit(fn).lower(xs, xt).compile()

    def run():
      return jax.block_until_ready(compiled(xs, xt))
  else:
    import torch

    from benchmarks import harness, torch_refs

    harness.patch_dalib_numpy()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    ts = torch.from_numpy(zs).requires_grad_(True)
    tt = torch.from_numpy(zt).requires_grad_(True)
    loss_fn = torch_refs.dalib_mk_mmd(n) if impl == "dalib" else torch_refs.mk_mmd

    def run():
      loss = loss_fn(ts, tt)
      return torch.autograd.grad(loss, (ts, tt))

  base = proc_status()
  cap = int(float(cfg["cap_gib"]) * 2**30)
  _, hard = resource.getrlimit(resource.RLIMIT_AS)
  resource.setrlimit(resource.RLIMIT_AS, (base["VmSize"] + cap, hard))
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  t0 = time.perf_counter()
  try:
    run()
  except Exception as err:
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    return {
      "status": "oom" if _is_oom(err) else "error",
      "error": f"{type(err).__name__}: {err}"[:300],
    }
  seconds = time.perf_counter() - t0
  after = proc_status()
  return {
    "status": "ok",
    "seconds": seconds,
    "baseline_rss": base["VmRSS"],
    "peak_rss": after["VmHWM"],
    "peak_extra": after["VmHWM"] - base["VmRSS"],
  }


def _rss_of(pid: int) -> int:
  try:
    for line in open(f"/proc/{pid}/status"):
      if line.startswith("VmRSS"):
        return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0


def measure(
  impl: str, n: int, d: int, *, cap_gib: float, timeout_s: float = 900.0
) -> dict[str, Any]:
  """Runs one configuration in a capped child; never raises for the child's failures."""
  cfg = {"impl": impl, "n": n, "d": d, "cap_gib": cap_gib}
  env = dict(os.environ)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.Popen(
    [sys.executable, "-m", "benchmarks.memory", json.dumps(cfg)],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=env,
    cwd=root,
  )
  t0, killed = time.time(), None
  kill_above = int((cap_gib + 3.0) * 2**30)  # the cap plus room for the imports
  while proc.poll() is None:
    if time.time() - t0 > timeout_s:
      killed = f"timeout after {timeout_s:.0f} s"
    elif _rss_of(proc.pid) > kill_above:
      killed = f"killed by the parent: RSS above {cap_gib + 3.0:.1f} GiB"
    if killed:
      proc.kill()
      break
    time.sleep(0.05)
  out, err = proc.communicate()
  result: dict[str, Any] = {
    "impl": impl,
    "n": n,
    "d": d,
    "cap_gib": cap_gib,
    "wall_s": time.time() - t0,
  }
  if killed:
    result.update(status="timeout" if killed.startswith("timeout") else "oom", error=killed)
    return result
  for line in reversed(out.strip().splitlines()):
    if line.startswith("{"):
      result.update(json.loads(line))
      return result
  tail = err.strip()[-400:]
  # SIGKILL is what the kernel's OOM killer sends; an allocation failure inside XLA /
  # PyTorch usually aborts with a message naming the allocation.
  oom = proc.returncode == -9 or "alloc" in tail.lower() or "memory" in tail.lower()
  how = (
    f"killed by signal {-proc.returncode}"
    if proc.returncode < 0
    else f"exited with {proc.returncode}"
  )
  result.update(status="oom" if oom else "error", error=f"child {how}: {tail}")
  return result


def sweep(
  ns, d: int, *, impls=IMPLS, cap_gib: float, timeout_s: float = 900.0, log=print
) -> list[dict[str, Any]]:
  """Peak memory for each impl over increasing n; after an OOM, larger n are not run."""
  rows = []
  for impl in impls:
    failed_at = None
    for n in sorted(ns):
      if failed_at is not None:
        rows.append(
          {
            "impl": impl,
            "n": n,
            "d": d,
            "cap_gib": cap_gib,
            "status": "oom",
            "error": f"not run: out of memory already at n={failed_at}",
          }
        )
        continue
      r = measure(impl, n, d, cap_gib=cap_gib, timeout_s=timeout_s)
      rows.append(r)
      if r["status"] != "ok":
        failed_at = n
      peak = f"{r['peak_extra'] / 2**30:.3f} GiB" if r["status"] == "ok" else r.get("error", "")
      log(f"  memory {impl:10s} n={n:6d} d={d}: {r['status']:7s} {peak}")
  return rows


if __name__ == "__main__":
  print(json.dumps(_child(json.loads(sys.argv[1]))), flush=True)
