"""Study 2: the digits benchmark -- every method, three shifts, several seeds.

For each seed, pair and method (``experiments/configs/digits_benchmark.py``) one
``dtl_jax.train.fit`` run with the digits protocol (``experiments/configs/digits.py``).
Writes to ``--out`` (default ``experiments/results/digits_benchmark``):

* ``runs.jsonl`` -- one line per finished run (appended as they finish; an interrupted
  study continues with ``--continue``, skipping finished runs);
* ``digits_benchmark.md`` / ``.json`` -- per pair and method, mean ± std over seeds of
  the target test accuracy at the label-free selected checkpoint, at the last step,
  and the oracle (labeled as such), with methods below ``source_only`` flagged as
  negative transfer; config, seeds, versions, machine;
* ``digits_benchmark.png`` -- the selected accuracies per pair, source_only marked.

  python -m experiments.digits_benchmark [--quick] [--out DIR] [--overwrite | --continue]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dtl_jax import config as config_lib
from dtl_jax import provenance, report
from dtl_jax import runs as runs_lib
from dtl_jax.train import fit, load_domains

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "digits_benchmark.py"
RUN_CONFIG = HERE / "configs" / "digits.py"
ADDA = config_lib.load_config_module(HERE / "configs" / "adda.py")
DEFAULT_OUT = HERE / "results" / "digits_benchmark"


def enable_compilation_cache(path: str | Path | None = None) -> None:
  """Persistent XLA cache: a method's step compiles once for all seeds and pairs."""
  import jax

  path = Path(path or Path.home() / ".cache" / "dtl_jax" / "jax_cache")
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_config(
  method: str,
  source: str,
  target: str,
  seed: int,
  study,
  overrides: Sequence[str] = (),
  init_from: str = "",
):
  c = config_lib.load_config(f"{RUN_CONFIG}:{'source_only' if method == 'adda' else method}")
  if method == "adda":
    ADDA.adda_stage2(c, init_from)
  c.data.source, c.data.target, c.seed = source, target, int(seed)
  c.data.image_size = int(study.image_size)
  c.train.num_steps = study.steps
  c.train.eval_every = study.eval_every
  c.train.checkpoint_every = study.steps
  c.train.log_every = min(50, study.steps)
  config_lib.apply_overrides(c, overrides)
  return c


def run(study, *, out: Path, overrides: Sequence[str] = (), progress: bool = True) -> list[dict]:
  runs_file = out / "runs.jsonl"
  done: dict[tuple, dict] = {}
  if runs_file.exists():
    for r in read_runs(out):
      done[(r["pair"], r["method"], r["seed"])] = r
  pairs = [tuple(p.split("->")) for p in study.pairs]
  methods = list(study.methods)
  if "adda" in methods and "source_only" in methods:  # adda stage 2 starts from it.
    methods.remove("adda")
    methods.insert(methods.index("source_only") + 1, "adda")
  total = len(study.seeds) * len(pairs) * len(methods)
  k = 0
  for seed in study.seeds:
    for source, target in pairs:
      pair = f"{source}→{target}"
      for m in methods:
        k += 1
        if (pair, m, int(seed)) in done:
          continue
        wd = out / "runs" / f"{source}-{target}" / f"{m}_seed{seed}"
        init_from = str(out / "runs" / f"{source}-{target}" / f"source_only_seed{seed}")
        if m == "adda" and "source_only" not in methods:
          raise config_lib.ConfigError("adda needs source_only in the methods (its stage 1)")
        c = run_config(m, source, target, seed, study, overrides, init_from=init_from)
        if progress:
          print(f"[{k}/{total}] seed {seed} {pair} {m}", flush=True)
        t0 = time.perf_counter()
        try:
          c.train.progress = False
          result = fit(c, wd, overwrite=True)
        except Exception as e:
          # One method failing must not lose the others: record it, report it.
          msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
          print(f"    FAILED: {msg}", flush=True)
          rec = {"pair": pair, "method": m, "seed": int(seed), "error": msg}
          done[(pair, m, int(seed))] = rec
          with open(runs_file, "a") as f:
            f.write(json.dumps(rec) + "\n")
          continue
        s = runs_lib.result_summary(result)
        rec = {
          "pair": pair,
          "method": m,
          "seed": int(seed),
          "selected": s["selected"],
          "selected_step": s["selected_step"],
          "last": s["last"],
          "oracle": s["oracle"],
          "source_acc": s["source_acc"],
          "by_criterion": s["by_criterion"],
          "seconds": time.perf_counter() - t0,
          "steps_per_second": result.get("steps_per_second"),
          "git_commit": provenance.git_commit(),
        }
        done[(pair, m, int(seed))] = rec
        with open(runs_file, "a") as f:
          f.write(json.dumps(rec) + "\n")
        if progress:
          print(
            f"    selected {rec['selected']:.1f}  last {rec['last']:.1f}  oracle "
            f"{rec['oracle']:.1f}  ({rec['seconds']:.0f} s)",
            flush=True,
          )
  return list(done.values())


