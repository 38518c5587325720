"""Smoke test of the benchmark harness (tiny sizes; correctness only, no timing claims).

* the alternating timer measures what it is given (sleep-based callables);
* every loss's PyTorch implementations (Gram form, dalib) agree with dtl_jax before timing,
  and the agreement check does reject a wrong answer;
* the capped memory subprocess reports a peak for the tiled path and OOM for dalib;
* the writers produce JSON / markdown / PNG with the PASS/FAIL targets;
* ``python -m benchmarks.run`` runs end to end on one small section.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

np.float = float  # dalib 0.2's gradient reversal layer uses np.float

import torch  # noqa: E402

from benchmarks import harness, losses, memory, report, torch_refs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_time_alternating_measures_sleep():
  fns = {"short": lambda: time.sleep(0.002), "long": lambda: time.sleep(0.006)}
  t = harness.time_alternating(fns, repeats=3, warmup=1, min_sample_s=0.0)
  assert set(t) == {"short", "long"}
  assert t["short"].median_s >= 0.002 and t["long"].median_s >= 0.006
  assert t["long"].median_s > 1.5 * t["short"].median_s
  for x in t.values():
    assert x.min_s <= x.q1_s <= x.median_s <= x.q3_s <= x.max_s
    assert x.samples == 3


def test_torch_gram_mk_mmd_matches_numpy_float64(rng):
  """The Gram-form reference against a float64 NumPy TLlib formula written here."""
  n, d = 6, 5
  zs, zt = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 0.3
  z = np.concatenate([zs, zt])
  dist = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
  k = sum(np.exp(-dist / (2 * a * dist.mean())) for a in (0.125, 0.25, 0.5, 1.0, 2.0))
  off = ~np.eye(n, dtype=bool)
  want = (
    (k[:n, :n][off].sum() + k[n:, n:][off].sum()) / (n * (n - 1))
    - 2 * k[:n, n:].sum() / n**2
    + 2 / (n - 1)
  )
  got = torch_refs.mk_mmd(torch.from_numpy(zs), torch.from_numpy(zt)).item()
  np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("loss", losses.LOSSES)
def test_loss_implementations_agree_then_time(loss):
  row = losses.run_config(
    loss,
    8,
    16,
    impls=["jax", "torch_gram", "torch_fn", "dalib"],
    repeats=1,
    min_sample_s=0.0,
    cap_bytes=2**30,
  )
  assert "error" not in row, row.get("error")
  impls = row["impls"]
  expected = (
    {"jax", "torch_gram"}
    | ({"dalib"} if loss != "coral" else set())
    | ({"torch_fn"} if loss in ("mk_mmd", "jmmd") else set())
  )
  assert set(impls) == expected
  for name, r in impls.items():
    assert r["status"] == "ok", (name, r)
    assert r["median_s"] > 0
  assert row["jax_compile_s"] > 0
  assert "speedup_vs_best_eager" in report.loss_ratios(row)


def test_agreement_check_rejects_a_wrong_value():
  ref = (np.float32(1.0), (np.ones(3), np.ones(3)))
  assert losses._agree(ref, (1.0, (np.ones(3), np.ones(3))), check_grads=True, rtol=1e-3)[0]
  assert not losses._agree(ref, (1.01, (np.ones(3), np.ones(3))), check_grads=True, rtol=1e-3)[0]
  assert not losses._agree(ref, (1.0, (np.ones(3), 2 * np.ones(3))), check_grads=True, rtol=1e-3)[0]


def test_dalib_oom_is_predicted_not_run():
  row = losses.run_config(
    "mk_mmd", 64, 256, impls=["jax", "dalib"], repeats=1, min_sample_s=0.0, cap_bytes=2**20
  )
  assert row["impls"]["dalib"]["status"] == "oom"
  assert row["impls"]["jax"]["status"] == "ok"


def test_memory_subprocess_reports_peak_and_oom():
  ok = memory.measure("jax_tiled", 256, 32, cap_gib=1.0, timeout_s=120)
  assert ok["status"] == "ok", ok
  assert 0 < ok["peak_extra"] < 2**30
  # dalib's [2n, 2n, d] difference tensor (512 x 512 x 256 float32 = 256 MiB per kernel)
  # cannot fit under a 64 MiB cap: reported as OOM, the parent carries on.
  oom = memory.measure("dalib", 256, 256, cap_gib=1 / 16, timeout_s=120)
  assert oom["status"] == "oom", oom


def test_report_writes_files_and_targets(tmp_path):
  row = losses.run_config(
    "coral", 8, 16, impls=["jax", "torch_gram"], repeats=1, min_sample_s=0.0, cap_bytes=2**30
  )
  results = {
    "machine_slug": "test",
    "machine": harness.machine_info(harness_settings()),
    "command": "test",
    "started": "now",
    "wall_s": 1.0,
    "losses": [row],
    "memory": [
      {
        "impl": "jax_tiled",
        "n": 1024,
        "d": 256,
        "cap_gib": 1.0,
        "status": "ok",
        "peak_extra": 2**20,
        "seconds": 0.1,
      },
      {"impl": "dalib", "n": 1024, "d": 256, "cap_gib": 1.0, "status": "oom", "error": "x"},
    ],
  }
  results["targets"] = report.evaluate_targets(results)
  status = {t["target"]: t["status"] for t in results["targets"]}
  assert status["memory: dalib runs out of memory where tiled mk_mmd still runs"] == "PASS"
  paths = report.write(results, str(tmp_path))
  loaded = json.load(open(paths["json"]))
  assert loaded["losses"][0]["loss"] == "coral"
  md = open(paths["md"]).read()
  assert "| coral | 8 | 16 |" in md and "## Targets" in md
  assert os.path.getsize(paths["png"]) > 1000


def test_loss_fails_are_explained_by_the_measured_matmul_rate():
  """Each configuration below a target gets a reason computed from the run's numbers:
  GEMM-bound when 1.5x of PyTorch's rate exceeds the fastest rate measured, the shape's
  GEMM bound for the kernel losses, else below the roofline."""

  def row(loss, n, d, jax_s, torch_s):
    ok = lambda t: {"status": "ok", "median_s": t}
    return {"loss": loss, "n": n, "d": d, "impls": {"jax": ok(jax_s), "torch_gram": ok(torch_s)}}

  flops = report.matmul_flops("dann", 128, 256)
  results = {
    # PyTorch at 100 GFLOP/s: 1.5x = 150 > the fastest rate, 120 (JAX's own): GEMM-bound
    "losses": [
      row("dann", 128, 256, flops / 120e9, flops / 100e9),
      # coral at 10 GFLOP/s in JAX (8% of 120), PyTorch 12: below the roofline
      row(
        "coral",
        64,
        256,
        report.matmul_flops("coral", 64, 256) / 10e9,
        report.matmul_flops("coral", 64, 256) / 12e9,
      ),
      # mk_mmd at its limit ratio 1.1: the shape's GEMM bound
      row("mk_mmd", 512, 2048, 1.0, 1.2),
      row("mk_mmd", 32, 256, 1.0, 2.0),  # meets the target: not listed
    ],
    "limit": [
      {
        "n": 512,
        "d": 2048,
        "ratio": 1.1,
        "products": 2,
        "matmul_gflops": 90.0,
        "torch_matmul_gflops": 85.0,
      },
    ],
  }
  why = report.explain_loss_fails(results)
  assert len(why) == 3
  assert why[0].startswith("- dann n=128 d=256, 1.20x vs torch_gram") and "GEMM-bound" in why[0]
  assert "would need 150 > 120 GFLOP/s" in why[0]
  assert "coral n=64 d=256, 0.83x" in why[1] and "below the roofline: JAX 10 GFLOP/s (8%" in why[1]
  assert "mk_mmd n=512 d=2048, 1.20x" in why[2] and "1.10x the time of its two products" in why[2]
  kinds = [kind for kind, _ in report.loss_fail_reasons(results)]
  assert kinds == ["gemm_bound", "below_roofline", "shape_gemm_bound"]
  assert set(kinds) <= set(report.FAIL_REASONS)
  assert report.explain_loss_fails({"losses": []}) == []


def harness_settings():
  return {"threads": len(os.sched_getaffinity(0)), "XLA_FLAGS": "", "OMP_NUM_THREADS": "?"}


def test_cli_runs_one_section(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.run",
      "--quick",
      "--only",
      "limit",
      "--threads",
      "1",
      "--out",
      str(tmp_path),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  res = json.load(open(tmp_path / "results.json"))
  assert res["machine"]["threads"]["threads"] == 1
  assert res["limit"][0]["ratio"] > 0
  assert res["limit"][0]["products"] == 2
  assert any(t["target"].startswith("mk_mmd time / two-product") for t in res["targets"])
  assert res["sections"]["limit"][0]["threads"] == 1
  # --update adds a section (here one loss) and keeps what was measured before.
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.run",
      "--quick",
      "--only",
      "losses",
      "--losses",
      "coral",
      "--no-compile",
      "--threads",
      "1",
      "--update",
      "--out",
      str(tmp_path),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  res2 = json.load(open(tmp_path / "results.json"))
  assert res2["limit"] == res["limit"]
  assert {r["loss"] for r in res2["losses"]} == {"coral"}
  assert set(res2["sections"]) == {"limit", "losses"}
  assert res2["sections"]["losses"][0]["losses"] == ["coral"]
  assert "section losses:" in (tmp_path / "results.md").read_text()
  assert not list(tmp_path.glob("*.tmp"))


def test_step_variants_have_the_library_lenet_parameters(rng):
  """Every timed JAX variant is the library's LeNet (or its nn.max_pool predecessor) with
  the same parameter tree, so the variants compute the same function."""
  import jax
  import jax.numpy as jnp

  from benchmarks import steps

  x = jnp.asarray(rng.standard_normal((2, 28, 28, 1)), jnp.float32)
  base = steps._backbone("jax")
  variables = base.init(jax.random.key(0), x, train=False)
  want = np.asarray(base.apply(variables, x, train=False))
  for name in steps.VARIANTS:
    model = steps._backbone(name)
    assert jax.tree.structure(model.init(jax.random.key(0), x, train=False)) == jax.tree.structure(
      variables
    ), name
    tol = 5e-2 if name == "jax_bf16" else 1e-5
    np.testing.assert_allclose(
      np.asarray(model.apply(variables, x, train=False), np.float32),
      want,
      rtol=tol,
      atol=tol,
      err_msg=name,
    )


def test_coral_agrees_on_both_algorithm_paths():
  """n << d takes the Gram path in both frameworks, n ~ d the covariance path."""
  for n, d in ((4, 32), (8, 16)):
    row = losses.run_config(
      "coral", n, d, impls=["jax", "torch_gram"], repeats=1, min_sample_s=0.0, cap_bytes=2**30
    )
    assert "error" not in row, row.get("error")
    assert {r["status"] for r in row["impls"].values()} == {"ok"}


@pytest.mark.parametrize(
  "loss,n,d",
  [
    ("mk_mmd", 64, 512),
    ("jmmd", 64, 512),
    ("coral", 16, 512),
    ("coral", 256, 64),
    ("dann", 64, 256),
    ("cdan", 32, 64),
  ],
)
def test_matmul_work_model_is_a_tight_lower_bound_of_xla_flops(loss, n, d):
  """report.matmul_flops (the evidence for 'matmul-bound') against XLA's own count."""
  import jax

  p = losses.make_problem(loss, n, d)
  cost = jax.jit(p.jax_fn).lower(*p.jax_args).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
  model = report.matmul_flops(loss, n, d)
  assert 0.6 * xla <= model <= xla


