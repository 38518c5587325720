"""Results writers (JSON, markdown, PNG) and the PASS/FAIL targets (issues 8 and 15)."""

from __future__ import annotations

import json
import os
from typing import Any

EAGER = ("torch_gram", "torch_fn", "dalib")  # PyTorch eager contenders
SPEEDUP_TARGET = 1.5  # JAX >= 1.5x faster than the best PyTorch eager
LIMIT_TARGET = 1.3  # mk_mmd time / two-product matmul time at d = 2048
MEMORY_TARGET_GIB = 2.0  # tiled mk_mmd + grad at n = 32768, d = 256


#: Stage profiles (:func:`benchmarks.steps.profile`): per kind of stage, the variant the
#: library compiles (nn.Conv with its XLA options; ``max_pool_2x2``, "reshape") and the one
#: it used before (XLA's default YNNPACK convolutions; ``nn.max_pool``).
STAGE_VARIANTS = {"conv": ("nn.Conv", "nn.Conv xla-default"), "pool": ("reshape", "nn.max_pool")}


def stage_variants(stage: str) -> tuple[str, str]:
  """``(library, before)`` variant names of a profiled stage (``conv1``, ``pool2``, ...)."""
  return STAGE_VARIANTS["conv" if stage.startswith("conv") else "pool"]


def _median(row: dict[str, Any], impl: str) -> float | None:
  r = row.get("impls", {}).get(impl)
  if r and r.get("status") == "ok" and "median_s" in r:
    return r["median_s"]
  return None


def loss_ratios(row: dict[str, Any]) -> dict[str, Any]:
  """Speed-ups of JAX: best eager / jax and torch.compile / jax."""
  jax_t = _median(row, "jax")
  eager = {k: _median(row, k) for k in EAGER}
  eager = {k: v for k, v in eager.items() if v is not None}
  out: dict[str, Any] = {}
  if jax_t is None:
    return out
  if eager:
    best = min(eager, key=eager.get)
    out["best_eager"] = best
    out["speedup_vs_best_eager"] = eager[best] / jax_t
  comp = _median(row, "torch_compile")
  if comp is not None:
    out["speedup_vs_compile"] = comp / jax_t
  return out


def matmul_flops(loss: str, n: int, d: int, *, classes: int = 10, hidden: int = 1024) -> float:
  """Floating-point work of the matrix products a loss + feature gradient cannot avoid.

  A lower bound on time is this over the machine's GEMM rate (the ``limit`` section
  measures it); a loss that runs at that rate in one framework cannot be much faster in
  another. ``n`` per domain, ``d`` features:

  * mk_mmd: the ``[2n, 2n]`` Gram of ``[2n, d]`` and its ONE backward product
    ``(G + G^T) X`` (the Gram matrix is symmetric), ``2 * 2 (2n)^2 d``; jmmd adds the
    forward Gram of the ``classes``-wide softmax layer (no gradient is taken for it).
  * coral: Gram path (``4n <= d``) three ``n x n x d`` products forward, two per
    product backward (``18 n^2 d``); covariance path ``[d, d]`` forward + backward
    (``8 n d^2``).
  * dann / cdan: the discriminator (``d`` or ``classes * d`` -> hidden -> hidden -> 1)
    on ``2n`` rows, forward + gradient w.r.t. its inputs AND its weights
    (``3 x 2 (2n) (in h + h^2)``).
  """
  if loss == "mk_mmd":
    return 16.0 * n * n * d
  if loss == "jmmd":
    return 16.0 * n * n * d + 8.0 * n * n * classes
  if loss == "coral":
    return 18.0 * n * n * d if 4 * n <= d else 8.0 * n * d * d
  if loss in ("dann", "cdan"):
    width = d if loss == "dann" else classes * d
    return 12.0 * n * (width * hidden + hidden * hidden)
  raise ValueError(f"loss: unknown {loss!r}")


def explain_loss_fails(results: dict[str, Any]) -> list[str]:
  """One line per loss configuration below a speed target, with its reason (see
  :func:`loss_fail_reasons`)."""
  return [line for _, line in loss_fail_reasons(results)]


