"""The README's result tables are generated from the committed results, and match them."""

import json

import pytest

from experiments import readme_tables as rt


def test_readme_sections_match_committed_results():
  readme = (rt.ROOT / "README.md").read_text()
  names = {m.group("name") for m in rt._MARKER.finditer(readme)}
  # Every result the README quotes is a generated section.
  assert {
    "demo",
    "two_moons",
    "digits_benchmark",
    "transferability",
    "benchmarks",
    "source_free",
    "real_digits",
    "end_to_end",
    "speed_changes",
    "input_pipeline",
  } <= names
  assert rt.render(readme) == readme, "run: python -m experiments.readme_tables"


def test_render_replaces_only_marked_sections_and_rejects_unknown_names():
  text = (
    "intro\n<!-- generated:a -->\nold\n<!-- /generated:a -->\nmiddle\n"
    "<!-- generated:b -->\n<!-- /generated:b -->\nend\n"
  )
  out = rt.render(text, {"a": lambda: "new A", "b": lambda: "| x |\n"})
  assert out == (
    "intro\n<!-- generated:a -->\nnew A\n<!-- /generated:a -->\nmiddle\n"
    "<!-- generated:b -->\n| x |\n<!-- /generated:b -->\nend\n"
  )
  assert rt.render(out, {"a": lambda: "new A", "b": lambda: "| x |\n"}) == out  # idempotent
  with pytest.raises(ValueError, match="unknown section 'c'"):
    rt.render("<!-- generated:c -->\n<!-- /generated:c -->", {"a": lambda: ""})


def _write(root, sub, name, payload):
  (root / sub).mkdir(parents=True)
  (root / sub / f"{name}.json").write_text(json.dumps(payload))


def test_digits_table_pivots_rows_and_flags_negative_transfer(tmp_path):
  meta = {
    "seeds": [0, 1],
    "git_commit": "abc",
    "config": {"train": {"num_steps": 7}, "data": {"batch_size": 4, "image_size": 16}},
  }
  rows = [
    {"pair": "a→b", "method": "source_only", "selected": [50.0, 1.0], "negative_transfer": None},
    {"pair": "a→b", "method": "dann", "selected": [40.25, 2.5], "negative_transfer": True},
    {"pair": "b→a", "method": "source_only", "selected": [60.0, 0.0], "negative_transfer": None},
    {"pair": "b→a", "method": "dann", "selected": [70.0, 3.04], "negative_transfer": False},
  ]
  _write(tmp_path, "digits_benchmark", "digits_benchmark", {"rows": rows, "metadata": meta})
  table = rt.digits_benchmark(tmp_path).splitlines()
  assert table[0] == "| method | a→b | b→a |"
  assert table[2] == "| source_only | 50.0 ± 1.0 | 60.0 ± 0.0 |"
  assert table[3] == "| dann | 40.2 ± 2.5 ↓ | 70.0 ± 3.0 |"
  assert (
    "seeds [0, 1]" in table[-1]
    and "7 steps of 4 + 4 images, 16x16" in table[-1]
    and "git abc" in table[-1]
  )
  assert "Runs by code commit" not in table[-1]
  # a continued study names the commit of each group of runs
  note = "Runs by code commit: abc: 2 runs (source_only); def: 2 runs (dann)."
  _write(
    tmp_path / "x",
    "digits_benchmark",
    "digits_benchmark",
    {"rows": rows, "metadata": meta, "notes": ["other", note]},
  )
  assert rt.digits_benchmark(tmp_path / "x").splitlines()[-1].endswith(" " + note)


def test_missing_results_name_the_study_to_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="run the study"):
    rt.transferability(tmp_path)
  with pytest.raises(FileNotFoundError, match="benchmarks.run"):
    rt.benchmarks(tmp_path)
  with pytest.raises(FileNotFoundError, match="benchmarks.changes"):
    rt.speed_changes(tmp_path)


def test_committed_demo_equals_seed_zero_of_the_committed_digits_benchmark():
  """The demo and the benchmark are separate processes of the same config (seed 0,
  digits→digits_m); their committed accuracies must agree run for run."""
  demo = json.loads((rt.RESULTS / "demo" / "demo.json").read_text())
  runs = [
    json.loads(line)
    for line in (rt.RESULTS / "digits_benchmark" / "runs.jsonl").read_text().splitlines()
  ]
  bench = {r["method"]: r for r in runs if r["seed"] == 0 and r["pair"] == "digits→digits_m"}
  assert {r["method"] for r in demo["rows"]} <= set(bench)
  for row in demo["rows"]:
    b = bench[row["method"]]
    for key in ("selected", "selected_step", "last", "oracle", "source_acc"):
      assert row[key] == pytest.approx(b[key], abs=1e-9), (row["method"], key)
