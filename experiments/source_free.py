"""Study 6: source-free adaptation on the bundled digits shifts: source-only vs AdaBN, Tent, SHOT.

For every shift and seed: train ``source_only`` with the digits protocol
(``experiments/configs/digits.py``: LeNet + 256-d BN bottleneck + linear head, 500
TLlib-SGD steps of 32 source images), then adapt that source model with **unlabelled
target training images only** -- ``dtl-jax adapt`` (:func:`dtl_jax.train.adapt.adapt`
with :func:`~dtl_jax.train.adapt.adapt_config`'s settings) -- and score the target test
split:

* ``adabn``   -- target population BatchNorm statistics, no gradient step;
* ``tent``    -- 10 epochs of entropy minimisation on the BatchNorm scale / bias (Adam,
  lr 1e-3, batches of 64, dropout off);
* ``shot_im`` -- SHOT without pseudo-labels (``beta = 0``);
* ``shot``    -- SHOT (``beta = 0.3``): head frozen, IM + pseudo-label CE, pseudo-labels
  recomputed over the target training set every epoch; SGD lr 0.01, Nesterov 0.9,
  weight decay 1e-3, ``lr (1 + 10 p)^-0.75``, batches of 64, 30 epochs.

Accuracies are at the last step (the source-free runs also record their label-free
picks by target entropy / SND). Then online test-time adaptation
(:func:`dtl_jax.train.adapt.online`): the target test split streamed in batches of 64,
each batch scored before Tent adapts on it, against the source model on the same stream.

  python -m experiments.source_free [--quick] [--seeds 0,1,2] [--out DIR] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dtl_jax import config as config_lib
from dtl_jax import provenance, report
from dtl_jax.train import adapt as adapt_lib
from dtl_jax.train import fit

HERE = Path(__file__).resolve().parent
RUN_CONFIG = HERE / "configs" / "digits.py"
DEFAULT_OUT = HERE / "results" / "source_free"
PAIRS = (("digits", "digits_m"), ("digits", "digits_rot"), ("digits_m", "digits"))
ADAPTATIONS = {
  "adabn": ("adabn", {}),
  "tent": ("tent", {}),
  "shot_im": ("shot", {"beta": 0.0}),
  "shot": ("shot", {}),
}
METHODS = ("source_only", *ADAPTATIONS)
# The SHOT paper's digit numbers (Liang et al., ICML 2020, Table 2; LeNet / DTN, its own
# source training), listed for reference only: its protocol (MNIST / USPS / SVHN at full
# size, weight-normalised classifier, label smoothing) differs from these bundled shifts.
SHOT_PAPER = {
  "S->M": {"source_only": 67.1, "shot_im": 89.6, "shot": 98.9},
  "U->M": {"source_only": 69.6, "shot_im": 96.8, "shot": 98.0},
  "M->U": {"source_only": 82.2, "shot_im": 91.9, "shot": 98.4},
}


def run_pair(
  source: str, target: str, seed: int, *, out: Path, steps: int, epochs: dict[str, int]
) -> dict:
  """One source run and its four adaptations; accuracies in %."""
  runs_dir = out / "runs" / f"{source}-{target}" / f"seed{seed}"
  c = config_lib.load_config(f"{RUN_CONFIG}:source_only")
  c.data.source, c.data.target, c.seed = source, target, int(seed)
  c.train.num_steps, c.train.eval_every, c.train.progress = steps, steps, False
  t0 = time.perf_counter()
  fit(c, runs_dir / "source_only", overwrite=True)
  acc, seconds = {}, {"source_only": time.perf_counter() - t0}
  for name, (method, kwargs) in ADAPTATIONS.items():
    a = adapt_lib.adapt_config(
      runs_dir / "source_only", target=target, method=method, epochs=epochs[method]
    )
    a.method_kwargs.update(kwargs)
    a.train.progress = False
    t0 = time.perf_counter()
    r = adapt_lib.adapt(a, runs_dir / name, overwrite=True)
    seconds[name] = time.perf_counter() - t0
    acc.setdefault("source_only", 100 * r["before"]["target_acc"])
    acc[name] = 100 * r["last"]["target_acc"]
  online = adapt_lib.online(runs_dir / "source_only", [target], seed=seed)
  return {
    "pair": f"{source}→{target}",
    "seed": int(seed),
    "acc": acc,
    "seconds": seconds,
    "online": {m: online[m]["overall"] for m in ("source", "tent")},
    "git_commit": provenance.git_commit(),
  }


def write_results(
  runs: list[dict], *, seeds: Sequence[int], steps: int, epochs: dict[str, int], out: Path
) -> dict[str, Path]:
  flat = [
    {"pair": r["pair"], "method": m, "seed": r["seed"], "acc": r["acc"][m]}
    for r in runs
    for m in METHODS
  ]
  flat += [
    {"pair": r["pair"], "method": f"online_{m}", "seed": r["seed"], "acc": v}
    for r in runs
    for m, v in r["online"].items()
  ]
  rows = report.aggregate_runs(flat, group_keys=("pair", "method"), value_keys=("acc",))
  report.flag_negative_transfer(rows, value_key="acc")
  spread = {r["pair"]: r["acc"][1] for r in rows if r["method"] == "source_only"}
  for r in rows:
    d = r.get("delta")
    r["delta"] = None if d is None else f"{d:+.2f}"
    if d is None:
      r["flag"] = ""
      continue
    margin = max(r["acc"][1], spread.get(r["pair"], 0.0))  # the larger seed std
    r["flag"] = (
      "better beyond the spread"
      if d > margin
      else "worse beyond the spread"
      if d < -margin
      else "within the spread"
    )
  meta = provenance.run_metadata(seeds=seeds)
  meta["study"] = {"steps": steps, "epochs": epochs, "pairs": [f"{s}->{t}" for s, t in PAIRS]}
  pairs = list(dict.fromkeys(r["pair"] for r in runs))
  series = {
    p: [next(r["acc"][0] for r in rows if r["pair"] == p and r["method"] == m) for m in METHODS]
    for p in pairs
  }
  errors = {
    p: [next(r["acc"][1] for r in rows if r["pair"] == p and r["method"] == m) for m in METHODS]
    for p in pairs
  }
  report.bar_plot(
    out / "source_free.png",
    list(METHODS),
    series,
    errors=errors,
    ylabel="target test acc. (%)",
    footer=report.footer_text(meta),
    title=f"source-free adaptation (mean ± std, {len(seeds)} seeds)",
  )
  notes = [
    f"Source-free adaptation on the bundled digits, seeds {tuple(seeds)}: source_only = "
    f"{steps} steps of the digits protocol (`experiments/configs/digits.py`); the other "
    "methods adapt that model with unlabelled target training images only (`dtl-jax "
    f"adapt`; epochs: {epochs}). Target test accuracy (%) at the last step, mean ± std "
    "over seeds; the flag compares the difference with source_only to the larger of the "
    "two seed standard deviations. "
    "online_source / online_tent: the target test split streamed once in batches of 64, "
    "each batch scored before Tent adapts on it.",
    "For reference only, the SHOT paper's digit numbers (Liang et al., ICML 2020, Table 2; "
    "full-size MNIST / USPS / SVHN, weight-normalised classifier, label smoothing -- a "
    f"different protocol): {SHOT_PAPER}.",
  ]
  return report.write_report(
    out,
    "source_free",
    title="Source-free adaptation: AdaBN, Tent, SHOT",
    rows=rows,
    columns=[
      ("pair", "shift"),
      ("method", "method"),
      ("acc", "target acc. (%)"),
      ("delta", "Δ vs source_only"),
      ("flag", "flag"),
      ("n_seeds", "seeds"),
    ],
    metadata=meta,
    notes=notes,
    figures=["source_free.png"],
    extra={"runs": runs},
  )


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  ap.add_argument("--steps", type=int, default=500, help="source training steps")
  ap.add_argument("--quick", action="store_true", help="smoke size: 1 seed, 1 shift")
  ap.add_argument("--out", default=str(DEFAULT_OUT))
  ap.add_argument("--overwrite", action="store_true")
  args = ap.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  pairs: Sequence[tuple[str, str]] = PAIRS
  epochs = {"adabn": 1, "tent": 10, "shot": 30}
  if args.quick:
    seeds, args.steps, epochs, pairs = [0], 20, {"adabn": 1, "tent": 1, "shot": 1}, PAIRS[1:2]
  try:
    out = report.prepare_output_dir(args.out, overwrite=args.overwrite, what="study results")
  except ValueError as e:
    print(f"source_free: error: {e}", file=sys.stderr)
    return 2
  runs = []
  for source, target in pairs:
    for seed in seeds:
      r = run_pair(source, target, seed, out=out, steps=args.steps, epochs=epochs)
      runs.append(r)
      print(
        f"{r['pair']} seed {seed}: " + ", ".join(f"{m} {r['acc'][m]:.1f}" for m in METHODS),
        flush=True,
      )
  paths = write_results(runs, seeds=seeds, steps=args.steps, epochs=epochs, out=out)
  report.finish_output_dir(out, what="source-free study")
  print(Path(paths["md"]).read_text().split("## Provenance")[0])
  return 0


if __name__ == "__main__":
  sys.exit(main())
