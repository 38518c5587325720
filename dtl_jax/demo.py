"""``dtl-jax demo``: source-only against adaptation methods on a bundled shift.

Each method is trained with :func:`dtl_jax.config.default_config` -- the bundled
digits protocol (16x16 inputs, LeNet + 256-d bottleneck, TLlib SGD, 32 + 32 images per
step, 500 steps, evaluation and label-free selection every 100 steps) -- with only
``method`` (and the seed, shift and steps asked for) changed: exactly seed 0 of the
digits benchmark (``experiments/digits_benchmark.py``) for the default methods. The
results go to ``out/demo.md``, ``out/demo.json`` and ``out/demo.png``; each run's
directory to ``out/runs/<method>``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from dtl_jax import config as config_lib
from dtl_jax import methods as methods_lib
from dtl_jax import provenance, report, runs
from dtl_jax.train import fit

DEMO_METHODS = ("source_only", "dan", "jan", "deep_coral", "dann", "cdan", "mdd")
DEFAULT_DEMO_DIR = "dtl_jax_demo"


DEMO_STEPS = config_lib.KEYS["train.num_steps"].default
DEMO_EVAL_EVERY = config_lib.KEYS["train.eval_every"].default


def demo_config(
  method: str,
  *,
  source: str = "digits",
  target: str = "digits_m",
  seed: int = 0,
  steps: int = DEMO_STEPS,
) -> config_lib.ml_collections.ConfigDict:
  """The config the demo trains ``method`` with: the defaults, ``method`` and the run
  size changed."""
  c = config_lib.default_config()
  c.method = method
  c.seed = int(seed)
  c.data.source, c.data.target = source, target
  c.train.num_steps = int(steps)
  c.train.eval_every = max(1, min(DEMO_EVAL_EVERY, int(steps)))
  return c


def run_demo(
  *,
  out: str = DEFAULT_DEMO_DIR,
  methods: Sequence[str] = DEMO_METHODS,
  seed: int = 0,
  steps: int | None = None,
  source: str = "digits",
  target: str = "digits_m",
  overwrite: bool = False,
  progress: bool = True,
  selection: str = runs.DEFAULT_SELECTION,
) -> dict:
  """The main job: source-only vs adaptation methods on a bundled shift.

  For each method: :func:`demo_config` (the default protocol), trained by
  :func:`dtl_jax.train.fit` into ``out/runs/<method>``. Writes ``out/demo.md``,
  ``out/demo.json`` and ``out/demo.png``. Every config is validated before anything
  is written.

  Returns:
    the JSON payload (rows and metadata).
  """
  if not methods:
    raise config_lib.ConfigError("--methods is empty; e.g. --methods source_only,dann")
  unknown = [m for m in methods if m not in methods_lib.METHODS]
  if unknown:
    raise config_lib.ConfigError(
      f"--methods: unknown method(s) {unknown}; choose from "
      f"{', '.join(sorted(methods_lib.METHODS))}"
    )
  steps = DEMO_STEPS if steps is None else steps
  if steps < 1:
    raise config_lib.ConfigError(f"--steps must be >= 1, got {steps}")
  configs = {
    m: demo_config(m, source=source, target=target, seed=seed, steps=steps) for m in methods
  }
  for c in configs.values():
    config_lib.validate(c)
  eval_every = configs[methods[0]].train.eval_every
  if "source_only" not in methods:
    print(
      "dtl-jax demo: note: source_only is not in --methods; no negative-transfer column",
      file=sys.stderr,
    )
  out_dir = report.prepare_output_dir(out, overwrite=overwrite, what="demo results")
  runs_dir = out_dir / "runs"
  rows, raw = [], {}
  t_all = time.perf_counter()
  for i, (m, c) in enumerate(configs.items(), 1):
    if progress:
      print(f"[{i}/{len(configs)}] {m}: {source} -> {target}, {steps} steps", flush=True)
    t0 = time.perf_counter()
    c.train.progress = progress
    result = fit(c, runs_dir / m, overwrite=True)
    seconds = time.perf_counter() - t0
    s = runs.result_summary(result, selection=selection)
    raw[m] = {"summary": s, "seconds": seconds, "steps_per_second": result.get("steps_per_second")}
    rows.append(
      {
        "method": m,
        "selected": s["selected"],
        "selected_step": s["selected_step"],
        "last": s["last"],
        "oracle": s["oracle"],
        "source_acc": s["source_acc"],
        "seconds": seconds,
      }
    )
  _delta_vs_source_only(rows)
  meta = provenance.run_metadata(config=configs[methods[0]], seeds=[seed])
  meta["methods"] = list(methods)
  meta["total_seconds"] = time.perf_counter() - t_all
  columns = [
    ("method", "method"),
    ("selected", f"selected ({selection})"),
    ("selected_step", "at step"),
    ("last", "last step"),
    ("oracle", "oracle*"),
    ("delta", "Δ vs source_only"),
    ("source_acc", "source acc."),
    ("seconds", "time (s)"),
  ]
  notes = [
    f"Unsupervised domain adaptation {source} → {target} (bundled, offline; disjoint "
    f"images, 16x16), seed {seed}, {steps} steps of 32 source + 32 target images, LeNet + "
    "256-d bottleneck, TLlib SGD (lr 0.01, momentum 0.9, wd 1e-3). Target labels are "
    f"never used for training or selection: the 'selected' column is the checkpoint "
    f"(every {eval_every} steps) that the label-free criterion `{selection}` picks; "
    "the ORACLE column (best target test accuracy over those checkpoints) is an "
    "upper bound for reference only. Accuracies on the target test split.",
    "Columns: target test accuracy (%) at the checkpoint the label-free criterion picks "
    "(`selected`, and the step it picked), at the last step, and *the oracle (best "
    "target accuracy over the evaluated checkpoints, chosen WITH target labels — not a "
    "valid model-selection rule, shown only as an upper bound); `Δ` compares the "
    "selected accuracy with source_only; time is wall-clock seconds per method "
    "including compilation.",
    "Same seed → same table (apart from the time column). Config of each method: "
    "`dtl_jax.demo.demo_config(method)` (the defaults of `dtl_jax.config` with the "
    "method set); the first method's full config is listed below.",
  ]
  report.bar_plot(
    out_dir / "demo.png",
    [r["method"] for r in rows],
    {
      "label-free selected": [r["selected"] for r in rows],
      "last step": [r["last"] for r in rows],
      "oracle (uses target labels)": [r["oracle"] for r in rows],
    },
    title=f"{source} → {target}: target test accuracy (seed {seed})",
    footer=report.footer_text(meta),
    hline=next((r["selected"] for r in rows if r["method"] == "source_only"), None),
    hline_label="source_only (selected)",
  )
  paths = report.write_report(
    out_dir,
    "demo",
    title=f"dtl-jax demo: {source} → {target}",
    rows=rows,
    columns=columns,
    metadata=meta,
    notes=notes,
    figures=["demo.png"],
    extra={"runs": raw},
  )
  report.finish_output_dir(out_dir, what="dtl-jax demo")
  print()
  print(report.text_table(rows, columns))
  print(
    f"target test accuracy (%); selected = checkpoint picked by the label-free "
    f"criterion '{selection}'; *oracle = best checkpoint chosen with target labels "
    "(reference only)"
  )
  print()
  print(
    f"wrote {paths['md']}, {paths['json']} and {out_dir / 'demo.png'} "
    f"({meta['total_seconds']:.0f} s)"
  )
  return json.loads(paths["json"].read_text())


def _delta_vs_source_only(rows: list[dict]) -> None:
  base = next((r["selected"] for r in rows if r["method"] == "source_only"), None)
  for r in rows:
    r["delta"] = (
      None
      if base is None or r["method"] == "source_only"
      else (
        f"{r['selected'] - base:+.2f}" + (" (negative transfer)" if r["selected"] < base else "")
      )
    )