def test_op_profile_names_the_ops_of_a_compiled_function():
  """The traced op times are attributed to the compiled HLO's instructions: a transposed
  product (contracting over dimension 0, a weight gradient's shape) is found and named."""
  import jax
  import jax.numpy as jnp

  from benchmarks import op_profile

  x = jnp.ones((256, 128), jnp.float32)
  compiled = jax.jit(lambda a: jnp.tanh(a.T @ a)).lower(x).compile()
  described = op_profile.hlo_ops(compiled.as_text())
  assert any("contracting_dims={0}" in d for d in described.values()), described
  prof = op_profile.profile_compiled(compiled, (x,), calls=2)
  assert prof["ms_per_call"] > 0 and prof["ops_ms"] > 0
  assert sum(o["share"] for o in prof["top"]) <= 1.0 + 1e-9
  assert all(o["hlo"] != "?" for o in prof["top"]), prof["top"]
  assert abs(sum(prof["by_kind"].values()) - 1.0) < 1e-9
  md = op_profile.to_markdown(
    {
      "machine_slug": "test",
      "command": "c",
      "git_commit": "g",
      "started": "s",
      "jax": jax.__version__,
      "threads": 1,
      "targets": [{"name": "tanh(a.T a)", "profile": prof}],
    }
  )
  assert "## tanh(a.T a)" in md and "| op | ms per call | share | HLO |" in md


