"""benchmarks/spread.py: repeats of the benchmark in separate processes, compared."""

import math

import pytest

from benchmarks import spread


def _results(step_s, ratio, loss_s, status, *, extra=False):
  impls = {"jax": {"status": "ok", "median_s": loss_s}, "dalib": {"status": "oom"}}
  if extra:
    impls["torch_fn"] = {"status": "ok", "median_s": 1.0}
  return {
    "losses": [{"loss": "mk_mmd", "n": 32, "d": 256, "impls": impls}],
    "limit": [{"n": 128, "d": 2048, "ratio": 1.1}],
    "steps": {
      "rows": [
        {
          "name": "LeNet DANN 128+128",
          "variants": [
            {"variant": "jax", "status": "ok", "median_s": step_s, "torch_over_this": ratio},
            {"variant": "torch_eager", "status": "error"},
          ],
        }
      ]
    },
    "targets": [
      {"target": "step parity", "status": status},
      {"target": "GPU", "status": "NOT RUN"},
    ],
  }


def test_measurements_name_every_ok_timing_and_ratio():
  m = spread.measurements(_results(0.2, 0.9, 0.01, "FAIL"))
  assert m == {
    "mk_mmd n=32 d=256 jax, s": 0.01,
    "mk_mmd n=128 d=2048 / its matmul bound": 1.1,
    "LeNet DANN 128+128 jax, s": 0.2,
    "LeNet DANN 128+128 PyTorch eager / jax": 0.9,
  }


def test_measurements_include_the_loss_targets_ratios():
  impls = {
    "jax": {"status": "ok", "median_s": 0.01},
    "torch_gram": {"status": "ok", "median_s": 0.05},
    "torch_fn": {"status": "ok", "median_s": 0.03},
    "dalib": {"status": "oom"},
    "torch_compile": {"status": "ok", "median_s": 0.02},
  }
  m = spread.measurements({"losses": [{"loss": "jmmd", "n": 8, "d": 4, "impls": impls}]})
  assert m["jmmd n=8 d=4 best eager / jax"] == pytest.approx(3.0)  # torch_fn, the faster
  assert m["jmmd n=8 d=4 torch.compile / jax"] == pytest.approx(2.0)
  assert len(m) == 6  # four timings and two ratios


def test_aggregate_spread_is_max_minus_min_over_median_and_verdicts_are_compared():
  runs = [
    _results(0.2, 0.9, 0.010, "FAIL"),
    _results(0.3, 1.1, 0.012, "PASS", extra=True),
    _results(0.25, 1.0, 0.011, "FAIL"),
  ]
  out = spread.aggregate(runs)
  rows = {r["name"]: r for r in out["rows"]}
  step = rows["LeNet DANN 128+128 jax, s"]
  assert step["values"] == [0.2, 0.3, 0.25] and step["median"] == 0.25
  assert math.isclose(step["spread"], (0.3 - 0.2) / 0.25)
  assert math.isclose(rows["LeNet DANN 128+128 PyTorch eager / jax"]["spread"], 0.2)
  assert rows["mk_mmd n=128 d=2048 / its matmul bound"]["spread"] == 0.0
  # a measurement only some processes made is not compared, but named
  assert out["summary"]["not_in_all"] == [
    "mk_mmd n=32 d=256 best eager / jax",
    "mk_mmd n=32 d=256 torch_fn, s",
  ]
  assert out["targets"] == [
    {"target": "step parity", "statuses": ["FAIL", "PASS", "FAIL"], "agree": False}
  ]  # NOT RUN targets are not verdicts
  s = out["summary"]
  assert s["max_spread_of"] == "LeNet DANN 128+128 jax, s" and not s["targets_agree"]
  assert math.isclose(s["max_spread"], 0.4) and s["measurements"] == 4
  with pytest.raises(ValueError, match="at least 2 runs"):
    spread.aggregate(runs[:1])


def test_markdown_lists_each_process():
  result = spread.aggregate([_results(0.2, 0.9, 0.01, "PASS"), _results(0.2, 0.9, 0.01, "PASS")])
  result.update(
    command="python -m benchmarks.spread --threads 1",
    run_command="python -m benchmarks.run --threads 1 --only steps",
    git_commit="abc",
    threads=1,
    machine={"cpu_model": "CPU"},
    load_average=[0.1, 0.1, 0.1],
    wall_s=120.0,
  )
  md = spread.markdown(result)
  assert "median 0.0% over 4 measurements" in md and "verdict in every process: all" in md
  assert "| LeNet DANN 128+128 jax, s | 0.2 | 0.2 | 0.2 | 0.0% |" in md
  assert "| step parity | PASS | PASS |" in md


def test_again_reaggregates_the_saved_processes_and_keeps_their_provenance(tmp_path):
  import json

  runs = [_results(0.2, 0.9, 0.01, "PASS"), _results(0.4, 0.9, 0.01, "PASS")]
  for k, r in enumerate(runs, 1):
    (tmp_path / f"process_{k}").mkdir()
    (tmp_path / f"process_{k}" / "results.json").write_text(json.dumps(r))
  meta = {
    "command": "python -m benchmarks.spread --threads 1",
    "run_command": "python -m benchmarks.run --threads 1",
    "git_commit": "abc",
    "threads": 1,
    "machine": {"cpu_model": "X"},
    "load_average": [0.1, 0.1, 0.1],
    "wall_s": 60.0,
  }
  stale = {"rows": [], "targets": [], "summary": {"runs": 2}, **meta}
  (tmp_path / "spread.json").write_text(json.dumps(stale))
  out = spread.main(["--again", str(tmp_path)])
  saved = json.loads((tmp_path / "spread.json").read_text())
  assert saved == json.loads(json.dumps(out))
  assert {k: saved[k] for k in meta} == meta
  assert {r["name"]: r["spread"] for r in saved["rows"]}["LeNet DANN 128+128 jax, s"] == (
    pytest.approx(0.2 / 0.3)
  )
  assert "process 2" in (tmp_path / "spread.md").read_text()
