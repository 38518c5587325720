"""The ``dtl-jax`` command: ``demo``, ``train``, ``adapt``, ``eval`` and ``measure``.

Examples::

  dtl-jax demo                                   # MNIST -> MNIST-M, 5 methods, a few min
  dtl-jax train --config experiments/configs/digits.py:dann \\
      --config.train.num_steps=2000 --workdir runs/dann
  dtl-jax train --config experiments/configs/digits.py:dann --workdir runs/dann --resume
  dtl-jax train --list-keys                      # every config key, default and meaning
  dtl-jax adapt --from runs/so --target digits_rot --method tent --workdir runs/tent
  dtl-jax adapt --from runs/so --online --shifts digits_rot,digits_noisy,digits_inv
  dtl-jax eval --workdir runs/dann --selected dev    # the label-free pick
  dtl-jax eval --workdir runs/dann --domain digits_rot
  dtl-jax measure --workdir runs/dann --candidate runs/dann

Every error a user can cause (an unknown or bad config key, method or dataset, a run
directory that holds another run, a missing data folder, a diverged run, a read-only
directory, a model that does not fit its data) is printed as one line, prefixed
``dtl-jax: error:``, with exit status 2 (``DTL_JAX_DEBUG=1`` shows the traceback);
nothing existing is overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dtl_jax import config as config_lib


class CLIError(Exception):
  """An error to print as one line (exit status 2)."""


def _split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates ``--config.key=value`` (or ``--config.key value``) from other arguments."""
  rest, overrides = [], []
  i = 0
  argv = list(argv)
  while i < len(argv):
    a = argv[i]
    if a.startswith("--config."):
      if "=" in a:
        overrides.append(a[len("--config.") :])
      elif i + 1 < len(argv):
        overrides.append(a[len("--config.") :] + "=" + argv[i + 1])
        i += 1
      else:
        raise CLIError(f"{a} needs a value: {a}=VALUE")
    else:
      rest.append(a)
    i += 1
  return rest, overrides


