"""The README's result tables, generated from the committed result files.

Every number the README shows about the demo, the studies and the benchmarks sits
between markers::

  <!-- generated:NAME -->
  ...
  <!-- /generated:NAME -->

and is written by this module from the JSON that the measuring code wrote (never typed
by hand)::

  python -m experiments.readme_tables            # rewrite the README's sections
  python -m experiments.readme_tables --check    # exit 1 if any section is stale

``tests/experiments/test_readme_tables.py`` runs the check, so the README cannot drift
from the committed results.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
BENCH_RESULTS = ROOT / "benchmarks" / "results"

_MARKER = re.compile(
  r"(<!-- generated:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S
)


def _load(path: Path) -> dict[str, Any]:
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: run the study that writes it first")
  return json.loads(path.read_text())


def _pm(v: Sequence[float] | None) -> str:
  return "–" if v is None else f"{v[0]:.1f} ± {v[1]:.1f}"


def _criterion(d: dict[str, Any]) -> str:
  """The label-free criterion of a results file's ``selected`` column, from its header
  (``"selected (<criterion>)"``, as the study wrote it)."""
  header = dict(d.get("columns", [])).get("selected", "")
  m = re.search(r"selected \((\w+)\)", header)
  if not m:
    raise ValueError(f"no 'selected (<criterion>)' column in the results: {header!r}")
  return m.group(1)


def _methods_by_shift(rows: list[dict], cell: Callable[[dict | None], str]) -> list[str]:
  """A markdown table of a study's rows, one line per method and one column per shift
  (``pair``), in the order they first appear; ``cell(row)`` (``None`` where a method has
  no row for a shift) fills each cell."""
  pairs = list(dict.fromkeys(r["pair"] for r in rows))
  methods = list(dict.fromkeys(r["method"] for r in rows))
  index = {(r["pair"], r["method"]): r for r in rows}
  lines = ["| method | " + " | ".join(pairs) + " |", "|---|" + "---:|" * len(pairs)]
  for m in methods:
    lines.append(f"| {m} | " + " | ".join(cell(index.get((p, m))) for p in pairs) + " |")
  return lines


def _provenance(meta: dict[str, Any]) -> str:
  m = meta.get("machine", {})
  cpu = m.get("cpu_model") or m.get("processor") or "?"
  cores = (
    f"{m['cpu_affinity_count']} of {m.get('cpu_count', '?')} cores"
    if "cpu_affinity_count" in m
    else f"x{m.get('cpu_count', '?')}"
  )
  return (
    f"git {meta.get('git_commit', '?')}, {meta.get('date_utc', '?')} UTC, {cpu} "
    f"{cores}, jax {meta.get('versions', {}).get('jax', '?')}"
  )


def demo(root: Path = RESULTS) -> str:
  """The demo's table (``experiments/results/demo/demo.json``), as the demo prints it."""
  d = _load(root / "demo" / "demo.json")
  cols = d["columns"]
  head = "| " + " | ".join(h for _, h in cols) + " |"
  lines = [head, "|" + "---|" * len(cols)]
  for r in d["rows"]:
    cells = []
    for k, _ in cols:
      v = r.get(k)
      cells.append("–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v))
    lines.append("| " + " | ".join(cells) + " |")
  total = d["metadata"].get("total_seconds")
  seeds = ", ".join(str(x) for x in d["metadata"].get("seeds", [])) or "?"
  lines += [
    "",
    f"Seed {seeds}; whole demo {total:.0f} s of wall time; {_provenance(d['metadata'])}.",
  ]
  return "\n".join(lines)


def two_moons(root: Path = RESULTS) -> str:
  """Source-only vs DANN on two moons: both settings, mean ± std over seeds."""
  found = {
    label: _load(root / sub / "two_moons.json")
    for sub, label in (
      ("two_moons", "library defaults"),
      ("two_moons_paper_settings", "paper's shallow net (15 units, λ = 6)"),
    )
    if (root / sub / "two_moons.json").exists()
  }
  criteria = {_criterion(d) for d in found.values()}
  if len(criteria) > 1:
    raise ValueError(f"the two-moons results select with different criteria {sorted(criteria)}")
  lines = [
    "| settings | method | target acc., last step (%) | "
    f"selected ({next(iter(criteria), '?')}) (%) | seeds |",
    "|---|---|---:|---:|---:|",
  ]
  for label, d in found.items():
    for r in d["rows"]:
      lines.append(
        f"| {label} | {r['method']} | {_pm(r['last'])} | {_pm(r['selected'])} | {r['n_seeds']} |"
      )
  return "\n".join(lines)


def digits_benchmark(root: Path = RESULTS) -> str:
  """Selected accuracy per method and shift; ↓ marks negative transfer."""
  d = _load(root / "digits_benchmark" / "digits_benchmark.json")
  lines = _methods_by_shift(
    d["rows"],
    lambda r: (
      "" if r is None else _pm(r["selected"]) + (" ↓" if r.get("negative_transfer") else "")
    ),
  )
  meta = d["metadata"]
  cfg = meta.get("config", {})  # the per-run engine config
  steps = cfg.get("train", {}).get("num_steps", "?")
  size = cfg.get("data", {}).get("image_size", "?")
  lines += [
    "",
    f"Target test accuracy (%) at the label-free selected checkpoint (`{_criterion(d)}`), "
    f"mean ± std over seeds {list(meta.get('seeds', []))}; ↓ = below source_only "
    f"(negative transfer). {steps} steps of {cfg.get('data', {}).get('batch_size', '?')}"
    f" + {cfg.get('data', {}).get('batch_size', '?')} images, {size}x{size} inputs; "
    f"{_provenance(meta)}.",
  ]
  by_commit = [n for n in d.get("notes", []) if n.startswith("Runs by code commit:")]
  if by_commit:  # a study continued after a fix: say which commit ran which runs
    lines[-1] += " " + by_commit[0]
  return "\n".join(lines)


def transferability(root: Path = RESULTS) -> str:
  """Task-B accuracy against n for AnB, AnB+, BnB, BnB+ (mean ± std over seeds)."""
  d = _load(root / "transferability" / "transferability.json")
  nets = ["BnB", "BnB+", "AnB", "AnB+"]
  by = {(r["network"], r["n"]): r["acc"] for r in d["rows"]}
  ns = sorted({r["n"] for r in d["rows"] if isinstance(r["n"], int)})
  lines = ["| n | " + " | ".join(nets) + " |", "|---:|" + "---:|" * len(nets)]
  for n in ns:
    lines.append(f"| {n} | " + " | ".join(_pm(by.get((k, n))) for k in nets) + " |")
  base = {r["network"]: r["acc"] for r in d["rows"] if not isinstance(r["n"], int)}
  meta = d["metadata"]
  lines += [
    "",
    "Task-B test accuracy (%), mean ± std over seeds "
    f"{list(meta.get('seeds', []))}; "
    + ", ".join(f"{k} {_pm(v)}" for k, v in base.items())
    + f"; {_provenance(meta)}.",
  ]
  return "\n".join(lines)


def _bench_results(root: Path = BENCH_RESULTS) -> list[dict[str, Any]]:
  out = []
  for p in sorted(root.glob("*/results.json")):
    r = json.loads(p.read_text())
    if not r.get("quick"):
      out.append(r)
  if not out:
    raise FileNotFoundError(f"no full benchmark results under {root}: run python -m benchmarks.run")
  return out


def benchmarks(root: Path = BENCH_RESULTS) -> str:
  """Targets (PASS / FAIL) and JAX speed-ups per loss, for each committed machine."""
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  from benchmarks import report

  lines = []
  for res in _bench_results(root):
    m = res["machine"]
    threads = m["threads"]["threads"] if isinstance(m["threads"], dict) else m["threads"]
    lines += [
      f"**{res['machine_slug']}** ({m['cpu_model']}, {threads} thread(s) for both "
      f"frameworks; jax {m['jax']}, torch {m['torch']}; git {res.get('git_commit', '?')},"
      f" started {res['started']}; `benchmarks/results/{res['machine_slug']}/results.md`):",
      "",
      "| target | status | detail |",
      "|---|---|---|",
    ]
    for t in res.get("targets", []):
      lines.append(f"| {t['target']} | **{t['status']}** | {t['detail']} |")
    kinds = [kind for kind, _ in report.loss_fail_reasons(res)]
    if kinds:
      lines += [
        "",
        "Loss configurations below a target, by reason (`report.explain_loss_fails`, one "
        "line each in `results.md`): "
        + ", ".join(
          f"{kinds.count(k)} {text}" for k, text in report.FAIL_REASONS.items() if k in kinds
        )
        + ".",
      ]
    rows = [r for r in res.get("losses", []) if "error" not in r]
    if rows:
      sizes = list(dict.fromkeys((r["d"], r["n"]) for r in rows))
      names = list(dict.fromkeys(r["loss"] for r in rows))
      by = {(r["loss"], r["d"], r["n"]): report.loss_ratios(r) for r in rows}
      lines += [
        "",
        "Loss forward + gradient, JAX speed-up: best PyTorch eager time / JAX time "
        "(torch.compile time / JAX time in brackets):",
        "",
        "| loss | " + " | ".join(f"d={d} n={n}" for d, n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
      ]
      for name in names:
        cells = []
        for d, n in sizes:
          r = by.get((name, d, n), {})
          e, c = r.get("speedup_vs_best_eager"), r.get("speedup_vs_compile")
          cells.append(("–" if e is None else f"{e:.2f}") + ("" if c is None else f" ({c:.2f})"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    steps = (res.get("steps") or {}).get("rows", [])
    if steps:
      lines += [
        "",
        "Training step (PyTorch eager time / JAX time; > 1 means JAX is faster):",
        "",
        "| step | variant | JAX median | PyTorch eager / JAX |",
        "|---|---|---:|---:|",
      ]
      for row in steps:
        for v in row["variants"]:
          if v.get("status") != "ok" or not v["variant"].startswith("jax"):
            continue
          ratio = v.get("torch_over_this")
          lines.append(
            f"| {row['name']} | {v['variant']} | {v['median_s'] * 1e3:.1f} ms | "
            + ("–" if ratio is None else f"{ratio:.2f}")
            + " |"
          )
    lines.append("")
  return "\n".join(lines).rstrip()


def source_free(root: Path = RESULTS) -> str:
  """Source-free adaptation: target accuracy per shift and method (mean ± std over seeds)."""
  d = _load(root / "source_free" / "source_free.json")
  methods = list(dict.fromkeys(r["method"] for r in d["rows"]))
  pairs = list(dict.fromkeys(r["pair"] for r in d["rows"]))
  by = {(r["pair"], r["method"]): r for r in d["rows"]}
  lines = ["| method | " + " | ".join(pairs) + " |", "|---|" + "---:|" * len(pairs)]
  for m in methods:
    cells = []
    for p in pairs:
      r = by.get((p, m))
      flag = (
        " ↑"
        if r and r.get("flag") == "better beyond the spread"
        else (" ↓" if r and r.get("flag") == "worse beyond the spread" else "")
      )
      cells.append(_pm(r["acc"] if r else None) + flag)
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  meta = d["metadata"]
  lines += [
    "",
    f"Target test accuracy (%), mean ± std over seeds {list(meta.get('seeds', []))}; "
    "↑ / ↓ = above / below source_only by more than the larger seed std; "
    f"{_provenance(meta)}.",
  ]
  return "\n".join(lines)


def real_digits(root: Path = RESULTS) -> str:
  """Real digit shifts: every method's label-free selected accuracy per shift (with the
  negative-transfer flag of its Δ CI), then dtl_jax beside the same runs in PyTorch with
  TLlib's modules (``experiments/torch_digits.py``: last-step accuracy and seconds per
  run), each with the published numbers."""
  d = _load(root / "real_digits" / "real_digits.json")
  rows = {(r["pair"], r["method"]): r for r in d["rows"]}
  pairs = list(dict.fromkeys(r["pair"] for r in d["rows"]))
  flags = {"helps": " ↑", "NEGATIVE TRANSFER": " ↓"}
  lines = _methods_by_shift(
    d["rows"],
    lambda r: "–" if r is None else _pm(r["selected"]) + flags.get(r.get("flag", ""), ""),
  )
  published = {
    p: ", ".join(
      f"{r['method']} {r['published']}"
      for r in d["rows"]
      if r["pair"] == p and r.get("published") is not None
    )
    for p in pairs
  }
  seeds = sorted({r["n_seeds"] for r in d["rows"]})
  criterion = _criterion(d)
  meta = d["metadata"]
  lines += [
    "",
    f"Target test accuracy (%) at the checkpoint the label-free criterion `{criterion}` "
    "picks, mean ± std over "
    f"{'/'.join(str(n) for n in seeds)} seeds; ↑ / ↓ = the 95% bootstrap CI of the "
    "difference to source_only is above / below 0. Published (a different scale of data "
    "and training, for orientation): "
    + "; ".join(f"{p}: {v}" for p, v in published.items() if v)
    + f". {_provenance(meta)}.",
  ]
  torch_path = root / "torch_digits" / "torch_digits.json"
  if not torch_path.exists():
    return "\n".join(lines)
  t = _load(torch_path)
  lines += [
    "",
    "The same runs in PyTorch with TLlib's released modules (dalib 0.2), same data, "
    "batches, initial weights and schedules (`experiments/torch_digits.py`):",
    "",
    "| shift | method | dtl_jax last | PyTorch + TLlib last | seeds | dtl_jax s/run | "
    "PyTorch s/run | published |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in t["rows"]:
    pub = rows.get((r["pair"], r["method"]), {}).get("published")
    lines.append(
      f"| {r['pair']} | {r['method']} | {_pm(r['jax_last'])} | {_pm(r['torch_last'])} | "
      f"{r['n_seeds']} | {r['jax_s']} | {r['torch_s']} | {'–' if pub is None else pub} |"
    )
  lines += [
    "",
    "Last-step target test accuracy (%), mean ± std over the seeds both frameworks "
    "finished (a diverged run has no last step); seconds per run include data, model "
    f"building, training and every evaluation, one core each; {_provenance(t['metadata'])}.",
  ]
  return "\n".join(lines)


def validators(root: Path = RESULTS) -> str:
  """The validator study: each label-free criterion's shortfall below the oracle over the
  studies' shifts, its paired gain over the default and the verdict
  (``experiments/validators.py``)."""
  d = _load(root / "validators" / "validators.json")
  meta, notes, d = d["metadata"], d["notes"], d["extra"]
  paired = d.get("paired_vs_default", {})
  ranked = {p: r for p, r in d["analysis"].items() if r["n_checkpoints"]}
  corr = {
    c: sum(r["criteria"][c]["spearman"] for r in ranked.values()) / len(ranked)
    for c in d["shortfall"]
    if ranked and all(c in r["criteria"] for r in ranked.values())
  }
  lines = [
    "| criterion | mean shortfall below the oracle (points) | worst shortfall (shift) | "
    f"vs the default, per run [95% CI] | Spearman ρ over the checkpoints of "
    f"{', '.join(ranked) or '–'} |",
    "|---|---:|---:|---:|---:|",
  ]
  for c, g in sorted(d["shortfall"].items(), key=lambda kv: kv[1]["mean"]):
    v = paired.get(c)
    vs = f"{v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]" if v else "default"
    rho = f"{corr[c]:+.2f}" if c in corr else "–"
    lines.append(
      f"| {c} | {g['mean']:.2f} | {g['worst']:.2f} ({g['worst_shift']}) | {vs} | {rho} |"
    )
  verdict = next((n for n in notes if n.startswith("Verdict")), "")
  shifts = ", ".join(f"{p} ({r['n_runs']} runs)" for p, r in d["analysis"].items())
  lines += ["", f"Shifts: {shifts}. {verdict} {_provenance(meta)}."]
  return "\n".join(lines)


def _per_machine(root: Path, filename: str, command: str, body: Callable[[dict], str]) -> str:
  """Every committed ``<machine>/<filename>`` under ``root``: its path, a colon, then
  ``body(result)`` (which starts with its own separator)."""
  paths = sorted(root.glob(f"*/{filename}"))
  if not paths:
    raise FileNotFoundError(f"no {filename} under {root}: run {command} first")
  return "\n\n".join(f"`{path.relative_to(ROOT)}`:{body(_load(path))}" for path in paths)


def _report_per_machine(root: Path, filename: str, module: str) -> str:
  """Every committed ``<machine>/<filename>`` as ``benchmarks.<module>.markdown`` renders
  it, without its title."""
  markdown = importlib.import_module(f"benchmarks.{module}").markdown
  return _per_machine(
    root,
    filename,
    f"python -m benchmarks.{module}",
    lambda result: " " + markdown(result).split("\n", 2)[2].strip(),
  )


def input_pipeline(root: Path = BENCH_RESULTS) -> str:
  """The input-pipeline benchmark's tables (``benchmarks/input_pipeline.py``), per machine."""
  return _report_per_machine(root, "input_pipeline.json", "input_pipeline")


def office_scale(root: Path = BENCH_RESULTS) -> str:
  """The Office-31-scale end-to-end run (``benchmarks/office_scale.py``), per machine."""
  return _report_per_machine(root, "office_scale.json", "office_scale")


def spread(root: Path = BENCH_RESULTS) -> str:
  """The benchmark repeated in separate processes (``benchmarks/spread.py``), per machine,
  thread count and sections."""
  return _report_per_machine(root, "spread_*/spread.json", "spread")


def e2e(root: Path = BENCH_RESULTS) -> str:
  """The end-to-end benchmark's tables (``benchmarks/e2e.py``), per machine and threads."""
  from benchmarks.e2e import to_markdown

  return _per_machine(
    root,
    "e2e.json",
    "python -m benchmarks.e2e",
    lambda result: (
      "\n\n" + to_markdown(result).replace("\n## ", "\n#### ").split("\n", 2)[2].strip()
    ),
  )


def speed_changes(root: Path = BENCH_RESULTS) -> str:
  """Before / after of each library speed change (``benchmarks/changes.py``), from the
  committed ``changes.json``."""
  from benchmarks.changes import to_markdown

  path = root / "changes.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: run python -m benchmarks.changes first")
  return to_markdown(_load(path)).split("\n", 2)[2].strip()  # without its title


SECTIONS: dict[str, Callable[[], str]] = {
  "end_to_end": e2e,
  "speed_changes": speed_changes,
  "input_pipeline": input_pipeline,
  "office_scale": office_scale,
  "spread": spread,
  "real_digits": real_digits,
  "validators": validators,
  "demo": demo,
  "source_free": source_free,
  "two_moons": two_moons,
  "digits_benchmark": digits_benchmark,
  "transferability": transferability,
  "benchmarks": benchmarks,
}


def render(readme: str, sections: dict[str, Callable[[], str]] | None = None) -> str:
  """``readme`` with every generated section replaced by its current content.

  Raises:
    ValueError: a marker names an unknown section.
  """
  sections = SECTIONS if sections is None else sections

  def sub(m: re.Match) -> str:
    name = m.group("name")
    if name not in sections:
      raise ValueError(f"README marker names unknown section {name!r}; known: {sorted(sections)}")
    return m.group(1) + sections[name]().rstrip("\n") + "\n" + m.group(4)

  return _MARKER.sub(sub, readme)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
  p.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
  p.add_argument("--readme", default=str(ROOT / "README.md"))
  args = p.parse_args(argv)
  path = Path(args.readme)
  old = path.read_text()
  new = render(old)
  if args.check:
    if new != old:
      print(f"{path}: generated sections are stale; run python -m experiments.readme_tables")
      return 1
    print(f"{path}: generated sections match the committed results")
    return 0
  if new != old:
    path.write_text(new)
    print(f"rewrote the generated sections of {path}")
  else:
    print(f"{path}: already up to date")
  return 0


if __name__ == "__main__":
  sys.exit(main())
