"""Before / after of the MMD derivative rules (issue 15), in one process, alternating.

``python -m benchmarks.kernels_ab [--threads 1] [--quick] [--out FILE.json]`` (default output:
``benchmarks/results/<machine>-<threads>t/kernels_ab.json``, which
``benchmarks/changes.py`` reads for the before / after of the commits that added the rules)

Times ``dtl_jax.losses.mk_mmd`` (dense, and by row blocks: ``mk_mmd_tiled``) and ``jmmd``
(TLlib estimator, value + gradient w.r.t. the features, float32) five ways, by swapping the
library's derivative rules for plain autodiff at trace time:

* ``before``     -- plain autodiff of ``X Xᵀ``, of the squaring chain and of ``Wᵀ K W``
  (the library before issue 15);
* ``sym_gram``   -- only :func:`dtl_jax.losses.kernels.symmetric_gram` (one backward
  product instead of two);
* ``kernel_jvp`` -- only the hand-written derivative of the kernel sum;
* ``both_rules`` -- both (the library from 7a6a0c5 on);
* ``after``      -- the library now: the all-Gaussian MMD takes the derivative of the
  whole weighted form ``Wᵀ K W`` (``dtl_jax.losses.mmd._gaussian_form``), whose backward
  is one ``[N, N] x [N, d]`` product and one matrix-vector product, with no ``[N, N]``
  transpose (by row blocks: one product per block, where autodiff of the blocks spends
  two).

Each configuration also records XLA's flop count of the compiled computation, which shows
the product that the symmetric rule removes (and, by row blocks, the weighted-form rule).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from typing import Any

from benchmarks import harness

FULL = ((128, 256), (512, 256), (2048, 256), (128, 2048), (512, 2048))
QUICK = ((128, 256), (64, 2048))
#: ``mk_mmd_tiled``: MK-MMD by row blocks of ``jax_losses.TILE`` rows (the memory path).
FULL_TILED = ((2048, 256),)
QUICK_TILED = ((1024, 128),)


@contextlib.contextmanager
def _rules(sym_gram: bool, kernel_jvp: bool, form: bool):
  """Swaps the library's custom rules for plain autodiff (module globals, trace time)."""
  import importlib

  import jax.numpy as jnp

  from dtl_jax.losses import kernels

  mmd = importlib.import_module("dtl_jax.losses.mmd")  # the package exports a function `mmd`
  saved = kernels._symmetric_gram, kernels._kernel_sum, mmd._gaussian_form
  if not sym_gram:
    kernels._symmetric_gram = lambda x, precision: jnp.matmul(x, x.T, precision=precision)
  if not kernel_jvp:
    kernels._kernel_sum = lambda d, s2, m: kernels._kernel_sum_and_slope(d, s2, m, slope=False)[0]
  if not form:
    mmd._gaussian_form = mmd._gaussian_form_value
  try:
    yield
  finally:
    kernels._symmetric_gram, kernels._kernel_sum, mmd._gaussian_form = saved


#: name -> (symmetric-Gram rule, kernel-sum rule, weighted-form rule).
VARIANTS = {
  "before": (False, False, False),
  "sym_gram": (True, False, False),
  "kernel_jvp": (False, True, False),
  "both_rules": (True, True, False),
  "after": (True, True, True),
}


def run(
  sizes, tiled_sizes=(), *, repeats: int, min_sample_s: float, log=print
) -> list[dict[str, Any]]:
  import jax
  import numpy as np

  from benchmarks import jax_losses

  rows = []
  for loss in ("mk_mmd", "jmmd", "mk_mmd_tiled"):
    for n, d in tiled_sizes if loss == "mk_mmd_tiled" else sizes:
      rng = np.random.default_rng(0)
      zs = rng.standard_normal((n, d), dtype=np.float32)
      zt = rng.standard_normal((n, d), dtype=np.float32) + 0.5
      args: tuple = (zs, zt)
      make = jax_losses.mk_mmd_value_and_grad
      if loss == "mk_mmd_tiled":
        make = functools.partial(jax_losses.mk_mmd_value_and_grad, tiled=True, n=n)
      if loss == "jmmd":
        p = rng.random((2 * n, 10), dtype=np.float32)
        p /= p.sum(1, keepdims=True)
        args = (zs, zt, p[:n], p[n:])
        make = jax_losses.jmmd_value_and_grad
      args = jax.device_put(args)
      fns, flops, outs = {}, {}, {}
      for name, rules in VARIANTS.items():
        fn = make()  # a new function object: no trace cache shared between variants
        with _rules(*rules):
          compiled = jax.jit(fn).lower(*args).compile()
        cost = compiled.cost_analysis()
        flops[name] = (cost[0] if isinstance(cost, list) else cost).get("flops")
        outs[name] = jax.block_until_ready(compiled(*args))
        fns[name] = lambda c=compiled, a=args: jax.block_until_ready(c(*a))
      ref = outs["before"]
      for name, out in outs.items():  # same numbers (float32)
        err = max(
          float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(b)))))
          for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True)
        )
        if err > 1e-3:
          raise AssertionError(f"{loss} n={n} d={d} {name}: differs from 'before' by {err:.2e}")
      t = harness.time_alternating(fns, repeats=repeats, min_sample_s=min_sample_s)
      row = {
        "config": f"{loss} n={n} d={d}",
        "loss": loss,
        "n": n,
        "d": d,
        "timings": {k: v.as_dict() for k, v in t.items()},
        "xla_flops": flops,
        "speedup_after_vs_before": t["before"].median_s / t["after"].median_s,
        "speedup_after_vs_both_rules": t["both_rules"].median_s / t["after"].median_s,
      }
      rows.append(row)
      log(
        f"  {loss} n={n} d={d}: "
        + " ".join(f"{k}={v.median_s * 1e3:.3g}ms" for k, v in t.items())
        + f" before/after={row['speedup_after_vs_before']:.2f}x"
        + f" both_rules/after={row['speedup_after_vs_both_rules']:.2f}x"
      )
  return rows


def main(argv=None) -> dict[str, Any]:
  p = argparse.ArgumentParser(prog="python -m benchmarks.kernels_ab", description=__doc__)
  p.add_argument("--threads", type=int, default=None)
  p.add_argument("--quick", action="store_true")
  p.add_argument(
    "--out",
    default=None,
    help="JSON file to write (default: benchmarks/results/<machine>-<threads>t/kernels_ab.json; "
    "--quick writes nothing unless given)",
  )
  args = p.parse_args(argv)
  settings = harness.pin_threads(args.threads)
  rows = run(
    QUICK if args.quick else FULL,
    QUICK_TILED if args.quick else FULL_TILED,
    repeats=3 if args.quick else 11,
    min_sample_s=0.01 if args.quick else 0.1,
  )
  from dtl_jax.provenance import git_commit

  out = {
    "command": "python -m benchmarks.kernels_ab "
    + " ".join(sys.argv[1:] if argv is None else argv),
    "git_commit": git_commit(),
    "machine": harness.machine_info(settings),
    "rows": rows,
  }
  path = args.out
  if path is None and not args.quick:
    path = os.path.join(
      os.path.dirname(os.path.abspath(__file__)),
      "results",
      harness.machine_slug(settings["threads"]),
      "kernels_ab.json",
    )
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
      json.dump(out, f, indent=1, default=str)
    print(f"wrote {path}")
  return out


if __name__ == "__main__":
  main()
