"""Report files, tables, plots, output directories and provenance."""

import json

import ml_collections
import pytest

from dtl_jax import provenance, report
from dtl_jax.train import WorkdirError


def test_report_files(tmp_path):
  rows = [
    {"method": "source_only", "acc": (50.0, 1.5), "n": 3},
    {"method": "dann", "acc": (60.25, 0.0), "n": 3},
  ]
  meta = provenance.run_metadata(config=ml_collections.ConfigDict({"a": 1}), seeds=[0, 1, 2])
  paths = report.write_report(
    tmp_path,
    "t",
    title="T",
    rows=rows,
    columns=[("method", "method"), ("acc", "acc (%)")],
    metadata=meta,
    notes=["protocol"],
  )
  md = paths["md"].read_text()
  assert "| dann | 60.25 ± 0.00 |" in md and "| source_only | 50.00 ± 1.50 |" in md
  assert "seeds" in md and "jax" in md and "cpu_count" in md
  data = json.loads(paths["json"].read_text())
  assert data["rows"][1]["acc"] == [60.25, 0.0]
  assert data["metadata"]["seeds"] == [0, 1, 2]
  assert data["metadata"]["config"] == {"a": 1}
  png = report.bar_plot(
    tmp_path / "p.png",
    ["a", "b"],
    {"x": [1.0, 2.0], "oracle": [3.0, 4.0]},
    errors={"x": [0.1, 0.2]},
    footer=report.footer_text(meta),
  )
  assert png.read_bytes()[:4] == b"\x89PNG"


def test_mean_std_matches_numpy_formula():
  m, s = report.mean_std([1.0, 2.0, 4.0])
  assert m == pytest.approx(7 / 3)
  assert s == pytest.approx(
    ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) ** 0.5 / 2**0.5
  )


def test_aggregate_and_negative_transfer_flags():
  runs = []
  for seed, (a, b, c) in enumerate([(50.0, 60.0, 40.0), (52.0, 62.0, 44.0), (54.0, 58.0, 42.0)]):
    runs += [
      {"pair": "p", "method": "source_only", "seed": seed, "selected": a},
      {"pair": "p", "method": "good", "seed": seed, "selected": b},
      {"pair": "p", "method": "bad", "seed": seed, "selected": c},
    ]
  rows = report.aggregate_runs(runs, group_keys=("pair", "method"), value_keys=("selected",))
  by = {r["method"]: r for r in rows}
  assert by["good"]["selected"][0] == pytest.approx(60.0)
  assert by["good"]["selected"][1] == pytest.approx(2.0)
  assert by["bad"]["n_seeds"] == 3 and by["bad"]["seeds"] == [0, 1, 2]
  report.flag_negative_transfer(rows)
  assert by["good"]["negative_transfer"] is False
  assert by["good"]["delta"] == pytest.approx(8.0)
  assert by["bad"]["negative_transfer"] is True
  assert by["source_only"]["negative_transfer"] is None


def test_decision_boundary_plot(tmp_path):
  import numpy as np

  rng = np.random.default_rng(0)
  xs = rng.normal(size=(20, 2)).astype(np.float32)
  ys = (xs[:, 0] > 0).astype(np.int32)
  panel = {
    "title": "linear",
    "predict": lambda g: (g[:, 0] > 0).astype(float),
    "source_x": xs,
    "source_y": ys,
    "target_x": xs + 1,
  }
  p = report.decision_boundary_plot(tmp_path / "b.png", [panel, panel], grid_size=20)
  assert p.read_bytes()[:4] == b"\x89PNG"


def test_output_dir_never_deletes_foreign_files(tmp_path):
  out = report.prepare_output_dir(tmp_path / "out", what="results")
  (out / "a.md").write_text("ours")
  report.finish_output_dir(out, what="results")
  with pytest.raises(WorkdirError, match="--overwrite"):
    report.prepare_output_dir(out)
  (out / "later.txt").write_text("written after the run, by the user")
  report.prepare_output_dir(out, overwrite=True)
  assert not (out / "a.md").exists() and (out / "later.txt").exists()
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "thesis.tex").write_text("x")
  with pytest.raises(WorkdirError, match="not written by dtl-jax"):
    report.prepare_output_dir(foreign, overwrite=True)
  assert (foreign / "thesis.tex").exists()


def test_provenance_names_commit_versions_and_machine():
  meta = provenance.run_metadata(config={"a": (1, 2)}, seeds=[3], command="x")
  assert meta["command"] == "x" and meta["seeds"] == [3] and meta["config"] == {"a": [1, 2]}
  assert meta["versions"]["jax"] and meta["machine"]["cpu_count"] >= 1
  assert meta["git_commit"] == provenance.git_commit()
