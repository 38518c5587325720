"""The README's result tables are generated from the committed results, and match them."""

import json

import pytest

from dtl_jax.runs import reselect
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
    "office_scale",
    "spread",
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
  cols = [["pair", "shift"], ["method", "method"], ["selected", "selected (dev)"]]
  _write(
    tmp_path,
    "digits_benchmark",
    "digits_benchmark",
    {"rows": rows, "metadata": meta, "columns": cols},
  )
  table = rt.digits_benchmark(tmp_path).splitlines()
  assert table[0] == "| method | a→b | b→a |"
  assert table[2] == "| source_only | 50.0 ± 1.0 | 60.0 ± 0.0 |"
  assert table[3] == "| dann | 40.2 ± 2.5 ↓ | 70.0 ± 3.0 |"
  assert (
    "checkpoint (`dev`)" in table[-1]
    and "seeds [0, 1]" in table[-1]
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
    {"rows": rows, "metadata": meta, "notes": ["other", note], "columns": cols},
  )
  assert rt.digits_benchmark(tmp_path / "x").splitlines()[-1].endswith(" " + note)


def test_missing_results_name_the_study_to_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="run the study"):
    rt.transferability(tmp_path)
  with pytest.raises(FileNotFoundError, match="benchmarks.run"):
    rt.benchmarks(tmp_path)
  with pytest.raises(FileNotFoundError, match="benchmarks.changes"):
    rt.speed_changes(tmp_path)


def test_real_digits_tables_pivot_methods_by_shift_and_pair_the_frameworks(tmp_path):
  meta = {"git_commit": "abc"}
  cols = [["pair", "shift"], ["method", "method"], ["selected", "selected (snd)"]]
  rows = [
    {"pair": "a→b", "method": "source_only", "selected": [50.0, 1.0], "n_seeds": 5},
    {
      "pair": "a→b",
      "method": "dann",
      "selected": [60.0, 2.0],
      "flag": "helps",
      "n_seeds": 5,
      "published": 76.66,
    },
    {"pair": "b→a", "method": "source_only", "selected": [70.0, 0.5], "n_seeds": 4},
    {
      "pair": "b→a",
      "method": "mdd",
      "selected": [40.0, 3.0],
      "n_seeds": 4,
      "flag": "NEGATIVE TRANSFER",
    },
  ]
  _write(tmp_path, "real_digits", "real_digits", {"rows": rows, "columns": cols, "metadata": meta})
  table = rt.real_digits(tmp_path).splitlines()
  assert table[0] == "| method | a→b | b→a |"
  assert table[2] == "| source_only | 50.0 ± 1.0 | 70.0 ± 0.5 |"
  assert table[3] == "| dann | 60.0 ± 2.0 ↑ | – |"
  assert table[4] == "| mdd | – | 40.0 ± 3.0 ↓ |"
  assert "criterion `snd`" in table[-1] and "4/5 seeds" in table[-1]
  assert "a→b: dann 76.66" in table[-1] and "b→a" not in table[-1].split("Published")[1]
  torch_rows = [
    {
      "pair": "a→b",
      "method": "dann",
      "jax_last": [61.0, 1.0],
      "torch_last": [59.5, 2.0],
      "n_seeds": 3,
      "jax_s": 25,
      "torch_s": 40,
    },
  ]
  _write(tmp_path, "torch_digits", "torch_digits", {"rows": torch_rows, "metadata": meta})
  both = rt.real_digits(tmp_path).splitlines()
  assert both[: len(table)] == table
  assert "| a→b | dann | 61.0 ± 1.0 | 59.5 ± 2.0 | 3 | 25 | 40 | 76.66 |" in both


def test_committed_demo_equals_seed_zero_of_the_committed_real_digits_study():
  """The demo and the study are separate processes of the same config (seed 0,
  mnist→mnist_m, one thread); their committed accuracies must agree run for run."""
  demo = json.loads((rt.RESULTS / "demo" / "demo.json").read_text())
  runs = [
    json.loads(line)
    for line in (rt.RESULTS / "real_digits" / "runs.jsonl").read_text().splitlines()
  ]
  # the study's records keep every criterion's pick: take the one the demo reports
  study = {
    r["method"]: reselect(r, demo["extra"]["runs"][r["method"]]["summary"]["selection"])
    for r in runs
    if r["seed"] == 0 and r["pair"] == "mnist→mnist_m" and r["method"] in demo["extra"]["runs"]
  }
  assert {r["method"] for r in demo["rows"]} <= set(study)
  for row in demo["rows"]:
    b = study[row["method"]]
    for key in ("selected", "selected_step", "last", "oracle", "source_acc"):
      assert row[key] == pytest.approx(b[key], abs=1e-9), (row["method"], key)