def test_e2e_update_keeps_the_methods_not_rerun():
  """``benchmarks.e2e --update``: the re-measured method replaces its row, the others
  are kept from the earlier file in the protocol's method order, with their provenance."""
  from benchmarks import e2e

  previous = {
    "command": "old",
    "git_commit": "abc",
    "rows": [{"method": m, "v": "old"} for m in ("source_only", "dann", "cdan")],
    "profile": {"p": 1},
  }
  results = {"rows": [{"method": "cdan", "v": "new"}]}
  e2e.merge_previous(results, previous)
  assert [(r["method"], r["v"]) for r in results["rows"]] == [
    ("source_only", "old"),
    ("dann", "old"),
    ("cdan", "new"),
  ]
  assert results["updated_from"] == {
    "command": "old",
    "git_commit": "abc",
    "methods_kept": ["source_only", "dann"],
  }
  assert results["profile"] == {"p": 1}
  fresh = {"rows": [{"method": "dann", "v": "new"}], "profile": {"p": 2}}
  e2e.merge_previous(fresh, previous, keep_profile=False)
  assert fresh["profile"] == {"p": 2}
  md = e2e.to_markdown(
    {
      **{k: "x" for k in ("machine_slug", "git_commit", "command", "started", "protocol")},
      "machine": {
        "cpu_model": "cpu",
        "jax": "j",
        "flax": "f",
        "torch": "t",
        "load_average_at_start": [0.0, 0.0, 0.0],
      },
      "threads": 1,
      "targets": [],
      "rows": [],
      "updated_from": results["updated_from"],
    }
  )
  assert "rows kept from an earlier run (`old`, git abc): source_only, dann" in md