def build_parser() -> argparse.ArgumentParser:
  """The argparse parser for all subcommands."""
  from dtl_jax.demo import DEFAULT_DEMO_DIR, DEMO_METHODS

  parser = argparse.ArgumentParser(
    prog="dtl-jax",
    description="Deep transfer learning in JAX/Flax: run the demo, train any config, "
    "evaluate a checkpoint, measure a domain shift.",
  )
  parser.add_argument("--version", action="store_true", help="print versions and exit")
  sub = parser.add_subparsers(dest="command", metavar="{demo,train,adapt,eval,measure}")

  d = sub.add_parser(
    "demo",
    help="MNIST -> MNIST-M: source-only vs adaptation methods (CPU, minutes)",
    description="Train source_only and the adaptation methods on the bundled, offline "
    "MNIST -> MNIST-M shift with the DANN paper's protocol "
    "(dtl_jax.demo.dann_mnist_m_config), "
    "print the target-accuracy table (label-free selected checkpoint, last "
    "step, oracle) and write it as markdown, JSON and PNG into --out.",
  )
  d.add_argument(
    "--out",
    default=DEFAULT_DEMO_DIR,
    help=f"output directory (default ./{DEFAULT_DEMO_DIR}); an existing demo "
    "output is only replaced with --overwrite",
  )
  d.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  d.add_argument("--seed", type=int, default=0, help="seed (same seed -> same table)")
  d.add_argument(
    "--methods",
    default=",".join(DEMO_METHODS),
    help="comma-separated methods (default: %(default)s)",
  )
  d.add_argument(
    "--steps",
    type=int,
    default=None,
    help="training steps per method (default: the protocol's 600; the learning-rate "
    "schedule follows them)",
  )
  d.add_argument("--source", default="mnist", help="source domain (default: mnist)")
  d.add_argument("--target", default="mnist_m", help="target domain (default: mnist_m)")
  d.add_argument("--no-progress", action="store_true", help="hide the progress bar")

  t = sub.add_parser(
    "train",
    help="train a config into a run directory",
    description="Train from a Python config file (get_config() -> ConfigDict; default: "
    "dtl_jax.config.default_config()). Override any key with "
    "--config.key=value (type-checked; unknown keys are errors). The whole "
    "config is validated and the data opened before --workdir is written.",
    epilog="example: dtl-jax train --config experiments/configs/digits.py:dann "
    "--config.train.num_steps=500 --workdir runs/dann",
  )
  t.add_argument(
    "--config",
    default=None,
    help="path/to/config.py or path/to/config.py:arg (default: the defaults)",
  )
  t.add_argument("--workdir", default=None, help="run directory (required to train)")
  t.add_argument(
    "--resume", action="store_true", help="continue the run in --workdir from its latest checkpoint"
  )
  t.add_argument(
    "--overwrite", action="store_true", help="delete the run already in --workdir and start again"
  )
  t.add_argument(
    "--show-config", action="store_true", help="print the final config (after overrides) and exit"
  )
  t.add_argument(
    "--list-keys",
    action="store_true",
    help="print every config key with its default and meaning, and exit",
  )
  t.add_argument(
    "--list-domains",
    action="store_true",
    help="print the data.source / data.target names, and exit",
  )
  t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

  a = sub.add_parser(
    "adapt",
    help="source-free adaptation of a trained run: AdaBN, Tent, SHOT (target data only)",
    description="Adapt the model of a finished source run (--from) to a target domain with "
    "unlabelled target images only (AdaBN, Tent, SHOT), into its own run directory "
    "(resume, no overwrite, label-free selection by target entropy / SND); reports the "
    "target accuracy before and after. With --online: stream the test images of one or "
    "more target shifts in batches, each scored before the model adapts on it (Tent).",
  )
  a.add_argument("--from", dest="source_run", required=True, help="the source run directory")
  a.add_argument("--target", default=None, help="target domain (e.g. digits_rot)")
  a.add_argument("--method", default="tent", help="tent (default), shot or adabn")
  a.add_argument("--workdir", default=None, help="run directory of the adaptation")
  a.add_argument(
    "--epochs",
    type=int,
    default=None,
    help="passes over the target images (default: tent 10, shot 30)",
  )
  a.add_argument("--batch-size", type=int, default=64, help="target images per step (64)")
  a.add_argument("--resume", action="store_true", help="continue the run in --workdir")
  a.add_argument("--overwrite", action="store_true", help="delete the run in --workdir first")
  a.add_argument(
    "--online",
    action="store_true",
    help="online test-time evaluation (Tent) on the shifts in --shifts",
  )
  a.add_argument(
    "--shifts",
    default=None,
    help="--online: comma-separated target domains, streamed in this order",
  )
  a.add_argument(
    "--reset",
    default="shift",
    choices=("shift", "never"),
    help="--online: restore the source model at each shift (default) or never",
  )
  a.add_argument("--out", default=None, help="--online: also write the report as JSON here")
  a.add_argument("--no-progress", action="store_true", help="hide the progress output")

  e = sub.add_parser(
    "eval",
    help="evaluate a trained checkpoint on a domain",
    description="Restore a checkpoint of the run in --workdir and report accuracy on a "
    "domain's split (default: the run's target test split), with the data "
    "built as the run built it.",
  )
  e.add_argument("--workdir", required=True, help="a directory written by dtl-jax train")
  e.add_argument(
    "--domain",
    default=None,
    help="domain to evaluate (default: the run's target); e.g. digits, digits_m, digits_rot",
  )
  e.add_argument(
    "--step",
    type=int,
    default=None,
    help="checkpoint step, under checkpoints/ or selected/ (default: latest)",
  )
  e.add_argument(
    "--selected",
    default=None,
    metavar="CRITERION",
    help="the checkpoint a label-free criterion picked: dev, iwv, snd, entropy or source_val_acc",
  )
  e.add_argument("--split", default="test", help="split (default: test)")

  m = sub.add_parser(
    "measure",
    help="transferability / discrepancy report for a domain pair",
    description="Print, for a source/target pair: the MMD permutation test p-value, the "
    "proxy A-distance and transferability scores of candidate runs. With "
    "--workdir, the data is built as that run built it and its features are "
    "used.",
  )
  m.add_argument(
    "--source", default=None, help="source domain (default: the --workdir run's; else required)"
  )
  m.add_argument(
    "--target", default=None, help="target domain (default: the --workdir run's; else required)"
  )
  m.add_argument("--seed", type=int, default=None, help="seed (default: the run's, or 0)")
  m.add_argument(
    "--workdir", default=None, help="use the features of this trained run (default: raw inputs)"
  )
  m.add_argument(
    "--candidate",
    action="append",
    default=[],
    help="a trained run to score by LogME / H-score / LEEP on labeled target examples (repeatable)",
  )
  m.add_argument(
    "--num-labeled",
    type=int,
    default=100,
    help="labeled target examples for the candidate scores (default 100)",
  )
  m.add_argument("--permutations", type=int, default=500, help="MMD test permutations")
  m.add_argument("--out", default=None, help="optional directory for a JSON/markdown report")
  m.add_argument("--overwrite", action="store_true")
  return parser


# ------------------------------------------------------------------------- commands


def _cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
  if args.list_keys:
    print(config_lib.describe())
    return 0
  if args.list_domains:
    from dtl_jax import data

    for name, description in data.available_domains().items():
      print(f"{name:16s} {description}")
    return 0
  config = config_lib.load_config(args.config) if args.config else config_lib.default_config()
  config_lib.apply_overrides(config, overrides)
  if args.resume:
    config.train.resume = True
  if args.no_progress:
    config.train.progress = False
  if args.show_config:
    print(config)
    return 0
  if not args.workdir:
    raise CLIError("train needs --workdir DIR (where checkpoints and metrics go)")
  from dtl_jax import runs
  from dtl_jax.train import fit

  result = fit(config, args.workdir, overwrite=args.overwrite)
  print(runs.summarize_result(result))
  return 0


