"""The full benchmark repeated in separate processes: how far one process's numbers move.

``python -m benchmarks.spread --processes 3 --threads 1 --only steps [-- RUN_ARGS ...]``

Runs ``python -m benchmarks.run --threads T --only ... --out DIR/process_<k>`` ``K`` times,
one fresh process after the other (each with its own compilation, allocator state, thread
pools and page placement: what one in-process median cannot see), then reads their
``results.json`` and writes ``DIR/spread.{json,md}``: for every measurement the processes
share (each loss configuration and implementation, the ratios the loss targets judge --
best eager / JAX and torch.compile / JAX -- per configuration, each training-step variant,
the MK-MMD limit ratios, the step targets' PyTorch / JAX ratio), the value of each process,
their median and the relative spread ``(max - min) / median``; and whether each target's
PASS / FAIL is the same in every process. Default ``DIR``:
``benchmarks/results/<machine>-<threads>t/spread_<sections>/`` (under ``results/quick/``,
ignored by git, when the arguments for ``benchmarks.run`` include ``--quick``, as
``benchmarks.run`` does). Arguments after ``--`` go
to ``benchmarks.run`` unchanged (e.g. ``--budget-s 30``, ``--losses mk_mmd``).
``python -m benchmarks.spread --again DIR`` re-aggregates an earlier spread's processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import harness, report

ROOT = os.path.dirname(os.path.abspath(__file__))


def measurements(results: Mapping[str, Any]) -> dict[str, float]:
  """Every timing and ratio of one ``results.json`` that a repeat can be compared on,
  keyed by a readable name (seconds end in ``, s``)."""
  out: dict[str, float] = {}
  for row in results.get("losses") or []:
    config = f"{row['loss']} n={row['n']} d={row['d']}"
    for impl, t in row["impls"].items():
      if t.get("status") == "ok" and "median_s" in t:
        out[f"{config} {impl}, s"] = t["median_s"]
    # the ratios the loss targets judge, as measurements of their own
    ratios = report.loss_ratios(row)
    if "speedup_vs_best_eager" in ratios:
      out[f"{config} best eager / jax"] = ratios["speedup_vs_best_eager"]
    if "speedup_vs_compile" in ratios:
      out[f"{config} torch.compile / jax"] = ratios["speedup_vs_compile"]
  for row in results.get("limit") or []:
    out[f"mk_mmd n={row['n']} d={row['d']} / its matmul bound"] = row["ratio"]
  for row in (results.get("steps") or {}).get("rows") or []:
    for v in row["variants"]:
      if v.get("status") != "ok":
        continue
      out[f"{row['name']} {v['variant']}, s"] = v["median_s"]
      if v["variant"] == "jax" and "torch_over_this" in v:
        out[f"{row['name']} PyTorch eager / jax"] = v["torch_over_this"]
  return out


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """The spread of :func:`measurements` and of the targets' verdicts over ``runs``.

  Returns:
    ``{"rows": [{"name", "values", "median", "min", "max", "spread"}], "targets":
    [{"target", "statuses", "agree"}], "summary": {...}}``; only measurements present
    in every run are compared (a missing one is listed in ``summary["not_in_all"]``).
  """
  if len(runs) < 2:
    raise ValueError(f"need at least 2 runs to measure a spread, got {len(runs)}")
  per_run = [measurements(r) for r in runs]
  names = [k for k in per_run[0] if all(k in m for m in per_run[1:])]
  rows = []
  for name in names:
    values = [m[name] for m in per_run]
    med = statistics.median(values)
    rows.append(
      {
        "name": name,
        "values": values,
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / med if med > 0 else float("nan"),
      }
    )
  targets = []
  for t in runs[0].get("targets") or []:
    statuses = [
      next((u["status"] for u in r.get("targets") or [] if u["target"] == t["target"]), None)
      for r in runs
    ]
    if any(s in ("PASS", "FAIL") for s in statuses):
      targets.append(
        {"target": t["target"], "statuses": statuses, "agree": len(set(statuses)) == 1}
      )
  spreads = [r["spread"] for r in rows]
  summary = {
    "runs": len(runs),
    "measurements": len(rows),
    "median_spread": statistics.median(spreads) if spreads else None,
    "max_spread": max(spreads) if spreads else None,
    "max_spread_of": rows[spreads.index(max(spreads))]["name"] if spreads else None,
    "targets_agree": all(t["agree"] for t in targets),
    "not_in_all": sorted({k for m in per_run for k in m} - set(names)),
  }
  return {"rows": rows, "targets": targets, "summary": summary}


def markdown(result: Mapping[str, Any]) -> str:
  """``spread.md``: the summary, the targets' verdicts and one row per measurement."""
  s, m = result["summary"], result["machine"]
  k = s["runs"]
  lines = [
    "# The benchmark repeated in separate processes",
    "",
    f"`{result['command']}` at commit {result['git_commit']}: {k} processes of "
    f"`{result['run_command']}`, one after the other, on {m.get('cpu_model', '?')} "
    f"({result['threads']} thread{'s' * (result['threads'] > 1)}; load average "
    f"{result['load_average'][0]:.1f} at the start; {result['wall_s'] / 60:.0f} min in all). "
    f"Spread = (max - min) / median over the processes: median {100 * s['median_spread']:.1f}% "
    f"over {s['measurements']} measurements, largest {100 * s['max_spread']:.1f}% "
    f"({s['max_spread_of']}). Targets with the same verdict in every process: "
    f"{'all' if s['targets_agree'] else 'NOT all'}.",
    "",
  ]
  if result["targets"]:
    lines += ["| target | " + " | ".join(f"process {i + 1}" for i in range(k)) + " |"]
    lines += ["|---|" + "---|" * k]
    for t in result["targets"]:
      lines.append(f"| {t['target']} | " + " | ".join(map(str, t["statuses"])) + " |")
    lines.append("")
  lines += [
    "| measurement | " + " | ".join(f"process {i + 1}" for i in range(k)) + " | median | spread |"
  ]
  lines += ["|---|" + "---:|" * (k + 2)]
  for r in result["rows"]:
    vals = " | ".join(f"{v:.4g}" for v in r["values"])
    lines.append(f"| {r['name']} | {vals} | {r['median']:.4g} | {100 * r['spread']:.1f}% |")
  return "\n".join(lines) + "\n"