def _previous_commits(out: Path) -> tuple[dict[tuple, str], str | None]:
  """The commits the last report written to ``out`` gave its runs, and its own commit."""
  try:
    d = json.loads((out / "digits_benchmark.json").read_text())
  except (OSError, ValueError):
    return {}, None
  meta = d.get("metadata") if isinstance(d, dict) else None
  own = meta.get("git_commit") if isinstance(meta, dict) else None
  per_run = {}
  for r in (d.get("extra") or {}).get("runs", []) if isinstance(d, dict) else []:
    if isinstance(r, dict) and r.get("git_commit"):
      per_run[(r.get("pair"), r.get("method"), r.get("seed"))] = r["git_commit"]
  return per_run, own


def commit_note(runs: list[dict]) -> str:
  """Which code commit produced how many runs (a study continued after a fix mixes them)."""
  counts: dict[str, list[str]] = {}
  for r in runs:
    counts.setdefault(r.get("git_commit") or "unrecorded", []).append(r["method"])
  parts = []
  for commit, methods in counts.items():
    names = sorted(set(methods))
    parts.append(
      f"{commit}: {len(methods)} runs ({', '.join(names)})"
      if len(names) <= 3
      else f"{commit}: {len(methods)} runs"
    )
  return "Runs by code commit: " + "; ".join(parts) + "."


def attribute_commits(runs: list[dict], out: Path) -> list[dict]:
  """Commits for runs recorded before runs carried one (``runs.jsonl`` lines without
  ``git_commit``): the commit the previous report in ``out`` gave the same run, else
  that report's own commit (every such run was in it); ``None`` without a report."""
  per_run, own = _previous_commits(out)
  out_runs = []
  for r in runs:
    if not r.get("git_commit"):
      commit = per_run.get((r.get("pair"), r.get("method"), r.get("seed")), own)
      if commit:
        r = {**r, "git_commit": commit}
    out_runs.append(r)
  return out_runs


