"""Where a compiled JAX computation spends its time, op by op (XLA:CPU), for the FAILs.

``python -m benchmarks.op_profile [--threads 1] [--loss dann:512:256 ...] [--e2e dann ...]``

Each target is compiled as the benchmarks compile it (a loss of :mod:`benchmarks.losses`
with XLA's defaults; an end-to-end step as ``fit``'s ``jit`` driver builds it, see
:func:`benchmarks.e2e._child_profile`), run a few times, then traced with
``jax.profiler.trace``; the trace's XLA op events (one per thunk: a fusion, a dot, a
convolution, a copy) are summed per op and matched with the op's line in the optimized
HLO (``compiled.as_text()``), which says what it is: a ``ynn_fusion`` (YNNPACK), a plain
``dot`` / ``convolution`` (XLA's own Eigen kernels), a loop fusion, and the ``op_name``
of the JAX code it came from. Writes ``benchmarks/results/<machine>/op_profile.{json,md}``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

from benchmarks import harness  # stdlib only at import: threads are pinned before jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hlo_ops(hlo_text: str) -> dict[str, str]:
  """Instruction name -> a short description from its line in the optimized HLO."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (\w+)\(", line)
    if not m:
      continue
    name, shape, opcode = m.groups()
    kind = "ynn_fusion (YNNPACK)" if '"__ynn_fusion"' in line else opcode
    dims = re.search(r"(lhs_contracting_dims=\{[\d,]*\}, rhs_contracting_dims=\{[\d,]*\})", line)
    op_name = re.search(r'op_name="([^"]+)"', line)
    desc = f"{kind} -> {shape}"
    if dims:
      desc += f" [{dims.group(1)}]"
    if op_name:
      desc += f" ({op_name.group(1).split('/', 1)[-1]})"
    out[name] = desc
  return out


def profile_compiled(
  compiled: Any, args: tuple, *, calls: int = 3, top: int = 12
) -> dict[str, Any]:
  """Times ``compiled(*args)`` and sums its traced XLA ops (ms per call), largest first."""
  import jax

  for _ in range(3):
    jax.block_until_ready(compiled(*args))
  t = time.perf_counter()
  for _ in range(calls):
    jax.block_until_ready(compiled(*args))
  per_call = (time.perf_counter() - t) / calls
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(calls):
        jax.block_until_ready(compiled(*args))
    (path,) = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  described = hlo_ops(compiled.as_text())
  total: collections.Counter = collections.Counter()
  for e in events:  # the XLA op events: named after an instruction of the compiled HLO
    if e.get("ph") == "X" and e["name"] in described:
      total[e["name"]] += e.get("dur", 0.0) / 1e3 / calls  # us -> ms per call
  ops_ms = sum(total.values())
  return {
    "ms_per_call": per_call * 1e3,
    "ops_ms": ops_ms,
    "top": [
      {"op": k, "ms": v, "share": v / ops_ms, "hlo": described[k]}
      for k, v in total.most_common(top)
    ],
    "by_kind": _by_kind(total, described, ops_ms),
  }


def _by_kind(total, described, ops_ms) -> dict[str, float]:
  kinds: collections.Counter = collections.Counter()
  for k, v in total.items():
    d = described[k]
    kind = d.split(" -> ")[0]
    if kind == "dot" and "contracting_dims={0}" in d:
      kind = "dot (contracting dim 0: a weight gradient)"
    kinds[kind] += v
  return {k: v / ops_ms for k, v in kinds.most_common()}


def _loss_target(spec: str):
  import jax

  from benchmarks import losses

  loss, n, d = spec.split(":")
  prob = losses.make_problem(loss, int(n), int(d))
  args = tuple(jax.device_put(prob.jax_args))
  compiled = jax.jit(prob.jax_fn).lower(*args).compile()  # as benchmarks.losses compiles it
  return f"loss {loss} n={n} d={d} (forward + gradient, XLA defaults)", compiled, args


def _e2e_target(method: str):
  import jax

  from benchmarks import e2e

  driver, state, batch = e2e.jax_step(method)
  batch = {k: jax.numpy.asarray(v) for k, v in batch.items()}
  compiled = driver.step.lower(state, batch).compile()
  holder = [state]

  class Step:  # donated state: each call continues from the last one's output
    def __call__(self, b):
      holder[0], metrics = compiled(holder[0], b)
      return metrics

    def as_text(self):
      return compiled.as_text()

  return f"end-to-end {method} step, 64 + 64 (fit's jit driver and XLA options)", Step(), (batch,)


def to_markdown(res: dict[str, Any]) -> str:
  lines = [
    f"# XLA:CPU op profiles — {res['machine_slug']}",
    "",
    f"- command: `{res['command']}`; git {res['git_commit']}; started {res['started']}; "
    f"jax {res['jax']}; {res['threads']} thread(s)",
    "- per op: time summed over the traced calls / calls (ms), share of all op time, and the "
    "op's line in the optimized HLO (kind -> shape [dot dimensions] (JAX op_name)).",
    "",
  ]
  for t in res["targets"]:
    p = t["profile"]
    lines += [
      f"## {t['name']}",
      "",
      f"{p['ms_per_call']:.1f} ms per call untraced; op time by kind: "
      + ", ".join(f"{k} {v:.0%}" for k, v in p["by_kind"].items() if v >= 0.01)
      + ".",
      "",
      "| op | ms per call | share | HLO |",
      "|---|---:|---:|---|",
      *[f"| {o['op']} | {o['ms']:.2f} | {o['share']:.0%} | {o['hlo']} |" for o in p["top"]],
      "",
    ]
  return "\n".join(lines)


def main(argv=None) -> dict[str, Any]:
  p = argparse.ArgumentParser(prog="python -m benchmarks.op_profile", description=__doc__)
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--loss", nargs="*", default=["dann:512:256", "cdan:512:256"])
  p.add_argument(
    "--e2e", nargs="*", default=["dann", "cdan"], choices=("source_only", "dann", "dan", "cdan")
  )
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  settings = harness.pin_threads(args.threads)
  import jax

  from dtl_jax.provenance import git_commit

  res: dict[str, Any] = {
    "command": "python -m benchmarks.op_profile "
    + " ".join(sys.argv[1:] if argv is None else argv),
    "git_commit": git_commit(),
    "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "machine_slug": harness.machine_slug(args.threads),
    "threads": args.threads,
    "settings": settings,
    "jax": jax.__version__,
    "targets": [],
  }
  builders = [(_loss_target, s) for s in args.loss] + [(_e2e_target, m) for m in args.e2e]
  for build, spec in builders:
    name, compiled, call_args = build(spec)
    prof = profile_compiled(compiled, call_args)
    res["targets"].append({"name": name, "spec": spec, "profile": prof})
    top = prof["top"][0]
    print(
      f"{name}: {prof['ms_per_call']:.1f} ms; top op {top['op']} {top['ms']:.1f} ms", flush=True
    )
  out = args.out or os.path.join(ROOT, "benchmarks", "results", res["machine_slug"])
  print(harness.write_json_md(out, "op_profile", res, to_markdown(res)), flush=True)
  return res


if __name__ == "__main__":
  main()
