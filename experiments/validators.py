"""Study: how well do the label-free selection criteria track target accuracy?

Reads the runs of ``experiments/real_digits.py`` (``runs.jsonl``: every evaluation of
every run, with each criterion's score and the target test accuracy) and measures, for
each label-free criterion of :mod:`dtl_jax.train.selection` (``source_val_acc``,
``iwv``, ``dev``, ``entropy``, ``snd``), in the spirit of Musgrave, Belongie & Lim,
"Three New Validators and a Large-Scale Benchmark Ranking for Unsupervised Domain
Adaptation" (2022):

* **rank correlation** with target accuracy: Spearman's rho over all checkpoints of all
  runs of a shift (every method, seed and evaluation step pooled, as Musgrave et al.
  pool the checkpoints of a task), and the mean of the within-run rho (does the
  criterion order the checkpoints of one run?); also Musgrave et al.'s weighted
  Spearman (pairs weighted by the two accuracies' ranks, so the top models count most);
* **selection**: the target accuracy of the checkpoint each criterion picks, (a) within
  each run (checkpoint selection: the ``selected`` column of the study), and (b) over
  all checkpoints of all methods of one seed (model selection across methods), next to
  the ORACLE (the best checkpoint by target labels) and the last step.

Writes ``--out`` (default ``experiments/results/validators``): ``validators.md`` /
``.json`` / ``.png``.

  python -m experiments.validators [--runs RUNS.jsonl ...]  # default: the committed studies
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dtl_jax import provenance, report
from dtl_jax import runs as runs_lib
from dtl_jax.train.selection import CRITERIA

HERE = Path(__file__).resolve().parent
DEFAULT_RUNS = (
  HERE / "results" / "real_digits" / "runs.jsonl",
  HERE / "results" / "digits_benchmark" / "runs.jsonl",
)
DEFAULT_OUT = HERE / "results" / "validators"
NAME = "validators"


def ranks(x: Sequence[float]) -> np.ndarray:
  """Ranks 1..n with ties given their average rank (``scipy.stats.rankdata``)."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="mergesort")
  r = np.empty(len(x), np.float64)
  r[order] = np.arange(1, len(x) + 1)
  for v in np.unique(x):  # average the ranks of ties
    tie = x == v
    if tie.sum() > 1:
      r[tie] = r[tie].mean()
  return r


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
  """Spearman's rho: the Pearson correlation of the ranks (``nan`` if one is constant)."""
  ra, rb = ranks(a), ranks(b)
  if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
    return float("nan")
  return float(np.corrcoef(ra, rb)[0, 1])