def write_results(runs: list[dict], study, *, out: Path) -> dict[str, Path]:
  runs = attribute_commits(runs, out)
  example = run_config("dann", "digits", "digits_m", study.seeds[0], study)
  meta = provenance.run_metadata(config=example, seeds=study.seeds)
  source, _ = load_domains(example)
  n_train, n_test = len(source.x_train), len(source.x_test)
  meta["study"] = config_lib.config_to_dict(study)
  ok = [r for r in runs if "error" not in r]
  failed = [r for r in runs if "error" in r]
  rows = report.aggregate_runs(
    ok, group_keys=("pair", "method"), value_keys=("selected", "last", "oracle", "seconds")
  )
  for r in failed:
    if not any(x["pair"] == r["pair"] and x["method"] == r["method"] for x in rows):
      rows.append(
        {
          "pair": r["pair"],
          "method": r["method"],
          "n_seeds": 0,
          "flag": "FAILED: " + r["error"][:80],
        }
      )
  pair_order = [f"{a}→{b}" for a, b in (p.split("->") for p in study.pairs)]
  method_order = list(study.methods)
  rows.sort(
    key=lambda r: (
      pair_order.index(r["pair"]) if r["pair"] in pair_order else 99,
      method_order.index(r["method"]) if r["method"] in method_order else 99,
    )
  )
  report.flag_negative_transfer(rows, value_key="selected")
  for r in rows:
    if "flag" in r:
      continue
    r["flag"] = "NEGATIVE TRANSFER" if r.get("negative_transfer") else ""
    r["delta"] = None if r.get("delta") is None else f"{r['delta']:+.2f}"
    r["seconds"] = None if r.get("seconds") is None else round(r["seconds"][0])
  columns = [
    ("pair", "shift"),
    ("method", "method"),
    ("selected", f"selected ({runs_lib.DEFAULT_SELECTION})"),
    ("last", "last step"),
    ("oracle", "ORACLE (target labels)"),
    ("delta", "Δ selected vs source_only"),
    ("flag", "flag"),
    ("n_seeds", "seeds"),
    ("seconds", "s/run"),
  ]
  pairs = list(dict.fromkeys(r["pair"] for r in rows))
  methods = list(dict.fromkeys(r["method"] for r in rows))
  series, errors = {}, {}
  for p in pairs:
    vals = {
      r["method"]: r["selected"] for r in rows if r["pair"] == p and r.get("selected") is not None
    }
    series[p] = [vals[m][0] if m in vals else float("nan") for m in methods]
    errors[p] = [vals[m][1] if m in vals else 0.0 for m in methods]
  report.bar_plot(
    out / "digits_benchmark.png",
    methods,
    series,
    errors=errors,
    ylabel=f"target test acc. (%), selected by {runs_lib.DEFAULT_SELECTION}",
    title="digits benchmark: label-free selected target accuracy "
    f"(mean ± std, {len(study.seeds)} seeds)",
    footer=report.footer_text(meta),
  )
  planned = len(study.seeds) * len(study.pairs) * len(study.methods)
  notes = [
    f"Unsupervised domain adaptation on the bundled digits, {len(study.seeds)} seeds "
    f"{tuple(study.seeds)}, {study.steps} steps per run (32 source + 32 target images "
    f"of {study.image_size}x{study.image_size} pixels, "
    "LeNet + 256-d bottleneck, TLlib SGD lr 0.01, momentum 0.9, wd 1e-3; "
    "`experiments/configs/digits.py`). Every method uses its library defaults "
    "(TLlib's where they exist); adda = source_only (stage 1) + adversarial target "
    "encoder (stage 2, Adam lr 2e-4, beta1 0.5: `experiments/configs/adda.py`).",
    f"Columns (target test accuracy, %, mean ± std over seeds): `selected` = the "
    f"checkpoint (every {study.eval_every} steps) chosen by the label-free criterion "
    f"`{runs_lib.DEFAULT_SELECTION}` (`dtl_jax.runs.DEFAULT_SELECTION`) — no target label "
    "is used; "
    "`last step`; `ORACLE` = the best checkpoint chosen WITH target labels "
    "(what much DA code reports; an upper bound, not a valid selection rule). "
    "`NEGATIVE TRANSFER`: mean selected accuracy below source_only on that shift. "
    "runs.jsonl has every run and every criterion's choice.",
    f"Scale: each bundled digits domain has {n_train} training and {n_test} test images "
    f"(disjoint images between domains), so one test image is {100 / n_test:.2f} "
    "points and the seed-to-seed spread is large; runs are short (CPU). These are not "
    "the paper-scale MNIST/USPS/SVHN numbers (see the published-benchmark configs).",
    commit_note(runs),
  ]
  if len(runs) < planned:
    notes.append(
      f"**Incomplete**: {len(runs)} of the {planned} planned runs finished in the "
      "time available on the shared machine (runs go seed by seed, so every "
      "method has the same seeds on a shift; the `seeds` column says how many). "
      "`python -m experiments.digits_benchmark --continue` completes it."
    )
  return report.write_report(
    out,
    "digits_benchmark",
    title="Digits benchmark: every method on three shifts",
    rows=rows,
    columns=columns,
    metadata=meta,
    notes=notes,
    figures=["digits_benchmark.png"],
    extra={"runs": runs},
  )