#: The kinds of reason :func:`loss_fail_reasons` gives, and how the README counts them.
FAIL_REASONS = {
  "gemm_bound": "GEMM-bound (1.5x of PyTorch's product rate exceeds the fastest rate measured)",
  "shape_gemm_bound": "at their shape's GEMM bound (MK-MMD / JMMD)",
  "below_roofline": "below the roofline",
}


def loss_fail_reasons(results: dict[str, Any]) -> list[tuple[str, str]]:
  """Why each loss configuration below a speed target is there, from this run's numbers:
  ``(kind, line)`` pairs, ``kind`` a key of :data:`FAIL_REASONS`.

  The bound is the machine's matrix-product rate: the fastest rate measured in this run
  (``limit``'s GEMMs at the loss shapes, and every implementation's unavoidable products
  over its time, any configuration) is taken as this core's peak, a lower bound on it. A
  configuration whose best eager PyTorch already runs its unavoidable products
  (:func:`matmul_flops`) so fast that 1.5x of it exceeds that peak cannot meet the
  target in any framework ("GEMM-bound"); the others are said to be below the roofline,
  with the share of the peak JAX reaches (where the rest goes is what
  :mod:`benchmarks.op_profile` measures, op by op).
  """
  rates = [
    r[k]
    for r in results.get("limit", [])
    for k in ("matmul_gflops", "torch_matmul_gflops")
    if r.get(k)
  ]
  for row in results.get("losses", []):  # what any implementation reached on its products
    f = matmul_flops(row["loss"], row["n"], row["d"])
    rates += [f / t / 1e9 for im in row.get("impls", {}) if (t := _median(row, im))]
  if not rates:
    return []
  peak = max(rates)
  limits = {(r["n"], r["d"]): r for r in results.get("limit", []) if r.get("products", 3) == 2}
  out = []
  for row in results.get("losses", []):
    r = loss_ratios(row)
    jax_t = _median(row, "jax")
    if jax_t is None:
      continue
    flops = matmul_flops(row["loss"], row["n"], row["d"])
    tag = f"{row['loss']} n={row['n']} d={row['d']}"
    jax_rate = flops / jax_t / 1e9
    for key, target, name in (
      ("speedup_vs_best_eager", SPEEDUP_TARGET, r.get("best_eager")),
      ("speedup_vs_compile", 1.0, "torch_compile"),
    ):
      if key not in r or r[key] >= target:
        continue
      other = flops / _median(row, name) / 1e9
      need = target * other
      lim = limits.get((row["n"], row["d"])) if row["loss"] in ("mk_mmd", "jmmd") else None
      if lim and lim["ratio"] <= LIMIT_TARGET:
        kind = "shape_gemm_bound"
        why = (
          f"at this shape's GEMM bound: the MK-MMD kernel sum takes {lim['ratio']:.2f}x the "
          f"time of its two products as XLA runs them ({lim['matmul_gflops']:.0f} GFLOP/s; "
          f"PyTorch's GEMM {lim.get('torch_matmul_gflops', float('nan')):.0f} GFLOP/s at this "
          "shape), "
          f"so {target}x over {name} needs XLA's GEMM {target}x faster than PyTorch's"
        )
      elif need > peak:
        kind = "gemm_bound"
        why = (
          f"GEMM-bound: {name} runs the products at {other:.0f} GFLOP/s, {target}x of it "
          f"would need {need:.0f} > {peak:.0f} GFLOP/s, the fastest rate measured here "
          f"(JAX: {jax_rate:.0f}, {jax_rate / peak:.0%} of it)"
        )
      else:
        kind = "below_roofline"
        why = (
          f"below the roofline: JAX {jax_rate:.0f} GFLOP/s ({jax_rate / peak:.0%} of "
          f"the fastest rate measured here), {name} {other:.0f}: the time is lost in how "
          "the work is executed, not in its amount (`python -m benchmarks.op_profile` "
          "shows where, op by op)"
        )
      out.append((kind, f"- {tag}, {r[key]:.2f}x vs {name} (target {target}x): {why}"))
  return out


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, str]]:
  """The issue's targets, each PASS / FAIL / NOT RUN with the evidence."""
  out = []
  rows = results.get("losses", [])
  if rows:
    fails, n_checked = [], 0
    fails_c, n_c = [], 0
    for row in rows:
      r = loss_ratios(row)
      tag = f"{row['loss']} n={row['n']} d={row['d']}"
      if "speedup_vs_best_eager" in r:
        n_checked += 1
        if r["speedup_vs_best_eager"] < SPEEDUP_TARGET:
          fails.append(f"{tag}: {r['speedup_vs_best_eager']:.2f}x")
      if "speedup_vs_compile" in r:
        n_c += 1
        if r["speedup_vs_compile"] < 1.0:
          fails_c.append(f"{tag}: {r['speedup_vs_compile']:.2f}x")
    out.append(
      {
        "target": f"losses: JAX >= {SPEEDUP_TARGET}x faster than the best PyTorch eager",
        "status": ("PASS" if not fails else "FAIL") if n_checked else "NOT RUN",
        "detail": f"{n_checked - len(fails)}/{n_checked} configurations meet it"
        + (f"; below: {', '.join(fails)}" if fails else ""),
      }
    )
    out.append(
      {
        "target": "losses: JAX no slower than torch.compile",
        "status": ("PASS" if not fails_c else "FAIL") if n_c else "NOT RUN",
        "detail": f"{n_c - len(fails_c)}/{n_c} configurations meet it"
        + (f"; below: {', '.join(fails_c)}" if fails_c else ""),
      }
    )
  # Rows of runs before issue 15 timed a three-product "limit" (no "products" key).
  all_lim = [r for r in results.get("limit", []) if r.get("products", 3) == 2]
  lim = [r for r in all_lim if r["d"] == 2048]
  if results.get("limit") is not None:
    bad = [r for r in lim if r["ratio"] > LIMIT_TARGET]
    other = [r for r in all_lim if r["d"] != 2048]
    out.append(
      {
        "target": f"mk_mmd time / two-product matmul bound <= {LIMIT_TARGET} at d = 2048",
        "status": ("PASS" if not bad else "FAIL") if lim else "NOT RUN",
        "detail": (
          ", ".join(f"n={r['n']}: {r['ratio']:.2f}" for r in lim)
          or "no two-product d = 2048 configuration in this run"
        )
        + (
          " (d = 256, not a target: "
          + ", ".join(f"n={r['n']}: {r['ratio']:.2f}" for r in other)
          + ")"
          if other
          else ""
        ),
      }
    )
  mem = results.get("memory")
  if mem is not None:
    tiled = [r for r in mem if r["impl"] == "jax_tiled" and r["n"] == 32768 and r["d"] == 256]
    if tiled:
      r = tiled[0]
      ok = r["status"] == "ok" and r["peak_extra"] / 2**30 < MEMORY_TARGET_GIB
      detail = (
        f"peak extra {r['peak_extra'] / 2**30:.2f} GiB"
        if r["status"] == "ok"
        else f"{r['status']}: {r.get('error', '')}"
      )
      out.append(
        {
          "target": f"memory: tiled mk_mmd + grad at n=32768, d=256 < {MEMORY_TARGET_GIB} GiB",
          "status": "PASS" if ok else "FAIL",
          "detail": detail,
        }
      )
    else:
      out.append(
        {
          "target": f"memory: tiled mk_mmd + grad at n=32768, d=256 < {MEMORY_TARGET_GIB} GiB",
          "status": "NOT RUN",
          "detail": "n = 32768 not in this run (--quick)",
        }
      )
    ok_tiled = {r["n"] for r in mem if r["impl"] == "jax_tiled" and r["status"] == "ok"}
    oom_dalib = {r["n"] for r in mem if r["impl"] == "dalib" and r["status"] == "oom"}
    both = sorted(ok_tiled & oom_dalib)
    out.append(
      {
        "target": "memory: dalib runs out of memory where tiled mk_mmd still runs",
        "status": "PASS" if both else "FAIL",
        "detail": f"n = {both}" if both else "no n where dalib fails and tiled runs",
      }
    )
  steps = results.get("steps")
  if steps:
    for row in steps.get("rows", []):
      if row.get("ratio_torch_eager_over_best_jax") is not None:
        r = row["ratio_torch_eager_over_best_jax"]
        out.append(
          {
            "target": f"training step {row['name']}: JAX at parity or better with PyTorch eager",
            "status": "PASS" if r >= 1.0 else "FAIL",
            "detail": f"best PyTorch eager / best JAX variant ({row.get('best_jax')}) = {r:.2f} "
            "(before library changes: "
            f"{row.get('ratio_torch_eager_over_baseline_jax', float('nan')):.2f})",
          }
        )
  g = results.get("gpu_steps") or {"status": "not run here: no GPU"}
  if g.get("status") == "ok":
    out.append(
      {
        "target": "GPU: ResNet-50 DANN step >= 1.3x faster than PyTorch eager",
        "status": g["target"],
        "detail": f"jax {g['speedup_jax_vs_torch_eager']:.2f}x, jax bf16 vs torch bf16 "
        f"{g['speedup_jax_bf16_vs_torch_eager_bf16']:.2f}x ({g['device']})",
      }
    )
  else:
    out.append(
      {
        "target": "GPU: ResNet-50 DANN step >= 1.3x faster than PyTorch eager",
        "status": "NOT RUN",
        "detail": g.get("status", ""),
      }
    )
  sc = results.get("scaling") or {"status": "not run here: single device (CPU)"}
  if sc.get("status") == "ok":
    eff = ", ".join(f"{r['devices']} dev: {r['weak_scaling_efficiency']:.2f}" for r in sc["rows"])
    out.append(
      {
        "target": "multi-device pmap scaling (weak-scaling efficiency)",
        "status": "RUN",
        "detail": eff,
      }
    )
  else:
    out.append(
      {
        "target": "multi-device pmap scaling",
        "status": "NOT RUN",
        "detail": sc.get("status", "") + " (correctness: tests/train)",
      }
    )
  return out


