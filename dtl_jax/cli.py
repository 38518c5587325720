"""The ``dtl-jax`` command: ``demo``, ``train``, ``eval`` and ``measure``.

Examples::

  dtl-jax demo                                   # digits -> digits_m, 7 methods, < 10 min
  dtl-jax train --config experiments/configs/digits.py:dann \\
      --config.steps=2000 --workdir runs/dann
  dtl-jax train --config experiments/configs/digits.py:dann --workdir runs/dann --resume
  dtl-jax eval --workdir runs/dann --domain digits_rot
  dtl-jax measure --source digits --target digits_m

Every error a user can cause (unknown config key, method or dataset, a work directory
that holds another run, a missing data folder) is printed as one line, prefixed
``dtl-jax: error:``, with exit status 2; nothing existing is overwritten without
``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dtl_jax import experiment_utils as eu

DEMO_METHODS = ("source_only", "dan", "jan", "deep_coral", "dann", "cdan", "mdd")
DEFAULT_DEMO_DIR = "dtl_jax_demo"


class CLIError(Exception):
  """An error to print as one line (exit status 2)."""


# ------------------------------------------------------------------------- parsing


def _split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates ``--config.key=value`` (or ``--config.key value``) from other arguments."""
  rest, overrides = [], []
  i = 0
  argv = list(argv)
  while i < len(argv):
    a = argv[i]
    if a.startswith("--config."):
      if "=" in a:
        overrides.append(a[len("--config."):])
      elif i + 1 < len(argv):
        overrides.append(a[len("--config."):] + "=" + argv[i + 1])
        i += 1
      else:
        raise CLIError(f"{a} needs a value: {a}=VALUE")
    else:
      rest.append(a)
    i += 1
  return rest, overrides


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser for all subcommands."""
  parser = argparse.ArgumentParser(
      prog="dtl-jax",
      description="Deep transfer learning in JAX/Flax: run the demo, train any config, "
                  "evaluate a checkpoint, measure a domain shift.")
  parser.add_argument("--version", action="store_true", help="print versions and exit")
  sub = parser.add_subparsers(dest="command", metavar="{demo,train,eval,measure}")

  d = sub.add_parser(
      "demo", help="digits -> digits_m: source-only vs 6 adaptation methods (< 10 min, CPU)",
      description="Train source_only and the adaptation methods on the bundled, offline "
                  "digits -> digits_m shift, print the target-accuracy table (label-free "
                  "selected checkpoint, last step, oracle) and write it as markdown, JSON "
                  "and PNG into --out.")
  d.add_argument("--out", default=DEFAULT_DEMO_DIR,
                 help=f"output directory (default ./{DEFAULT_DEMO_DIR}); an existing demo "
                      "output is only replaced with --overwrite")
  d.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  d.add_argument("--seed", type=int, default=0, help="seed (same seed -> same table)")
  d.add_argument("--methods", default=",".join(DEMO_METHODS),
                 help="comma-separated methods (default: %(default)s)")
  d.add_argument("--steps", type=int, default=None,
                 help="training steps per method (default: the demo config's)")
  d.add_argument("--source", default="digits", help="source domain (default: digits)")
  d.add_argument("--target", default="digits_m", help="target domain (default: digits_m)")
  d.add_argument("--no-progress", action="store_true", help="hide the progress bar")

  t = sub.add_parser(
      "train", help="train any config into a work directory",
      description="Train from a Python config file (get_config() -> ConfigDict). Override "
                  "any field with --config.key=value (type-checked; unknown keys are "
                  "errors). --workdir keeps config.json, checkpoints, metrics and plots.",
      epilog="example: dtl-jax train --config experiments/configs/digits.py:dann "
             "--config.train.num_steps=500 --workdir runs/dann")
  t.add_argument("--config", required=True,
                 help="path/to/config.py or path/to/config.py:arg")
  t.add_argument("--workdir", default=None, help="run directory (required unless "
                 "--show-config)")
  t.add_argument("--resume", action="store_true",
                 help="continue the run in --workdir from its latest checkpoint")
  t.add_argument("--overwrite", action="store_true",
                 help="delete the run already in --workdir and start again")
  t.add_argument("--show-config", action="store_true",
                 help="print the final config (after overrides) and exit")
  t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

  e = sub.add_parser(
      "eval", help="evaluate a trained checkpoint on a domain",
      description="Restore the checkpoint in --workdir and report accuracy on a domain's "
                  "test split (default: the run's target domain).")
  e.add_argument("--workdir", required=True, help="a directory written by dtl-jax train")
  e.add_argument("--domain", default=None, help="domain to evaluate (default: the run's "
                 "target); e.g. digits, digits_m, digits_rot")
  e.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  e.add_argument("--split", default="test", help="split (default: test)")

  m = sub.add_parser(
      "measure", help="transferability / discrepancy report for a domain pair",
      description="Print, for a source/target pair: the MMD permutation test p-value, the "
                  "proxy A-distance and transferability scores.")
  m.add_argument("--source", default="digits", help="source domain (default: digits)")
  m.add_argument("--target", default="digits_m", help="target domain (default: digits_m)")
  m.add_argument("--seed", type=int, default=0)
  m.add_argument("--workdir", default=None,
                 help="use the features of this trained run (default: raw inputs)")
  m.add_argument("--candidate", action="append", default=[],
                 help="a trained run to score by LogME / H-score / LEEP on labeled target "
                      "examples (repeatable)")
  m.add_argument("--num-labeled", type=int, default=100,
                 help="labeled target examples for the candidate scores (default 100)")
  m.add_argument("--permutations", type=int, default=500, help="MMD test permutations")
  m.add_argument("--out", default=None, help="optional directory for a JSON/markdown report")
  m.add_argument("--overwrite", action="store_true")
  return parser


# ------------------------------------------------------------------------- the demo

DEMO_STEPS = 500
DEMO_EVAL_EVERY = 100


def run_demo(*, out: str = DEFAULT_DEMO_DIR, methods: Sequence[str] = DEMO_METHODS,
             seed: int = 0, steps: int | None = None, source: str = "digits",
             target: str = "digits_m", overwrite: bool = False, progress: bool = True,
             selection: str = eu.DEFAULT_SELECTION) -> dict:
  """The main job: source-only vs adaptation methods on a bundled shift.

  For each method: :func:`dtl_jax.experiment_utils.digits_config` (LeNet + bottleneck,
  TLlib SGD, 32 + 32 images per step, ``DEMO_STEPS`` steps, evaluation every
  ``DEMO_EVAL_EVERY``), trained by :func:`dtl_jax.train.fit` into ``out/runs/<method>``.
  Writes ``out/demo.md``, ``out/demo.json`` and ``out/demo.png``.

  Returns:
    the JSON payload (rows and metadata).
  """
  from dtl_jax import report
  if not methods:
    raise CLIError("--methods is empty; e.g. --methods source_only,dann")
  steps = DEMO_STEPS if steps is None else steps
  if steps < 1:
    raise CLIError(f"--steps must be >= 1, got {steps}")
  eval_every = max(1, min(DEMO_EVAL_EVERY, steps))
  configs = {m: eu.digits_config(m, source=source, target=target, seed=seed, steps=steps,
                                 eval_every=eval_every) for m in methods}
  for c in configs.values():
    eu.check_run_config(c)
  if "source_only" not in methods:
    print("dtl-jax demo: note: source_only is not in --methods; no negative-transfer "
          "column", file=sys.stderr)
  out_dir = eu.prepare_output_dir(out, overwrite=overwrite, what="demo results")
  runs_dir = out_dir / "runs"
  rows, raw = [], {}
  t_all = time.perf_counter()
  for i, (m, c) in enumerate(configs.items(), 1):
    if progress:
      print(f"[{i}/{len(configs)}] {m}: {source} -> {target}, {steps} steps", flush=True)
    t0 = time.perf_counter()
    result = eu.train_config(c, workdir=eu.prepare_workdir(runs_dir / m, c, overwrite=True),
                             progress=progress)
    seconds = time.perf_counter() - t0
    s = eu.result_summary(result, selection=selection)
    raw[m] = {"summary": s, "seconds": seconds, "steps_per_second":
              result.get("steps_per_second")}
    rows.append({"method": m, "selected": s["selected"], "selected_step": s["selected_step"],
                 "last": s["last"], "oracle": s["oracle"], "source_acc": s["source_acc"],
                 "seconds": seconds})
  _delta_vs_source_only(rows)
  meta = eu.run_metadata(config=configs[methods[0]], seeds=[seed])
  meta["methods"] = list(methods)
  meta["total_seconds"] = time.perf_counter() - t_all
  columns = [("method", "method"),
             ("selected", f"selected ({selection})"),
             ("selected_step", "at step"),
             ("last", "last step"),
             ("oracle", "oracle*"),
             ("delta", "Δ vs source_only"),
             ("source_acc", "source acc."),
             ("seconds", "time (s)")]
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
      "`dtl_jax.experiment_utils.digits_config(method)`; the first method's full config "
      "is listed below.",
  ]
  report.bar_plot(out_dir / "demo.png", [r["method"] for r in rows],
                  {"label-free selected": [r["selected"] for r in rows],
                   "last step": [r["last"] for r in rows],
                   "oracle (uses target labels)": [r["oracle"] for r in rows]},
                  title=f"{source} → {target}: target test accuracy (seed {seed})",
                  footer=report.footer_text(meta),
                  hline=next((r["selected"] for r in rows if r["method"] == "source_only"),
                             None), hline_label="source_only (selected)")
  paths = report.write_report(out_dir, "demo", title=f"dtl-jax demo: {source} → {target}",
                              rows=rows, columns=columns, metadata=meta, notes=notes,
                              figures=["demo.png"], extra={"runs": raw})
  eu.finish_output_dir(out_dir, what="dtl-jax demo")
  print()
  print(report.text_table(rows, columns))
  print(f"target test accuracy (%); selected = checkpoint picked by the label-free "
        f"criterion '{selection}'; *oracle = best checkpoint chosen with target labels "
        "(reference only)")
  print()
  print(f"wrote {paths['md']}, {paths['json']} and {out_dir / 'demo.png'} "
        f"({meta['total_seconds']:.0f} s)")
  return json.loads(paths["json"].read_text())


def _delta_vs_source_only(rows: list[dict]) -> None:
  base = next((r["selected"] for r in rows if r["method"] == "source_only"), None)
  for r in rows:
    r["delta"] = None if base is None or r["method"] == "source_only" else (
        f"{r['selected'] - base:+.2f}" + (" (negative transfer)" if r["selected"] < base
                                          else ""))


# ------------------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
  config = eu.load_config(args.config)
  eu.apply_overrides(config, overrides)
  if args.show_config:
    print(config)
    return 0
  if not args.workdir:
    raise CLIError("train needs --workdir DIR (where checkpoints and metrics go)")
  # Check everything before anything is written: the workdir rules, then the config.
  eu.prepare_workdir(args.workdir, config, resume=args.resume, overwrite=args.overwrite,
                     dry_run=True)
  eu.check_run_config(config)
  workdir = eu.prepare_workdir(args.workdir, config, resume=args.resume,
                               overwrite=args.overwrite)
  result = eu.train_config(config, workdir=workdir, resume=args.resume,
                           progress=not args.no_progress)
  print(eu.summarize_result(result, config))
  return 0


def _cmd_eval(args: argparse.Namespace) -> int:
  workdir = Path(args.workdir)
  if not (workdir / eu.CONFIG_FILE).is_file():
    raise CLIError(f"{str(workdir)!r} holds no dtl-jax run ({eu.CONFIG_FILE} missing); "
                   "pass the --workdir of a finished `dtl-jax train`")
  out = eu.evaluate_workdir(workdir, domain=args.domain, step=args.step, split=args.split)
  print(json.dumps(out, indent=2))
  return 0


def _cmd_demo(args: argparse.Namespace) -> int:
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  run_demo(out=args.out, methods=methods, seed=args.seed, steps=args.steps,
           source=args.source, target=args.target, overwrite=args.overwrite,
           progress=not args.no_progress)
  return 0


def _cmd_measure(args: argparse.Namespace) -> int:
  eu.measure(source=args.source, target=args.target, seed=args.seed, workdir=args.workdir,
             candidates=args.candidate, num_labeled=args.num_labeled,
             num_permutations=args.permutations, out=args.out, overwrite=args.overwrite)
  return 0


def _print_versions() -> None:
  for k, v in eu.versions().items():
    print(f"{k} {v}")


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the ``dtl-jax`` console script. Returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  try:
    rest, overrides = _split_config_overrides(argv)
    args = parser.parse_args(rest)
    if args.version:
      _print_versions()
      return 0
    if args.command is None:
      parser.print_help()
      return 2
    if overrides and args.command != "train":
      raise CLIError(f"--config.* overrides only apply to `dtl-jax train`, not "
                     f"`{args.command}`")
    if args.command == "train":
      return _cmd_train(args, overrides)
    if args.command == "eval":
      return _cmd_eval(args)
    if args.command == "demo":
      return _cmd_demo(args)
    if args.command == "measure":
      return _cmd_measure(args)
    raise CLIError(f"unknown command {args.command!r}")
  except (CLIError, ValueError, KeyError, FileNotFoundError, NotADirectoryError) as e:
    # ValueError covers ConfigError, WorkdirError and the library's boundary checks
    # (unknown method or domain, missing data folder). DTL_JAX_DEBUG=1 shows tracebacks.
    if os.environ.get("DTL_JAX_DEBUG"):
      raise
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError):
      msg = msg.strip("'\"")
    print(f"dtl-jax: error: {msg}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("dtl-jax: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
