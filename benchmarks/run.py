"""Entry point: ``python -m benchmarks.run [--quick] [--only losses limit memory steps]``.

The full run (a quiet machine, every core):

    python -m benchmarks.run

writes ``benchmarks/results/<cpu-model>-<threads>t/results.{json,md,png}``; ``--quick``
(tiny sizes, < 3 minutes on 2 cores) writes to ``benchmarks/results/quick/...`` (ignored
by git). Targets are printed as PASS / FAIL; the run itself only fails on a bug.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import traceback
from typing import Any

from benchmarks import harness  # stdlib only at import: threads are pinned before jax/torch

SECTIONS = ("losses", "limit", "memory", "steps", "gpu", "scaling")
RESULT_KEYS = {"gpu": "gpu_steps"}  # section -> key in results.json

FULL = {
  "loss_ns": (32, 128, 512, 2048),
  "loss_ds": (256, 2048),
  "repeats": 15,
  "min_sample_s": 0.05,
  "budget_s": 30.0,  # per configuration and implementation: >= 5 samples when slow
  "compile_configs": None,  # every configuration
  "limit": ((128, 256), (512, 256), (2048, 256), (128, 2048), (512, 2048), (2048, 2048)),
  "mem_ns": (512, 1024, 2048, 4096, 8192, 16384, 32768),
  "mem_d": 256,
  "mem_cap_gib": 8.0,
  "mem_timeout_s": 1800.0,
  "step_repeats": 15,
  "fit_steps": 60,
}
QUICK = {
  "loss_ns": (32, 128),
  "loss_ds": (256,),
  "repeats": 3,
  "min_sample_s": 0.005,
  "budget_s": 5.0,
  "compile_configs": (("mk_mmd", 32, 256),),
  "limit": ((128, 2048),),
  "mem_ns": (1024,),
  "mem_d": 256,
  "mem_cap_gib": 2.0,
  "mem_timeout_s": 120.0,
  "step_repeats": 3,
  "fit_steps": 5,
}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.run",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--quick", action="store_true", help="tiny sizes, < 3 minutes (smoke run)")
  p.add_argument(
    "--only",
    nargs="+",
    choices=SECTIONS,
    default=list(SECTIONS),
    help="sections to run (default: all)",
  )
  p.add_argument("--losses", nargs="+", default=None, help="subset of mk_mmd jmmd coral cdan dann")
  p.add_argument(
    "--threads",
    type=int,
    default=None,
    help="cores for BOTH frameworks (default: every core in the affinity mask)",
  )
  p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
  p.add_argument(
    "--xla-flags",
    default="",
    help="extra XLA_FLAGS for this run, e.g. '--xla_cpu_use_onednn=true' (recorded)",
  )
  p.add_argument(
    "--slow-call-s",
    type=float,
    default=None,
    help="when dalib's first (checked) call takes longer, it is reported with that call "
    "only, not timed (its quadratic-memory MK-MMD / JMMD take tens of seconds at n >= 512)",
  )
  p.add_argument(
    "--speed-cap-gib",
    type=float,
    default=6.0,
    help="dalib configurations estimated above this are reported OOM, not run",
  )
  p.add_argument(
    "--mem-cap-gib",
    type=float,
    default=None,
    help="address-space cap per memory configuration (default 8, quick 2)",
  )
  p.add_argument(
    "--out", default=None, help="output directory (default benchmarks/results/<machine>)"
  )
  p.add_argument(
    "--budget-s",
    type=float,
    default=None,
    help="seconds per loss configuration and implementation (default 30, quick "
    "5); the slowest implementation gets >= 5 samples regardless",
  )
  p.add_argument(
    "--report-only",
    action="store_true",
    help="measure nothing: re-write results.md / .png (and the targets) from "
    "the results.json in --out",
  )
  p.add_argument(
    "--update",
    action="store_true",
    help="keep the sections of an existing results.json in --out that this run "
    "does not measure (run sections one at a time, e.g. --only steps)",
  )
  return p.parse_args(argv)


def _log(msg: str) -> None:
  print(msg, flush=True)


def run_losses(cfg, args, log=_log) -> list[dict[str, Any]]:
  from benchmarks import losses, report

  rows = []
  names = args.losses or list(losses.LOSSES)
  for loss in names:
    for d in cfg["loss_ds"]:
      for n in cfg["loss_ns"]:
        impls = ["jax", "torch_gram", "torch_fn", "dalib"]
        cc = cfg["compile_configs"]
        if not args.no_compile and (cc is None or (loss, n, d) in cc):
          impls.append("torch_compile")
        t0 = time.time()
        try:
          row = losses.run_config(
            loss,
            n,
            d,
            impls=impls,
            repeats=cfg["repeats"],
            min_sample_s=cfg["min_sample_s"],
            cap_bytes=args.speed_cap_gib * 2**30,
            budget_s=cfg["budget_s"],
            slow_call_s=args.slow_call_s,
          )
        except Exception as err:
          row = {
            "loss": loss,
            "n": n,
            "d": d,
            "impls": {},
            "error": f"{type(err).__name__}: {err}"[:300],
          }
          traceback.print_exc()
        rows.append(row)
        r = report.loss_ratios(row)
        parts = [
          f"{k}={v['median_s'] * 1e3:.3g}ms"
          for k, v in row.get("impls", {}).items()
          if "median_s" in v
        ]
        parts += [
          f"{k}={v['status']}" for k, v in row.get("impls", {}).items() if v.get("status") != "ok"
        ]
        log(
          f"  {loss:6s} n={n:5d} d={d:5d}: {' '.join(parts)} "
          f"eager/jax={r.get('speedup_vs_best_eager', float('nan')):.2f} "
          f"compile/jax={r.get('speedup_vs_compile', float('nan')):.2f} "
          f"({time.time() - t0:.0f} s){' ' + row['error'] if 'error' in row else ''}"
        )
  return rows


def run_limit(cfg, args, log=_log) -> list[dict[str, Any]]:
  from benchmarks import losses

  out = []
  for n, d in cfg["limit"]:
    r = losses.run_matmul_limit(
      n, d, repeats=cfg["repeats"], min_sample_s=cfg["min_sample_s"], budget_s=cfg["budget_s"]
    )
    log(
      f"  limit n={n} d={d}: mk_mmd {r['mk_mmd_s'] * 1e3:.3g} ms, matmuls "
      f"{r['matmul_s'] * 1e3:.3g} ms, ratio {r['ratio']:.2f} (XLA {r['matmul_gflops']:.0f} "
      f"GFLOP/s, PyTorch {r['torch_matmul_gflops']:.0f} GFLOP/s)"
    )
    out.append(r)
  return out


def run_memory(cfg, args, log=_log) -> list[dict[str, Any]]:
  from benchmarks import memory

  cap = args.mem_cap_gib or cfg["mem_cap_gib"]
  return memory.sweep(
    cfg["mem_ns"], cfg["mem_d"], cap_gib=cap, timeout_s=cfg["mem_timeout_s"], log=log
  )


def run_steps(cfg, args, log=_log) -> dict[str, Any]:
  from benchmarks import steps

  return steps.run(
    repeats=cfg["step_repeats"],
    quick=args.quick,
    compile_torch=not args.no_compile,
    fit_steps=cfg["fit_steps"],
    log=log,
  )


def run_gpu(cfg, args, log=_log) -> dict[str, Any]:
  from benchmarks import gpu

  r = gpu.run_resnet50(repeats=5 if args.quick else 15, log=log)
  log(f"    resnet50: {r['status']}")
  return r


def run_scaling(cfg, args, log=_log) -> dict[str, Any]:
  from benchmarks import gpu

  r = gpu.run_scaling(repeats=5 if args.quick else 15, log=log)
  log(f"    scaling: {r['status']}")
  return r


def _limit_address_space(extra_gib: float) -> float:
  """Safety net on a shared machine: this process may grow by ``extra_gib`` at most.

  dalib configurations estimated above ``--speed-cap-gib`` are not run at all; this
  limit (RLIMIT_AS, soft; children may raise it) turns a bad estimate into an
  allocation error that is reported as OOM instead of exhausting the machine.
  """
  import resource

  vm = 0
  for line in open("/proc/self/status"):
    if line.startswith("VmSize"):
      vm = int(line.split()[1]) * 1024
  soft, hard = resource.getrlimit(resource.RLIMIT_AS)
  limit = vm + int(extra_gib * 2**30)
  if soft == resource.RLIM_INFINITY or limit < soft:
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
  return round(limit / 2**30, 2)


def main(argv=None) -> dict[str, Any]:
  args = parse_args(argv)
  if args.report_only:
    from benchmarks import report

    if not args.out:
      raise SystemExit("--report-only needs --out (the folder holding results.json)")
    with open(os.path.join(args.out, "results.json")) as f:
      results = json.load(f)
    results["targets"] = report.evaluate_targets(results)
    paths = report.write(results, args.out)
    _log(f"== rewrote {paths['md']} and {paths['png']} from {paths['json']}")
    return results
  if args.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
  settings = harness.pin_threads(args.threads)
  harness.patch_dalib_numpy()
  harness.set_torch_threads(settings["threads"])
  import jax  # noqa: F401
  import torch  # noqa: F401

  from benchmarks import report

  as_limit = _limit_address_space(2 * args.speed_cap_gib)
  cfg = dict(QUICK if args.quick else FULL)
  if args.budget_s is not None:
    cfg["budget_s"] = args.budget_s
  t_start = time.time()
  slug = harness.machine_slug(settings["threads"])
  root = os.path.dirname(os.path.abspath(__file__))
  out = args.out or (
    os.path.join(root, "results", "quick", slug)
    if args.quick
    else os.path.join(root, "results", slug)
  )
  command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
  results: dict[str, Any] = {}
  previous = os.path.join(out, "results.json")
  if args.update and os.path.exists(previous):
    with open(previous) as f:
      results = json.load(f)
    if results.get("quick") != args.quick:
      raise SystemExit(
        f"--update: {previous} is a {'quick' if results.get('quick') else 'full'} "
        "run; do not mix quick and full sections"
      )
  from dtl_jax.provenance import git_commit

  results.update(
    {
      "git_commit": git_commit(),
      "machine_slug": slug,
      "machine": harness.machine_info(settings),
      "command": command,
      "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "quick": args.quick,
      "address_space_limit_gib": as_limit,
      "config": {k: v for k, v in cfg.items()},
    }
  )
  runners = {
    "losses": run_losses,
    "limit": run_limit,
    "memory": run_memory,
    "steps": run_steps,
    "gpu": run_gpu,
    "scaling": run_scaling,
  }
  for section in SECTIONS:
    if section not in args.only:
      continue
    _log(f"== {section}")
    t0 = time.time()
    key = RESULT_KEYS.get(section, section)
    results.get("errors", {}).pop(section, None)
    try:
      new = runners[section](cfg, args)
      if section == "losses" and args.losses and isinstance(results.get(key), list):
        # --update --losses coral: replace only those losses' rows.
        new = [r for r in results[key] if r.get("loss") not in args.losses] + new
      results[key] = new
    except Exception as err:
      traceback.print_exc()
      results.setdefault("errors", {})[section] = f"{type(err).__name__}: {err}"
    record = {
      "command": command,
      "started": results["started"],
      "git_commit": git_commit(),
      "wall_s": round(time.time() - t0, 1),
      "threads": settings["threads"],
    }
    if section == "losses" and args.losses:
      record["losses"] = list(args.losses)
    runs = results.setdefault("sections", {}).get(section, [])
    # One record per run that measured (part of) this section; a full re-run replaces them.
    partial = section == "losses" and args.losses
    results["sections"][section] = (runs if partial and isinstance(runs, list) else []) + [record]
    _log(f"   ({section}: {time.time() - t0:.0f} s)")
    # Written after every section: an interrupted run keeps what it measured.
    results["targets"] = report.evaluate_targets(results)
    report.write(results, out)
  results["wall_s"] = time.time() - t_start
  results["targets"] = report.evaluate_targets(results)
  _log("== targets")
  for t in results["targets"]:
    _log(f"  [{t['status']}] {t['target']}: {t['detail']}")
  paths = report.write(results, out)
  _log(f"== wrote {paths['json']}, {paths['md']}, {paths['png']} ({results['wall_s']:.0f} s)")
  return results


if __name__ == "__main__":
  main()