def _fmt_t(r: dict[str, Any] | None) -> str:
  if not r:
    return "—"
  if r.get("status") == "slow":  # one call, above the run's --slow-call-s: not timed
    return f"> {r['median_s']:.3g} s (1 call)"
  if r.get("status") != "ok" or "median_s" not in r:
    return r.get("status", "?").upper()
  m = r["median_s"]
  unit, scale = ("ms", 1e3) if m < 1 else ("s", 1.0)
  if r.get("run_medians_s"):  # repeated runs: the range of the runs' medians
    lo, hi = min(r["run_medians_s"]), max(r["run_medians_s"])
  else:
    lo, hi = r["q1_s"], r["q3_s"]
  return f"{m * scale:.3g} {unit} [{lo * scale:.3g}–{hi * scale:.3g}]"


def to_markdown(results: dict[str, Any]) -> str:
  m = results["machine"]
  mhz = f" at {m['cpu_mhz']:.0f} MHz" if m.get("cpu_mhz") else ""
  runs = results.get("repeated_runs")
  lines = [
    f"# dtl_jax benchmarks — {results['machine_slug']}",
    "",
    f"- machine: {m['cpu_model']}{mhz}, {m['cpu_count_affinity']} cores used of "
    f"{m['cpu_count_total']}, {m.get('mem_total_gib', '?')} GiB; GPU: {m.get('gpu') or 'none'}",
    f"- threads: {m['threads']}; torch threads {m.get('torch_num_threads')}",
    f"- versions: python {m['python']}, jax {m['jax']} / jaxlib {m.get('jaxlib')} "
    f"({m['jax_backend']}), flax {m['flax']}, optax {m['optax']}, torch {m['torch']}, "
    f"dalib {m['dalib']}, numpy {m['numpy']}; code at git {results.get('git_commit', '?')}",
    *(
      [
        f"- {runs['runs']} runs in separate processes (`{runs['command']}`); every time is "
        "the median of the runs' medians, [brackets] the range of the runs' medians "
        f"(spread = (max - min) / median; largest: {runs['max_spread']:.1%})"
      ]
      if runs
      else []
    ),
    *([f"- **{results['note']}**"] if results.get("note") else []),
    f"- load average at start: {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}",
    f"- command: `{results['command']}`; started {results['started']}, "
    f"took {results.get('wall_s', 0):.0f} s",
    *[
      f"- section {name}: `{r['command']}`, started {r['started']}, {r['wall_s']:.0f} s, "
      f"git {r.get('git_commit', '?')}"
      + (f" (losses {', '.join(r['losses'])})" if r.get("losses") else "")
      for name, runs in results.get("sections", {}).items()
      for r in (runs if isinstance(runs, list) else [runs])
    ],
    "- times: median per call [inter-quartile range], forward + gradient (w.r.t. the features; "
    "DANN / CDAN: and the discriminator's parameters), float32; JAX compile and "
    "torch.compile times are separate columns.",
    "",
  ]
  if m.get("torch_config"):
    lines += [
      "<details><summary>torch.__config__.show()</summary>",
      "",
      "```",
      m["torch_config"].strip(),
      "```",
      "</details>",
      "",
    ]
  lines += ["## Targets", "", "| target | status | detail |", "|---|---|---|"]
  for t in results.get("targets", []):
    lines.append(f"| {t['target']} | **{t['status']}** | {t['detail']} |")
  why = explain_loss_fails(results)
  if why:
    lines += [
      "",
      "Why each loss configuration below a target is there (the bound is the fastest "
      "matrix-product rate measured in this run, any framework and configuration, a "
      "lower bound on this core's peak; `report.explain_loss_fails`):",
      "",
      *why,
    ]
  rows = results.get("losses", [])
  if rows:
    lines += [
      "",
      "## Losses (forward + gradient)",
      "",
      "torch_gram: plain autograd, strengthened (one addmm, O(N d) bandwidth); torch_fn: "
      "autograd.Function with a hand-written backward (kernel losses); torch_compile: "
      "torch_gram under torch.compile.",
      "",
      "| loss | n | d | jax | torch_gram | torch_fn | torch_compile | dalib | best eager / jax "
      "| compile / jax | jax compile | torch.compile compile | matmul GFLOP/s: jax / best torch |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
      if "error" in row:
        lines.append(f"| {row['loss']} | {row['n']} | {row['d']} | {row['error']} |||||||||")
        continue
      im = row["impls"]
      r = loss_ratios(row)
      sp = (
        f"{r['speedup_vs_best_eager']:.2f}x ({r['best_eager']})"
        if "speedup_vs_best_eager" in r
        else "—"
      )
      sc = f"{r['speedup_vs_compile']:.2f}x" if "speedup_vs_compile" in r else "—"
      flops = matmul_flops(row["loss"], row["n"], row["d"])
      torch_best = min(
        (t for t in (_median(row, k) for k in (*EAGER, "torch_compile")) if t is not None),
        default=None,
      )
      rate = (
        f"{flops / _median(row, 'jax') / 1e9:.0f} / "
        + (f"{flops / torch_best / 1e9:.0f}" if torch_best else "—")
        if _median(row, "jax")
        else "—"
      )
      tc = im.get("torch_compile", {}).get("compile_s")
      lines.append(
        f"| {row['loss']} | {row['n']} | {row['d']} | {_fmt_t(im.get('jax'))} | "
        f"{_fmt_t(im.get('torch_gram'))} | {_fmt_t(im.get('torch_fn'))} | "
        f"{_fmt_t(im.get('torch_compile'))} | "
        f"{_fmt_t(im.get('dalib'))} | {sp} | {sc} | {row.get('jax_compile_s', 0):.2f} s | "
        f"{f'{tc:.1f} s' if tc is not None else '—'} | {rate} |"
      )
    notes = [
      f"- {row['loss']} n={row['n']} d={row['d']} {k}: {v.get('error') or v.get('check')}"
      for row in rows
      for k, v in row.get("impls", {}).items()
      if v.get("status") in ("oom", "error", "mismatch", "not available")
    ]
    if notes:
      lines += ["", "Failures (reported, not fatal):", ""] + notes
  lim = results.get("limit")
  if lim:
    lines += [
      "",
      "## mk_mmd against the matmul limit",
      "",
      "Matmuls alone: the Gram matrix X Xᵀ and the ONE backward product (G + Gᵀ) X that "
      "a symmetric Gram matrix needs (X = [z_s; z_t], [2n, d]); rows without a "
      "'products' field come from runs before issue 15 and timed three products.",
      "",
      "| n | d | mk_mmd | matmuls | ratio (1.0 = limit) | XLA GEMM GFLOP/s "
      "| PyTorch GEMM GFLOP/s |",
      "|---|---|---|---|---|---|---|",
    ]
    for r in lim:
      lines.append(
        f"| {r['n']} | {r['d']} | {r['mk_mmd_s'] * 1e3:.3g} ms | {r['matmul_s'] * 1e3:.3g} ms | "
        f"{r['ratio']:.2f} | {r['matmul_gflops']:.1f} | {r.get('torch_matmul_gflops', 0):.1f} |"
      )
  mem = results.get("memory")
  if mem:
    lines += [
      "",
      "## Memory: mk_mmd + gradient, peak extra resident memory",
      "",
      f"Each configuration in its own process, extra address space capped at "
      f"{mem[0]['cap_gib']} GiB (RLIMIT_AS).",
      "",
      "| impl | n | d | status | peak extra | time |",
      "|---|---|---|---|---|---|",
    ]
    for r in mem:
      peak = (
        f"{r['peak_extra'] / 2**30:.3f} GiB" if r["status"] == "ok" else r.get("error", "")[:90]
      )
      t = f"{r['seconds']:.2f} s" if r["status"] == "ok" else ""
      lines.append(f"| {r['impl']} | {r['n']} | {r['d']} | {r['status']} | {peak} | {t} |")
  steps = results.get("steps")
  if steps:
    lines += [
      "",
      "## Training steps (LeNet, 28x28 digits; full run: 128 source + 128 target)",
      "",
      "| step | variant | median [IQR] | best PyTorch eager / this | compile (JAX, "
      "torch.compile) |",
      "|---|---|---|---|---|",
    ]
    for row in steps.get("rows", []):
      for v in row["variants"]:
        ratio = f"{v['torch_over_this']:.2f}" if v.get("torch_over_this") else "—"
        comp = f"{v['compile_s']:.1f} s" if v.get("compile_s") is not None else ""
        lines.append(f"| {row['name']} | {v['variant']} | {_fmt_t(v)} | {ratio} | {comp} |")
    for note in steps.get("notes", []):
      lines.append(f"\n{note}")
    prof = steps.get("profile")
    if prof:
      lines += [
        "",
        "### Where the time goes: each LeNet stage alone, forward + backward",
        "",
        "JAX library = as dtl_jax compiles it; the alternative is the library before "
        "(convolutions: XLA's default YNNPACK path; pooling: nn.max_pool).",
        "",
        "| stage | JAX library | JAX alternative | PyTorch |",
        "|---|---|---|---|",
      ]
      tot = [0.0, 0.0, 0.0]
      for stage in ("conv1", "conv2", "pool1", "pool2"):
        lib, other = stage_variants(stage)
        a, b, c = (
          prof.get(f"jax {stage} {lib}"),
          prof.get(f"jax {stage} {other}"),
          prof.get(f"torch {stage}"),
        )
        if None in (a, b, c):
          continue
        tot = [tot[0] + a, tot[1] + b, tot[2] + c]
        lines.append(
          f"| {stage} | {a * 1e3:.3g} ms ({lib}) | {b * 1e3:.3g} ms ({other}) | {c * 1e3:.3g} ms |"
        )
      lines.append(
        f"| **sum** | {tot[0] * 1e3:.3g} ms | {tot[1] * 1e3:.3g} ms (the library before) | "
        f"{tot[2] * 1e3:.3g} ms |"
      )
    if steps.get("fit"):
      f = steps["fit"]
      lines += [
        "",
        f"Whole loop with data loading: {f.get('steps_per_s', 0):.1f} steps/s "
        f"vs {f.get('step_only_per_s', 0):.1f} steps/s for the step alone ({f.get('detail', '')}).",
      ]
  g = results.get("gpu_steps") or {}
  if g.get("status") == "ok":
    lines += [
      "",
      f"## ResNet-50 DANN step, 224x224, {g['n']}+{g['n']} ({g['device']})",
      "",
      "| variant | median [IQR] |",
      "|---|---|",
    ]
    for k, v in g["timings"].items():
      lines.append(f"| {k} | {_fmt_t(v)} |")
  else:
    lines += ["", f"ResNet-50 224x224 DANN step: {g.get('status', 'not run here: no GPU')}."]
  sc = results.get("scaling") or {}
  if sc.get("status") == "ok":
    lines += [
      "",
      "## pmap scaling (LeNet DANN, 64+64 per device)",
      "",
      "| devices | step | weak-scaling efficiency |",
      "|---|---|---|",
    ]
    for r in sc["rows"]:
      lines.append(f"| {r['devices']} | {_fmt_t(r)} | {r['weak_scaling_efficiency']:.2f} |")
  else:
    lines += ["", f"Multi-device pmap scaling: {sc.get('status', 'not run here: single device')}."]
  lines.append("")
  return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  ax = axes[0]
  rows = [r for r in results.get("losses", []) if "error" not in r]
  for loss in sorted({r["loss"] for r in rows}):
    for d in sorted({r["d"] for r in rows}):
      pts = [
        (r["n"], loss_ratios(r).get("speedup_vs_best_eager"))
        for r in rows
        if r["loss"] == loss and r["d"] == d
      ]
      pts = [(n, s) for n, s in pts if s]
      if pts:
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"{loss} d={d}")
  ax.axhline(SPEEDUP_TARGET, color="k", ls="--", lw=1, label="target 1.5x")
  ax.axhline(1.0, color="gray", ls=":", lw=1)
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("batch per domain n")
  ax.set_ylabel("best PyTorch eager time / JAX time")
  ax.set_title("Losses: forward + gradient")
  ax.legend(fontsize=7)
  ax = axes[1]
  mem = results.get("memory") or []
  for impl in sorted({r["impl"] for r in mem}):
    pts = [
      (r["n"], r["peak_extra"] / 2**30) for r in mem if r["impl"] == impl and r["status"] == "ok"
    ]
    if pts:
      ax.plot(*zip(*pts, strict=True), marker="o", label=impl)
    oom = [r["n"] for r in mem if r["impl"] == impl and r["status"] == "oom"]
    if oom:
      ax.scatter([min(oom)], [mem[0]["cap_gib"]], marker="x", s=80, label=f"{impl}: OOM")
  if mem:
    ax.axhline(mem[0]["cap_gib"], color="r", ls=":", lw=1, label="cap")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("batch per domain n")
  ax.set_ylabel("peak extra memory (GiB)")
  ax.set_title(f"mk_mmd + gradient memory (d={mem[0]['d'] if mem else '?'})")
  if mem:
    ax.legend(fontsize=7)
  fig.suptitle(f"dtl_jax vs PyTorch — {results['machine_slug']}", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(results: dict[str, Any], out_dir: str) -> dict[str, str]:
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f"results.{k}") for k in ("json", "md", "png")}
  # Written to a temporary name and renamed: an interrupted write never leaves a
  # truncated results.json behind (``--update`` reads it back).
  for key, text in (
    ("json", json.dumps(results, indent=1, default=str)),
    ("md", to_markdown(results)),
  ):
    with open(paths[key] + ".tmp", "w") as f:
      f.write(text)
    os.replace(paths[key] + ".tmp", paths[key])
  plot(results, paths["png"])
  return paths