def weighted_ranks(x: Sequence[float], w: Sequence[float]) -> np.ndarray:
  """Weighted mid-ranks (R's ``wCorr`` / Python ``WeightedCorr``): a value's rank is the
  weight of all smaller values plus ``(c + 1) / 2`` times the mean weight of its ``c``
  ties. With unit weights: the usual average ranks."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  mass = np.bincount(inverse, weights=w, minlength=len(values))
  before = np.cumsum(mass) - mass
  return (before + (counts + 1) / 2.0 * (mass / counts))[inverse]


def weighted_spearman(scores: Sequence[float], accuracies: Sequence[float], *, power=2.0) -> float:
  """Musgrave et al.'s weighted Spearman correlation (``powerful-benchmarker``,
  ``utils/score_utils.py``): each checkpoint is weighted by its validation score's dense
  rank over the maximum rank, to the power ``power`` (the best-scored checkpoints, the
  ones a validator would pick, count most), then the weighted Pearson correlation of the
  weighted mid-ranks (``WeightedCorr(method="spearman")``)."""
  s, a = np.asarray(scores, np.float64), np.asarray(accuracies, np.float64)
  if len(s) < 2 or np.ptp(s) == 0 or np.ptp(a) == 0:
    return float("nan")
  dense = np.unique(s, return_inverse=True)[1] + 1.0
  w = (dense / dense.max()) ** power
  rs, ra = weighted_ranks(s, w), weighted_ranks(a, w)
  ms, ma = np.average(rs, weights=w), np.average(ra, weights=w)
  cov = np.average((rs - ms) * (ra - ma), weights=w)
  return float(
    cov / np.sqrt(np.average((rs - ms) ** 2, weights=w) * np.average((ra - ma) ** 2, weights=w))
  )


def _pick(points: Sequence[Mapping[str, Any]], criterion: str) -> Mapping[str, Any] | None:
  """The point with the best score (ties: the later one, as dtl_jax.train.selection)."""
  best = None
  for p in points:
    s = p["scores"].get(criterion)
    if s is None or not np.isfinite(s):
      continue
    if best is None or s >= best["scores"][criterion]:
      best = p
  return best


def _selection_only(pr: Sequence[Mapping[str, Any]], criteria: Sequence[str]) -> dict[str, Any]:
  """A shift whose runs kept only each criterion's pick (``by_criterion``, no history):
  the accuracy each criterion selected per run, next to the oracle and the last step;
  no correlation (there are no checkpoint scores to rank)."""
  nan = float("nan")
  res: dict[str, Any] = {
    "n_runs": len(pr),
    "n_checkpoints": None,
    "methods": sorted({r["method"] for r in pr}),
    "seeds": sorted({r["seed"] for r in pr}),
    "within_run": {
      "oracle": float(np.mean([r["oracle"] for r in pr])),
      "last": float(np.mean([r["last"] for r in pr])),
    },
    "across_methods": {"oracle": nan},
    "criteria": {},
  }
  for c in criteria:
    picked = [r["by_criterion"][c] for r in pr if c in r["by_criterion"]]
    if len(picked) != len(pr):  # a criterion some of these runs did not compute
      continue
    res["criteria"][c] = {
      "spearman": nan,
      "weighted_spearman": nan,
      "within_run_spearman": nan,
      "selected_within_run": float(np.mean(picked)),
      "selected_across_methods": nan,
      "across_methods_picks": [],
    }
  return res


def analyse(runs: Sequence[Mapping[str, Any]], criteria: Sequence[str] = CRITERIA) -> dict:
  """Correlations and selection accuracies per shift and criterion (see the docstring).

  Runs with an evaluation ``history`` give everything; a shift whose runs kept only
  ``by_criterion`` (the accuracy at each criterion's pick, with ``oracle`` and ``last``)
  gives the selection column alone.
  """
  runs = [r for r in runs if "error" not in r]
  out: dict[str, Any] = {}
  for pair in dict.fromkeys(r["pair"] for r in runs):
    if not any(r.get("history") for r in runs if r["pair"] == pair):
      pr = [r for r in runs if r["pair"] == pair and r.get("by_criterion")]
      if pr:
        out[pair] = _selection_only(pr, criteria)
      continue
    pr = [r for r in runs if r["pair"] == pair and r.get("history")]
    points = [
      {**h, "method": r["method"], "seed": r["seed"]}
      for r in pr
      for h in r["history"]
      if np.isfinite(h["target_acc"])
    ]
    acc = [p["target_acc"] for p in points]
    res: dict[str, Any] = {
      "n_runs": len(pr),
      "n_checkpoints": len(points),
      "methods": sorted({r["method"] for r in pr}),
      "seeds": sorted({r["seed"] for r in pr}),
      "within_run": {
        "oracle": float(np.mean([max(h["target_acc"] for h in r["history"]) for r in pr])),
        "last": float(np.mean([r["history"][-1]["target_acc"] for r in pr])),
      },
      "across_methods": {},
      "criteria": {},
    }
    seeds = res["seeds"]
    per_seed = {s: [p for p in points if p["seed"] == s] for s in seeds}
    res["across_methods"]["oracle"] = float(
      np.mean([max(p["target_acc"] for p in per_seed[s]) for s in seeds])
    )
    for c in criteria:
      have = [p for p in points if np.isfinite(p["scores"].get(c, np.nan))]
      if not have:  # a criterion these runs did not compute
        continue
      within = [
        spearman([h["scores"][c] for h in r["history"]], [h["target_acc"] for h in r["history"]])
        for r in pr
        if all(np.isfinite(h["scores"].get(c, np.nan)) for h in r["history"])
      ]
      within = [w for w in within if np.isfinite(w)]
      picks = [_pick(r["history"], c) for r in pr]
      seed_picks = [_pick(per_seed[s], c) for s in seeds]
      res["criteria"][c] = {
        "spearman": spearman([p["scores"][c] for p in have], [p["target_acc"] for p in have]),
        "weighted_spearman": weighted_spearman(
          [p["scores"][c] for p in have], [p["target_acc"] for p in have]
        ),
        "within_run_spearman": float(np.mean(within)) if within else float("nan"),
        "selected_within_run": float(np.mean([p["target_acc"] for p in picks if p])),
        "selected_across_methods": float(np.mean([p["target_acc"] for p in seed_picks if p])),
        "across_methods_picks": [
          {"seed": s, "method": p["method"], "step": p["step"], "target_acc": p["target_acc"]}
          for s, p in zip(seeds, seed_picks, strict=True)
          if p
        ],
      }
    res["pooled_accuracy_range"] = [float(np.min(acc)), float(np.max(acc))]
    out[pair] = res
  return out


def shortfall(analysis: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """Per criterion, how far its per-run picks fall below the oracle's (points of target
  accuracy), averaged over the shifts and at the worst shift: the numbers the default
  criterion is chosen by."""
  crit = dict.fromkeys(c for res in analysis.values() for c in res["criteria"])
  out = {}
  for c in crit:
    gaps = {
      pair: res["within_run"]["oracle"] - res["criteria"][c]["selected_within_run"]
      for pair, res in analysis.items()
      if c in res["criteria"]
    }
    if len(gaps) != len(analysis):  # compare criteria on the same shifts only
      continue
    worst = max(gaps, key=gaps.__getitem__)
    out[c] = {
      "mean": float(np.mean(list(gaps.values()))),
      "worst": float(gaps[worst]),
      "worst_shift": worst,
    }
  return out


def paired_vs_default(
  runs: Sequence[Mapping[str, Any]],
  default: str,
  criteria: Sequence[str] = CRITERIA,
  *,
  n_boot: int = 5000,
  seed: int = 0,
) -> dict[str, dict[str, float]]:
  """Per criterion, the mean over runs of (its pick's target accuracy − the default's),
  with a 95% percentile bootstrap interval over runs (seeded): is any criterion better
  than the default beyond the noise of which runs were made?"""
  runs = [r for r in runs if "error" not in r and r.get("by_criterion", {}).get(default)]
  rng = np.random.default_rng(seed)
  out = {}
  for c in criteria:
    d = np.array(
      [r["by_criterion"][c] - r["by_criterion"][default] for r in runs if c in r["by_criterion"]]
    )
    if c == default or not len(d):
      continue
    boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    out[c] = {"mean": float(d.mean()), "low": float(lo), "high": float(hi), "n_runs": len(d)}
  return out


def write_results(
  analysis: dict,
  runs_paths: Sequence[Path],
  *,
  out: Path,
  paired: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Path]:
  rows = []
  for pair, res in analysis.items():
    for c, v in res["criteria"].items():
      rows.append(
        {
          "pair": pair,
          "criterion": c,
          "spearman": v["spearman"],
          "weighted_spearman": v["weighted_spearman"],
          "within_run_spearman": v["within_run_spearman"],
          "selected_within_run": v["selected_within_run"],
          "selected_across_methods": v["selected_across_methods"],
        }
      )
    rows.append(
      {
        "pair": pair,
        "criterion": "ORACLE (target labels)",
        "selected_within_run": res["within_run"]["oracle"],
        "selected_across_methods": res["across_methods"]["oracle"],
      }
    )
    rows.append(
      {"pair": pair, "criterion": "last step", "selected_within_run": res["within_run"]["last"]}
    )
  for r in rows:
    for k in list(r):
      if isinstance(r[k], float) and not np.isfinite(r[k]):
        r[k] = None  # not measurable from these runs: printed as "–"
    for k in ("spearman", "weighted_spearman", "within_run_spearman"):
      if r.get(k) is not None:
        r[k] = f"{r[k]:+.2f}"
  columns = [
    ("pair", "shift"),
    ("criterion", "criterion"),
    ("spearman", "Spearman ρ (all checkpoints)"),
    ("weighted_spearman", "weighted ρ"),
    ("within_run_spearman", "mean ρ within a run"),
    ("selected_within_run", "acc. selected per run (%)"),
    ("selected_across_methods", "acc. selected over all methods, per seed (%)"),
  ]
  ranked = {p: r for p, r in analysis.items() if r["n_checkpoints"]}  # shifts with histories
  crit = list(next(iter((ranked or analysis).values()))["criteria"])
  series = {
    pair: [res["criteria"].get(c, {}).get("spearman", np.nan) for c in crit]
    for pair, res in ranked.items()
  }
  meta = provenance.run_metadata(config=None, seeds=None)
  meta["runs_files"] = [str(p) for p in runs_paths]
  report.bar_plot(
    out / f"{NAME}.png",
    crit,
    series,
    ylabel="Spearman ρ with target accuracy (all checkpoints)",
    title="label-free criteria vs target accuracy (real digits study)",
    footer=report.footer_text(meta),
  )
  counts = "; ".join(
    f"{p}: {r['n_runs']} runs ({', '.join(r['methods'])}; seeds {r['seeds']}), "
    + (f"{r['n_checkpoints']} checkpoints" if r["n_checkpoints"] else "picks only")
    for p, r in analysis.items()
  )
  studies = ", ".join(f"`{Path(p).parent.name}`" for p in runs_paths)
  notes = [
    "Label-free checkpoint-selection criteria (`dtl_jax.train.selection`: higher score "
    "= better; IWV and DEV are negated risks, entropy the negated mean target entropy, "
    "SND the soft-neighbourhood density) against the target test accuracy of the same "
    f"checkpoints, over the runs of the studies {studies} ({counts}). A shift marked "
    "'picks only' comes from a study that kept each criterion's pick per run but not the "
    "scores of every checkpoint: only its selection column can be measured.",
    "Spearman ρ (all checkpoints): rank correlation over every evaluated checkpoint of "
    "every method and seed of a shift (Musgrave et al. 2022 pool a task's checkpoints); "
    "weighted ρ: Musgrave et al.'s weighted Spearman (each checkpoint weighted by "
    "(dense rank of its score / max rank)², weighted mid-ranks; powerful-benchmarker's "
    "score_utils.weighted_spearman with pow 2); mean ρ within a run: does the criterion "
    "order one run's checkpoints? "
    "Selection: target accuracy of the checkpoint the criterion picks within each run "
    "(averaged over runs) and over all checkpoints of all methods of one seed (averaged "
    "over seeds), next to the ORACLE (best by target labels) and the last step.",
    f"The tables of the studies report the criterion `{runs_lib.DEFAULT_SELECTION}` "
    "(dtl_jax.runs.DEFAULT_SELECTION).",
  ]
  gaps = shortfall(analysis)
  paired = dict(paired or {})
  if gaps:
    lines = [
      "Shortfall of each criterion's per-run pick below the oracle's, in points of target "
      f"accuracy, over the {len(analysis)} shifts (lower is better)",
      "",
      "| criterion | mean shortfall | worst shortfall (shift) |",
      "|---|---:|---:|",
    ]
    default = runs_lib.DEFAULT_SELECTION
    lines[0] += (
      f"; and, per run, the pick's accuracy minus the default `{default}`'s pick's (mean "
      f"over the {next(iter(paired.values()))['n_runs'] if paired else 0} runs with a "
      "95% bootstrap interval over runs, seed 0):"
    )
    lines[2] = "| criterion | mean shortfall | worst shortfall (shift) | vs default, per run |"
    lines[3] = "|---|---:|---:|---:|"
    for c, g in sorted(gaps.items(), key=lambda kv: kv[1]["mean"]):
      v = paired.get(c)
      vs = f"{v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]" if v else "(default)"
      lines.append(f"| {c} | {g['mean']:.2f} | {g['worst']:.2f} ({g['worst_shift']}) | {vs} |")
    notes.append("\n".join(lines))
    better = [c for c, v in paired.items() if v["low"] > 0]
    if better:
      verdict = (
        f"{', '.join(better)} picked better checkpoints beyond the 95% interval: the "
        "evidence argues for changing the default."
      )
    else:
      verdict = "no criterion picked better checkpoints beyond the 95% interval; it stands"
      tied = [c for c, v in paired.items() if v["high"] > 0 and c in gaps]
      if default in gaps and all(gaps[default]["worst"] <= gaps[c]["worst"] for c in tied):
        verdict += (
          f" (and of it and the criteria whose interval includes a gain ({', '.join(tied)}), "
          "it has the smallest worst-shift shortfall)"
        )
      verdict += "."
    notes.append(f"Verdict for the default `{default}`: {verdict}")
  return report.write_report(
    out,
    NAME,
    title="Validators measured: label-free selection criteria vs target accuracy",
    rows=rows,
    columns=columns,
    metadata=meta,
    notes=notes,
    figures=[f"{NAME}.png"],
    extra={"analysis": analysis, "shortfall": gaps, "paired_vs_default": paired},
  )


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--runs",
    nargs="+",
    default=[str(f) for f in DEFAULT_RUNS],
    help="studies' runs.jsonl files (default: the committed real-digits and digits-benchmark runs)",
  )
  p.add_argument("--out", default=str(DEFAULT_OUT))
  args = p.parse_args(argv)
  runs_paths = [Path(f) for f in args.runs]
  runs = []
  for path in runs_paths:
    if not path.is_file():
      print(f"validators: error: no runs file {str(path)!r}", file=sys.stderr)
      return 2
    runs += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  analysis = analyse(runs)
  if not analysis:
    print(
      f"validators: error: no run with a history or per-criterion picks in {args.runs}",
      file=sys.stderr,
    )
    return 2
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  paired = paired_vs_default(runs, runs_lib.DEFAULT_SELECTION)
  paths = write_results(analysis, runs_paths, out=out, paired=paired)
  print(Path(paths["md"]).read_text().split("## Provenance")[0])
  return 0


if __name__ == "__main__":
  sys.exit(main())