def test_e2e_reports_the_ml_dtypes_share_of_the_imports_where_timed():
  """The dtl_jax runs time ``import ml_dtypes`` inside their imports phase: the summary
  keeps its median over repeats and the report names it per method; rows of older files
  (without it) report nothing."""
  from benchmarks import e2e

  def run(ml, imports):
    timings = {f"{p}_s": 1.0 for p in e2e.PHASES}
    timings.update({"imports_s": imports, "total_s": 9.0, e2e.ML_DTYPES_KEY: ml})
    return {"process_s": 10.0, "timings": timings, "last": {}, "ml_dtypes": "0.7.0"}

  s = e2e._summary([run(0.9, 2.0), run(1.1, 2.4), run(1.0, 2.2)], steps=11)
  assert s[e2e.ML_DTYPES_KEY]["median"] == 1.0 and s["ml_dtypes"] == "0.7.0"
  assert s["imports_s"]["median"] == 2.2
  old = e2e._summary([{**run(0.9, 2.0), "timings": {"steps_s": 1.0}}], steps=11)
  assert e2e.ML_DTYPES_KEY not in old
  lines = e2e._ml_dtypes_markdown([{"method": "dann", "jax": s}, {"method": "dan", "jax": old}])
  assert len(lines) == 2 and "(0.7.0;" in lines[0] and "dann 1.00 s of 2.20 s." in lines[0]
  assert "dan " not in lines[0]
  assert e2e._ml_dtypes_markdown([{"method": "dan", "jax": old}]) == []
