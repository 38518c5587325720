"""Study 1: source-only vs DANN on the two-moons toy (Ganin et al., JMLR 2016, Sec. 5.1).

Trains both methods with ``experiments/configs/two_moons.py`` for every seed, then
writes to ``--out`` (default ``experiments/results/two_moons``):

* ``two_moons.png`` -- the paper's Figure 2 analogue: decision regions of the
  source-only network and of DANN (seed 0), with the labeled source points and the
  unlabeled, rotated target points;
* ``two_moons.md`` / ``.json`` -- target test accuracy over the seeds (mean ± std, and
  per seed), at the last step and at the label-free selected checkpoint; config,
  seeds, versions, machine.

  python -m experiments.two_moons [--quick] [--paper] [--out DIR] [--overwrite] [--config.key=value]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dtl_jax import config as config_lib
from dtl_jax import models, provenance, report, runs
from dtl_jax.train import evaluation, fit, load_domains

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "two_moons.py"
DEFAULT_OUT = HERE / "results" / "two_moons"
METHODS = ("source_only", "dann")
SEEDS = (0, 1, 2, 3, 4)


def _predictor(result, config):
  """``x [n, 2] -> p(class 1)`` from a fit result's final state."""
  model = models.build(config.model, num_classes=2)
  eval_step = evaluation.make_eval_step(model)
  state = result["state"]

  def fn(x):
    return evaluation.predict(
      eval_step, state, np.asarray(x, np.float32), batch_size=4096, keys=("probs",)
    )["probs"][:, 1]

  return fn


def run(
  *,
  seeds: Sequence[int],
  overrides: Sequence[str],
  out: Path,
  progress: bool = True,
  variant: str = "",
) -> dict:
  records, panels, configs = [], [], {}
  for m in METHODS:
    for seed in seeds:
      c = config_lib.load_config(f"{CONFIG}:{m}{variant}")
      config_lib.apply_overrides(c, overrides)
      c.seed = int(seed)
      c.train.progress = progress
      configs[m] = c
      t0 = time.perf_counter()
      if progress:
        print(f"two_moons: {m}, seed {seed}", flush=True)
      result = fit(c, out / "runs" / f"{m}_seed{seed}", overwrite=True)
      s = runs.result_summary(result)
      records.append(
        {
          "method": m,
          "seed": int(seed),
          "last": s["last"],
          "selected": s["selected"],
          "oracle": s["oracle"],
          "source_acc": s["source_acc"],
          "seconds": time.perf_counter() - t0,
        }
      )
      if seed == seeds[0]:
        src, tgt = load_domains(c)  # with c.data.domain_kwargs, as the run saw them
        panels.append(
          {
            "title": f"{'DANN' if m == 'dann' else 'source only'}: target acc. {s['last']:.1f}%",
            "predict": _predictor(result, c),
            "source_x": src.x_train,
            "source_y": src.y_train,
            "target_x": tgt.x_train,
          }
        )
  return {"runs": records, "panels": panels, "configs": configs}