def _process_results(out: str, k: int) -> dict[str, Any]:
  """The ``results.json`` of process ``k`` of the spread in ``out``."""
  with open(os.path.join(out, f"process_{k}", "results.json")) as f:
    return json.load(f)


def again(out: str) -> dict[str, Any]:
  """Re-aggregates the processes of the spread in ``out`` (see ``--again``)."""
  with open(os.path.join(out, "spread.json")) as f:
    earlier = json.load(f)
  runs = [_process_results(out, k) for k in range(1, earlier["summary"]["runs"] + 1)]
  result = aggregate(runs)
  keep = ("command", "run_command", "git_commit", "threads", "machine", "load_average", "wall_s")
  result.update({k: earlier[k] for k in keep})
  print(harness.write_json_md(out, "spread", result, markdown(result)))
  return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  argv = list(sys.argv[1:] if argv is None else argv)
  command = "python -m benchmarks.spread " + " ".join(argv)
  run_args: list[str] = []
  if "--" in argv:
    i = argv.index("--")
    argv, run_args = argv[:i], argv[i + 1 :]
  p = argparse.ArgumentParser(prog="python -m benchmarks.spread", description=__doc__)
  p.add_argument("--processes", type=int, default=3)
  p.add_argument("--threads", type=int, default=None, help="required unless --again")
  p.add_argument("--only", nargs="+", default=["losses", "limit", "steps"])
  p.add_argument("--out", default=None)
  p.add_argument(
    "--again",
    metavar="DIR",
    default=None,
    help="run nothing: re-aggregate the process_<k>/results.json of an earlier spread "
    "in DIR (after a change to what is compared), keeping its command, commit, load "
    "and wall time",
  )
  args = p.parse_args(argv)
  if args.again:
    return again(args.again)
  if args.threads is None:
    p.error("--threads is required (unless --again DIR)")
  if args.processes < 2:
    p.error(f"--processes must be >= 2, got {args.processes}")
  slug = harness.machine_slug(args.threads)
  # quick runs go where benchmarks.run puts its own: results/quick/ (ignored by git)
  results = os.path.join(ROOT, "results", *(["quick"] if "--quick" in run_args else []))
  out = args.out or os.path.join(results, slug, "spread_" + "_".join(args.only))
  os.makedirs(out, exist_ok=True)
  load = os.getloadavg()
  t0 = time.perf_counter()
  runs = []
  base = ["-m", "benchmarks.run", "--threads", str(args.threads), "--only", *args.only]
  for k in range(1, args.processes + 1):
    run_out = os.path.join(out, f"process_{k}")
    cmd = [sys.executable, *base, *run_args, "--out", run_out]
    print(f"[spread] process {k}/{args.processes}: {' '.join(cmd[1:])}", flush=True)
    with open(os.path.join(out, f"process_{k}.log"), "w") as log:
      subprocess.run(
        cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(ROOT)
      )
    runs.append(_process_results(out, k))
  result = aggregate(runs)
  from dtl_jax.provenance import git_commit

  result.update(
    command=command,
    run_command="python " + " ".join(base + run_args),
    git_commit=git_commit(),
    threads=args.threads,
    machine=runs[0].get("machine", {}),
    load_average=list(load),
    wall_s=time.perf_counter() - t0,
  )
  print(harness.write_json_md(out, "spread", result, markdown(result)))
  print(markdown(result).split("\n| measurement")[0])
  return result


if __name__ == "__main__":
  main()
