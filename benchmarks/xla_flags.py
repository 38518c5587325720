"""A/B of the XLA:CPU options of jaxlib 0.10.2 on the small-CNN training steps (issue 15).

``python -m benchmarks.xla_flags [--threads 1] [--rounds 3] [--quick]``

XLA reads ``XLA_FLAGS`` once per process, so every flag set runs in its own process
(pinned like the other benchmarks); the flag sets take turns, round after round, so a
shared machine's drift hits them alike. Each process times, after compiling:

* ``dann_mnist``: the DANN step of the end-to-end protocol (:mod:`benchmarks.e2e`:
  Ganin's MNIST net, 64 + 64 images 28x28x3, domain classifier (100, 1));
* ``lenet_dann``: the LeNet DANN step of :mod:`benchmarks.steps` (TLlib's digits
  protocol, 128 + 128 images 28x28x1);
* ``conv1``: forward + weight gradient of the first convolution of ``dann_mnist`` alone;

and checks that the loss after three steps equals the default's (fast-math options may
change the numbers; a set whose numbers move by more than 1e-4 relative is flagged).

What jaxlib 0.10.2 offers (``strings libjax_common.so``): the thunk runtime is the only
runtime (``--xla_cpu_use_thunk_runtime=false`` is "no longer supported"); convolutions
and dots go to YNNPACK by default (``ynn_fusion``); ``--xla_cpu_use_onednn`` /
``--xla_cpu_use_xnnpack`` with the ``*_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_
CONVOLUTION`` options did not route this convolution to oneDNN / XNNPACK in this build
(the HLO keeps a plain ``convolution``), so the sets below compare what does change the
program: YNNPACK on / off, XNNPACK graph fusion, fast math, the old loop emitters.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import harness

FLAG_SETS: dict[str, str] = {
  "default": "",
  "no_ynnpack": "--xla_cpu_experimental_ynn_fusion_type=",
  "ynn_conv_only": (
    "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
  ),
  "xnn_graph_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
  "fast_math": "--xla_cpu_enable_fast_math=true",
  "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false",
  "onednn": "--xla_cpu_use_onednn=true",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dann_mnist_step(n: int):
  import jax
  import numpy as np

  from benchmarks import e2e
  from dtl_jax import methods, models, train

  c = e2e.make_config("dann", steps=600, batch_size=n)
  model = models.build(c.model, num_classes=10)
  method = methods.build(c.method, **dict(c.method_kwargs))
  rng = np.random.default_rng(0)
  batch = {
    "x_s": rng.random((n, 28, 28, 3), dtype=np.float32),
    "y_s": rng.integers(0, 10, n).astype(np.int32),
    "x_t": rng.random((n, 28, 28, 3), dtype=np.float32),
  }
  optim = dict(c.optim)
  state, tx = train.create_train_state(
    model, method, key=jax.random.key(0), example_x=batch["x_s"][:2], **optim
  )
  step = jax.jit(train.make_train_step(model, method, tx, total_steps=600), donate_argnums=0)
  return step, state, batch


def _conv1(n: int):
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np

  x = jnp.asarray(np.random.default_rng(0).random((2 * n, 28, 28, 3), dtype=np.float32))
  conv = nn.Conv(32, (5, 5), padding="VALID")
  p = conv.init(jax.random.key(0), x)
  f = jax.jit(jax.grad(lambda p, x: jnp.sum(conv.apply(p, x) ** 2)))
  return f, p, x


def _child(args) -> None:
  harness.pin_threads(args.threads)
  import jax

  from benchmarks import steps

  quick = args.quick
  out: dict[str, Any] = {"flags": os.environ.get("XLA_FLAGS", ""), "timings": {}, "compile_s": {}}
  fns = {}
  losses = {}
  for name, build in (
    ("dann_mnist", lambda: _dann_mnist_step(32 if quick else 64)),
    ("lenet_dann", lambda: steps.make_jax_step("dann", "jax", n=32 if quick else 128)),
  ):
    step, state, batch = build()
    t = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    out["compile_s"][name] = time.perf_counter() - t
    holder = [state]
    vals = []
    for _ in range(3):
      holder[0], m = compiled(holder[0], batch)
      vals.append(float(m["loss"]))
    losses[name] = vals

    def call(c=compiled, h=holder, b=batch):
      h[0], m = c(h[0], b)
      return jax.block_until_ready(m)

    fns[name] = call
  f, p, x = _conv1(32 if quick else 64)
  fns["conv1"] = lambda: jax.block_until_ready(f(p, x))
  t = harness.time_alternating(
    fns, repeats=3 if quick else 9, min_sample_s=0.02 if quick else 0.3, warmup=2
  )
  out["timings"] = {k: v.as_dict() for k, v in t.items()}
  out["losses"] = losses
  print(json.dumps(out), flush=True)


def main(argv=None) -> dict[str, Any]:
  p = argparse.ArgumentParser(prog="python -m benchmarks.xla_flags", description=__doc__)
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--rounds", type=int, default=3, help="processes per flag set")
  p.add_argument("--sets", nargs="+", default=list(FLAG_SETS), choices=list(FLAG_SETS))
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", default=None, help="write the results JSON / markdown here")
  p.add_argument("--note", default="")
  args = p.parse_args(argv)
  if args.child:
    _child(args)
    return {}
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  runs: dict[str, list[dict[str, Any]]] = {s: [] for s in args.sets}
  for r in range(args.rounds):
    order = args.sets[r % len(args.sets) :] + args.sets[: r % len(args.sets)]
    for s in order:
      e = dict(env)
      e["XLA_FLAGS"] = FLAG_SETS[s]
      cmd = [
        sys.executable,
        "-m",
        "benchmarks.xla_flags",
        "--child",
        "--threads",
        str(args.threads),
      ]
      if args.quick:
        cmd.append("--quick")
      proc = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, check=False)
      if proc.returncode != 0:
        runs[s].append({"error": proc.stderr[-2000:]})
        print(f"  {s}: FAILED\n{proc.stderr[-800:]}", flush=True)
        continue
      res = json.loads(proc.stdout.strip().splitlines()[-1])
      runs[s].append(res)
      print(
        f"  round {r} {s:20s} "
        + " ".join(f"{k}={v['median_s'] * 1e3:.2f}ms" for k, v in res["timings"].items())
        + " compile "
        + " ".join(f"{k}={v:.1f}s" for k, v in res["compile_s"].items()),
        flush=True,
      )
  summary: dict[str, Any] = {}
  base = [x for x in runs.get("default", []) if "error" not in x]
  for s, rs in runs.items():
    ok = [x for x in rs if "error" not in x]
    if not ok:
      summary[s] = {"error": rs[0].get("error", "")[-500:] if rs else "not run"}
      continue
    entry: dict[str, Any] = {"flags": FLAG_SETS[s]}
    for k in ok[0]["timings"]:
      meds = [x["timings"][k]["median_s"] for x in ok]
      entry[k] = {"median_s": statistics.median(meds), "runs": meds}
    entry["compile_s"] = {
      k: statistics.median([x["compile_s"][k] for x in ok]) for k in ok[0]["compile_s"]
    }
    if base:
      drift = max(
        abs(a - b) / max(abs(b), 1e-12)
        for k in ok[0]["losses"]
        for a, b in zip(ok[0]["losses"][k], base[0]["losses"][k], strict=True)
      )
      entry["loss_rel_diff_vs_default"] = drift
      entry["numerics_changed"] = drift > 1e-4
    summary[s] = entry
  if "default" in summary and "error" not in summary["default"]:
    for e in summary.values():
      if "error" in e:
        continue
      e["speedup_vs_default"] = {
        k: summary["default"][k]["median_s"] / e[k]["median_s"]
        for k in ("dann_mnist", "lenet_dann", "conv1")
      }
  from dtl_jax.provenance import git_commit

  result = {
    "command": "python -m benchmarks.xla_flags " + " ".join(sys.argv[1:] if argv is None else argv),
    "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "git_commit": git_commit(),
    "machine": harness.machine_info({"threads": args.threads}),
    "note": args.note,
    "summary": summary,
    "runs": runs,
  }
  print("== summary (median over rounds; speed-up vs default)", flush=True)
  for s, e in summary.items():
    if "error" in e:
      print(f"  {s:20s} ERROR", flush=True)
      continue
    print(
      f"  {s:20s} "
      + " ".join(
        f"{k}={e[k]['median_s'] * 1e3:.2f}ms (x{e.get('speedup_vs_default', {}).get(k, 1):.2f})"
        for k in ("dann_mnist", "lenet_dann", "conv1")
      )
      + (" NUMERICS CHANGED" if e.get("numerics_changed") else ""),
      flush=True,
    )
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "xla_flags.json"), "w") as f:
      json.dump(result, f, indent=1, default=str)
  return result


if __name__ == "__main__":
  main()