def write_results(
  res: dict, *, seeds: Sequence[int], out: Path, variant: str = ""
) -> dict[str, Path]:
  cfg = res["configs"]["dann"]
  d = cfg.method_kwargs
  meta = provenance.run_metadata(config=cfg, seeds=seeds)
  meta["source_only_config"] = config_lib.config_to_dict(res["configs"]["source_only"])
  report.decision_boundary_plot(
    out / "two_moons.png", res["panels"], footer=report.footer_text(meta)
  )
  rows = report.aggregate_runs(
    res["runs"], group_keys=("method",), value_keys=("last", "selected", "oracle", "source_acc")
  )
  for r in rows:
    r["per_seed_last"] = ", ".join(
      f"{x['last']:.1f}" for x in res["runs"] if x["method"] == r["method"]
    )
  columns = [
    ("method", "method"),
    ("last", "target acc., last step (%)"),
    ("selected", f"target acc., selected ({runs.DEFAULT_SELECTION}) (%)"),
    ("oracle", "oracle* (%)"),
    ("source_acc", "source acc. (%)"),
    ("per_seed_last", "last step, per seed"),
  ]
  if variant:
    setting = (
      f"The paper's shallow DANN as its authors ran it (Sec. 5.1, Algorithm 1; the "
      f"released experiments_moons.py / DANN.py of GRAAL-Research/"
      f"domain_adversarial_neural_network): one hidden layer of "
      f"{cfg.model.backbone_kwargs.hidden[0]} {cfg.model.backbone_kwargs.activation} "
      f"units, the domain classifier a logistic regressor on it, λ = "
      f"{d.trade_off / 2:g} on both players (dtl_jax: trade_off = 2λ = {d.trade_off:g}, "
      f"reversal coefficient {d.hi:g}, since dann_loss averages the source and target "
      f"terms that Algorithm 1 sums); plain SGD lr {cfg.optim.learning_rate:g} on one "
      "source and one target example per update"
    )
    scale = cfg.data.domain_kwargs.get("scale")
    if scale is not None:
      setting += (
        f"; the moons in the released script's coordinates {scale:g} (x − centre) "
        "(moons option scale)"
      )
    if cfg.data.target_sampling == "uniform":
      setting += (
        "; the target example of each update drawn uniformly with replacement "
        "(data.target_sampling = 'uniform'), as the released DANN.py draws it"
      )
  else:
    setting = (
      f"One hidden layer of {cfg.model.backbone_kwargs.hidden[0]} ReLU units (the "
      f"representation); DANN's domain classifier {tuple(d.hidden)} ReLU on it "
      f"through the gradient reversal layer, λ = {d.hi:g} (constant); TLlib SGD lr "
      f"{cfg.optim.learning_rate:g} (Nesterov 0.9, wd 1e-3, lr decay)"
    )
  notes = [
    "Ganin et al., *Domain-Adversarial Training of Neural Networks*, JMLR 2016, "
    "Sec. 5.1 (inter-twinning moons): source = 2 × 150 labeled points (noise 0.1), "
    "target = an independent draw rotated by 35°, unlabeled. " + setting + ", "
    f"{cfg.train.num_steps} steps of {cfg.data.batch_size} + {cfg.data.batch_size} "
    f"points. Target test set: a further independent rotated draw. {len(seeds)} seeds "
    "(mean ± std). The boundary is drawn as the authors draw it: the predicted class "
    "over a grid (p(class 1) = 0.5 contour).",
    "The paper shows (Fig. 2) the source-only boundary cutting through the rotated "
    "target moons and DANN's boundary following them, without a table of numbers; the "
    "figure is the analogue of its panels for the first seed. *oracle = best target "
    "accuracy over the evaluated checkpoints (uses target labels; reference only).",
  ]
  extra = {"per_seed": res["runs"]}
  return report.write_report(
    out,
    "two_moons",
    title="Two moons: source only vs DANN (Ganin et al. 2016, Sec. 5.1)",
    rows=rows,
    columns=columns,
    metadata=meta,
    notes=notes,
    figures=["two_moons.png"],
    extra=extra,
  )


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
  p.add_argument("--quick", action="store_true", help="tiny CI smoke size")
  p.add_argument("--out", default=str(DEFAULT_OUT))
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2,3,4)")
  p.add_argument(
    "--paper",
    action="store_true",
    help="the paper's stated shallow settings (15 units, logistic domain "
    "classifier, lambda 6) instead of the default",
  )
  p.add_argument("--no-progress", action="store_true")
  args, rest = p.parse_known_args(argv)
  overrides = [a for a in rest if a.startswith("--config.")]
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown:
    p.error(f"unrecognized arguments: {' '.join(unknown)}")
  seeds = SEEDS if args.seeds is None else tuple(int(s) for s in args.seeds.split(","))
  if args.quick:
    seeds = seeds[:1] if args.seeds is None else seeds
    overrides = [
      "train.num_steps=20",
      "train.eval_every=10",
      "train.log_every=10",
      "train.checkpoint_every=20",
      *overrides,
    ]
  try:
    variant = "-paper" if args.paper else ""
    c = config_lib.load_config(f"{CONFIG}:dann{variant}")
    config_lib.apply_overrides(c, overrides)
    config_lib.validate(c)
    out = report.prepare_output_dir(args.out, overwrite=args.overwrite, what="study results")
  except ValueError as e:
    print(f"two_moons: error: {e}", file=sys.stderr)
    return 2
  res = run(
    seeds=seeds, overrides=overrides, out=out, progress=not args.no_progress, variant=variant
  )
  paths = write_results(res, seeds=seeds, out=out, variant=variant)
  report.finish_output_dir(out, what="two-moons study")
  print(Path(paths["md"]).read_text().split("## Provenance")[0])
  return 0


if __name__ == "__main__":
  sys.exit(main())