def study_parser(description: str, default_out: str, *, pairs: bool = False):
  """The command line shared by the studies: size, output, resume and subsets."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--quick", action="store_true", help="tiny CI smoke size")
  p.add_argument("--out", default=default_out)
  p.add_argument("--overwrite", action="store_true", help="replace existing results")
  p.add_argument(
    "--continue",
    dest="cont",
    action="store_true",
    help="continue an interrupted study in --out (skips finished runs)",
  )
  p.add_argument("--methods", default=None, help="comma-separated subset")
  if pairs:
    p.add_argument("--pairs", default=None, help="comma-separated subset, e.g. mnist->mnist_m")
  p.add_argument("--seeds", default=None, help="comma-separated seeds")
  p.add_argument(
    "--report-only",
    action="store_true",
    help="write the tables from the runs already in --out/runs.jsonl "
    "(e.g. after stopping a long study); trains nothing",
  )
  p.add_argument("--no-cache", action="store_true", help="no persistent XLA cache")
  p.add_argument("--no-progress", action="store_true")
  return p


def study_output_dir(args: argparse.Namespace) -> Path:
  """``--out`` as the study's flags say: an existing ``runs.jsonl`` to report on
  (``--report-only``) or to continue (``--continue``), else a fresh output directory
  (an existing one only with ``--overwrite``)."""
  out = Path(args.out)
  if args.report_only:
    if not (out / "runs.jsonl").exists():
      raise config_lib.ConfigError(f"{str(out)!r} has no runs.jsonl to report on")
  elif not (args.cont and (out / "runs.jsonl").exists()):
    out = report.prepare_output_dir(out, overwrite=args.overwrite, what="study results")
  return out


def read_runs(out: Path) -> list[dict]:
  """The finished runs of a study, one record per line of ``out/runs.jsonl``, each with
  its ``selected`` column as the current default criterion picks it
  (:func:`dtl_jax.runs.reselect`)."""
  return [
    runs_lib.reselect(json.loads(line)) for line in (out / "runs.jsonl").read_text().splitlines()
  ]


def main(argv: Sequence[str] | None = None) -> int:
  p = study_parser(__doc__.split("\n")[1], str(DEFAULT_OUT))
  args, rest = p.parse_known_args(argv)
  overrides = [a for a in rest if a.startswith("--config.")]
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown:
    p.error(f"unrecognized arguments: {' '.join(unknown)}")
  try:
    study = config_lib.load_config(f"{CONFIG}:quick" if args.quick else CONFIG)
    if args.methods:
      study.methods = tuple(m.strip() for m in args.methods.split(","))
    if args.seeds:
      study.seeds = tuple(int(s) for s in args.seeds.split(","))
    for m in study.methods:
      if m != "adda":  # its stage-1 run does not exist yet
        config_lib.validate(run_config(m, "digits", "digits_m", 0, study, overrides))
    for pr in study.pairs:
      s, _, t = pr.partition("->")
      config_lib.validate(run_config("source_only", s, t, 0, study, overrides))
    out = study_output_dir(args)
  except ValueError as e:
    print(f"digits_benchmark: error: {e}", file=sys.stderr)
    return 2
  if not args.no_cache:
    enable_compilation_cache()
  if args.report_only:
    runs = read_runs(out)
    planned = len(study.seeds) * len(study.pairs) * len(study.methods)
    if len(runs) < planned:
      print(
        f"digits_benchmark: note: reporting {len(runs)} of {planned} planned runs", file=sys.stderr
      )
  else:
    runs = run(study, out=out, overrides=overrides, progress=not args.no_progress)
  paths = write_results(runs, study, out=out)
  report.finish_output_dir(out, what="digits benchmark")
  print(Path(paths["md"]).read_text().split("## Provenance")[0])
  return 0


if __name__ == "__main__":
  sys.exit(main())