def _cmd_adapt(args: argparse.Namespace, overrides: list[str]) -> int:
  from dtl_jax.train import adapt as adapt_lib

  if args.online:
    if not args.shifts:
      raise CLIError("--online needs --shifts DOMAIN[,DOMAIN...]")
    shifts = [x.strip() for x in args.shifts.split(",") if x.strip()]
    out = adapt_lib.online(args.source_run, shifts, reset=args.reset, batch_size=args.batch_size)
    for mode in ("source", "tent"):
      per = ", ".join(f"{k} {v:.2f}" for k, v in out[mode]["per_shift"].items())
      print(f"{mode:7s} overall {out[mode]['overall']:.2f}%  ({per})")
    if args.out:
      from dtl_jax.train.workdir import write_json

      Path(args.out).parent.mkdir(parents=True, exist_ok=True)
      write_json(args.out, out)
    return 0
  if not args.target or not args.workdir:
    raise CLIError("adapt needs --target DOMAIN and --workdir DIR (or --online --shifts ...)")
  config = adapt_lib.adapt_config(
    args.source_run,
    target=args.target,
    method=args.method,
    batch_size=args.batch_size,
    epochs=args.epochs,
  )
  config_lib.apply_overrides(config, overrides)
  config.train.resume = bool(args.resume)
  config.train.progress = not args.no_progress
  result = adapt_lib.adapt(config, args.workdir, overwrite=args.overwrite)
  pick = result["selected"]["entropy"]
  print(
    f"{result['method']} {args.source_run} -> {args.target}: target accuracy "
    f"{100 * result['before']['target_acc']:.2f}% before, "
    f"{100 * result['last']['target_acc']:.2f}% after {result['steps']} steps "
    f"(label-free pick by entropy: step {pick['step']}, {100 * pick['target_acc']:.2f}%)"
  )
  return 0


def _cmd_eval(args: argparse.Namespace) -> int:
  from dtl_jax import runs

  out = runs.evaluate_run(
    args.workdir, domain=args.domain, step=args.step, selected=args.selected, split=args.split
  )
  print(json.dumps(out, indent=2))
  return 0


def _cmd_demo(args: argparse.Namespace) -> int:
  from dtl_jax.demo import run_demo

  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  run_demo(
    out=args.out,
    methods=methods,
    seed=args.seed,
    steps=args.steps,
    source=args.source,
    target=args.target,
    overwrite=args.overwrite,
    progress=not args.no_progress,
  )
  return 0


def _cmd_measure(args: argparse.Namespace) -> int:
  from dtl_jax import runs

  runs.measure(
    source=args.source,
    target=args.target,
    seed=args.seed,
    workdir=args.workdir,
    candidates=args.candidate,
    num_labeled=args.num_labeled,
    num_permutations=args.permutations,
    out=args.out,
    overwrite=args.overwrite,
  )
  return 0


def _one_line(e: BaseException) -> str:
  """The first line of an error's message (a file error: what and which file)."""
  if isinstance(e, OSError) and e.filename is not None and e.strerror:
    return f"{e.strerror}: {str(e.filename)!r}"
  text = str(e).strip()
  if isinstance(e, KeyError):
    text = text.strip("'\"")
  first = text.splitlines()[0] if text else type(e).__name__
  if type(e).__name__ == "TrainingDiverged":
    return f"training diverged: {first}"
  return first


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the ``dtl-jax`` console script. Returns the exit status."""
  import flax.errors

  from dtl_jax import provenance
  from dtl_jax.train.loop import TrainingDiverged

  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  try:
    rest, overrides = _split_config_overrides(argv)
    args = parser.parse_args(rest)
    if args.version:
      for k, v in provenance.versions().items():
        print(f"{k} {v}")
      return 0
    if args.command is None:
      parser.print_help()
      return 2
    if overrides and args.command not in ("train", "adapt"):
      raise CLIError(
        f"--config.* overrides only apply to `dtl-jax train` and `adapt`, not `{args.command}`"
      )
    commands = {"eval": _cmd_eval, "demo": _cmd_demo, "measure": _cmd_measure}
    if args.command == "train":
      return _cmd_train(args, overrides)
    if args.command == "adapt":
      return _cmd_adapt(args, overrides)
    return commands[args.command](args)
  except (CLIError, ValueError, KeyError, OSError, TrainingDiverged, flax.errors.FlaxError) as e:
    # ValueError covers ConfigError, WorkdirError and the library's boundary checks;
    # OSError a read-only or missing directory; FlaxError a model that does not fit its
    # inputs. DTL_JAX_DEBUG=1 shows the traceback.
    if os.environ.get("DTL_JAX_DEBUG"):
      raise
    print(f"dtl-jax: error: {_one_line(e)}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("dtl-jax: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
