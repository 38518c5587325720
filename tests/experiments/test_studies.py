"""CI smoke tests of the study scripts at tiny size (the full runs live in experiments/results)."""

import json

import numpy as np
import pytest

from experiments import digits_benchmark, transferability, two_moons

pytestmark = pytest.mark.usefixtures("fast_compile")


def _md_table_rows(md: str) -> list[list[str]]:
  lines = [l for l in md.splitlines() if l.startswith("| ") and not l.startswith("|---")]
  return [[c.strip() for c in l.strip("|").split("|")] for l in lines[1:]]


def test_two_moons_quick(tmp_path, capsys):
  out = tmp_path / "moons"
  assert two_moons.main(["--quick", "--out", str(out), "--no-progress"]) == 0
  data = json.loads((out / "two_moons.json").read_text())
  assert (out / "two_moons.png").read_bytes()[:4] == b"\x89PNG"
  per_seed = data["extra"]["per_seed"]
  assert {r["method"] for r in per_seed} == {"source_only", "dann"}
  # The table's mean equals the mean of the per-seed values it was made from.
  for row in data["rows"]:
    vals = [r["last"] for r in per_seed if r["method"] == row["method"]]
    assert row["last"][0] == pytest.approx(np.mean(vals))
    assert 0.0 <= row["last"][0] <= 100.0
  assert data["metadata"]["seeds"] == [0]
  assert data["metadata"]["config"]["method"] == "dann"
  assert "jax" in data["metadata"]["versions"]
  # Refuses to overwrite existing results; the files stay as they were.
  before = (out / "two_moons.json").read_bytes()
  assert two_moons.main(["--quick", "--out", str(out), "--no-progress"]) == 2
  assert "--overwrite" in capsys.readouterr().err
  assert (out / "two_moons.json").read_bytes() == before


def test_two_moons_unknown_config_key(tmp_path, capsys):
  assert (
    two_moons.main(["--quick", "--out", str(tmp_path / "m"), "--config.train.num_stepz=3"]) == 2
  )
  err = capsys.readouterr().err
  assert "unknown config key 'train.num_stepz'" in err and err.count("\n") == 1
  assert not (tmp_path / "m").exists()


def test_digits_benchmark_quick(tmp_path):
  out = tmp_path / "db"
  assert digits_benchmark.main(["--quick", "--out", str(out), "--no-progress", "--no-cache"]) == 0
  data = json.loads((out / "digits_benchmark.json").read_text())
  runs = [json.loads(l) for l in (out / "runs.jsonl").read_text().splitlines()]
  assert {r["method"] for r in runs} == {"source_only", "dann", "adda"}
  ok = {r["method"]: r for r in runs if "error" not in r}
  assert set(ok) == {"source_only", "dann", "adda"}, runs
  rows = {r["method"]: r for r in data["rows"]}
  # Negative-transfer flag and delta recomputed independently from the runs.
  delta = ok["dann"]["selected"] - ok["source_only"]["selected"]
  assert float(rows["dann"]["delta"]) == pytest.approx(delta, abs=0.01)
  assert (rows["dann"]["flag"] == "NEGATIVE TRANSFER") == (delta < 0)
  md = (out / "digits_benchmark.md").read_text()
  assert "ORACLE (target labels)" in md
  assert (out / "digits_benchmark.png").read_bytes()[:4] == b"\x89PNG"
  # every run records the commit of its code; the notes count runs per commit
  from dtl_jax.config import load_config
  from dtl_jax.provenance import git_commit

  assert all(r["git_commit"] == git_commit() for r in runs)
  assert digits_benchmark.commit_note(runs) in data["notes"]
  # the scale note counts the test images of the domains actually loaded
  from dtl_jax.train import load_domains

  n_test = len(
    load_domains(
      digits_benchmark.run_config(
        "dann", "digits", "digits_m", 0, load_config(f"{digits_benchmark.CONFIG}:quick")
      )
    )[0].x_test
  )
  assert any(f" {n_test} test images" in n for n in data["notes"])


def test_digits_benchmark_runs_without_a_commit_take_the_previous_reports(tmp_path):
  """Runs recorded before runs carried their commit were reported by the previous report
  in --out; a continued study attributes them to its commit and counts each commit."""
  runs = [
    {"pair": "a→b", "method": "dann", "seed": 0, "git_commit": "new1234"},
    {"pair": "a→b", "method": "source_only", "seed": 0},
    {"pair": "a→b", "method": "dann", "seed": 1},
  ]
  assert digits_benchmark.attribute_commits(runs, tmp_path) == runs  # no previous report
  (tmp_path / "digits_benchmark.json").write_text(
    json.dumps({"metadata": {"git_commit": "old5678"}})
  )
  got = digits_benchmark.attribute_commits(runs, tmp_path)
  assert [r["git_commit"] for r in got] == ["new1234", "old5678", "old5678"]
  assert digits_benchmark.commit_note(got) == (
    "Runs by code commit: new1234: 1 runs (dann); old5678: 2 runs (dann, source_only)."
  )
  # a second continuation: the previous report already attributed its runs; keep that
  (tmp_path / "digits_benchmark.json").write_text(
    json.dumps({"metadata": {"git_commit": "mid9999"}, "extra": {"runs": got}})
  )
  got2 = digits_benchmark.attribute_commits(runs, tmp_path)
  assert [r["git_commit"] for r in got2] == ["new1234", "old5678", "old5678"]


def test_digits_benchmark_unknown_method(tmp_path, capsys):
  assert (
    digits_benchmark.main(
      ["--quick", "--out", str(tmp_path / "x"), "--methods", "source_only,danny"]
    )
    == 2
  )
  err = capsys.readouterr().err
  assert "method must be one of" in err and "'danny'" in err and err.count("\n") == 1
  assert not (tmp_path / "x").exists()


def test_transferability_quick(tmp_path):
  out = tmp_path / "tr"
  assert transferability.main(["--quick", "--out", str(out), "--no-progress"]) == 0
  data = json.loads((out / "transferability.json").read_text())
  per_seed = data["extra"]["per_seed"]
  assert set(per_seed) == {"BnB", "BnB+", "AnB", "AnB+"}
  assert all(set(v) == {"1", "2", "3"} for v in per_seed.values())  # quick: 3 layers
  assert (out / "transferability.png").read_bytes()[:4] == b"\x89PNG"
  for v in per_seed.values():
    for accs in v.values():
      assert all(0.0 <= a <= 100.0 for a in accs)


def test_transferability_task_split_is_by_class():
  from dtl_jax.config import load_config

  c = load_config(f"{transferability.CONFIG}:quick")
  tasks = transferability.load_tasks(c)
  from dtl_jax.data import load_domain

  dom = load_domain(c.domain, seed=0, size=c.image_size, pool=c.pool)
  for name, classes in (("A", c.classes_a), ("B", c.classes_b)):
    xtr, ytr, xte, yte = tasks[name]
    want = np.isin(dom.y_train, classes)
    assert len(xtr) == want.sum()
    np.testing.assert_array_equal(ytr, np.searchsorted(np.asarray(classes), dom.y_train[want]))
    assert set(np.unique(yte)) <= set(range(len(classes)))


def test_demo_runs_are_seed_zero_of_the_real_digits_study():
  """`dtl-jax demo` trains exactly the real-digits study's MNIST→MNIST-M config (seed 0)
  for each of its methods, so its table can be checked against the committed study runs.
  The study only turns off what a batch of runs does not need (TensorBoard, the progress
  bar, the selected checkpoints' copies), none of which changes a number."""
  from dtl_jax import demo
  from dtl_jax.config import config_to_dict, load_config
  from experiments import real_digits

  study = load_config(str(real_digits.STUDY))
  quiet = ("keep_selected", "tensorboard", "progress")
  for method in demo.DEMO_METHODS:
    runs = config_to_dict(real_digits.run_config(method, "mnist->mnist_m", 0, study))
    ours = config_to_dict(demo.demo_config(method))
    for c in (runs, ours):
      for k in quiet:
        c["train"].pop(k)
    assert runs == ours, method
  # The study's protocol file is the library's protocol.
  for method in ("dann", "source_only"):
    spec = f"{real_digits.CONFIGS / 'dann_mnist_m.py'}:{method}:300"
    assert config_to_dict(load_config(spec)) == config_to_dict(
      demo.dann_mnist_m_config(method, steps=300)
    )


def test_adda_stage2_configs_switch_dropout_off_and_use_adam():
  """ADDA's frozen source model runs in inference mode; dropout only on the target
  branch would let the discriminator separate the domains by the noise."""
  from dtl_jax.config import load_config

  study = load_config(str(digits_benchmark.CONFIG))
  c = digits_benchmark.run_config("adda", "digits", "digits_m", 0, study, init_from="runs/so")
  assert (c.method, c.method_kwargs.stage, c.init_from) == ("adda", 2, "runs/so")
  assert c.model.bottleneck_dropout == 0.0 and c.model.backbone_kwargs.dropout == 0.0
  # stage 2's GAN-style optimizer (Adam 2e-4, beta1 0.5, constant lr, no weight decay)
  want = {"kind": "adam", "learning_rate": 2e-4, "b1": 0.5, "lr_gamma": 0.0, "weight_decay": 0.0}
  assert {k: c.optim[k] for k in want} == want
  office = load_config(
    str(digits_benchmark.HERE / "configs" / "published.py") + ":office31:A-W:adda"
  )
  assert office.model.bottleneck_dropout == 0.0 and "dropout" not in office.model.backbone_kwargs
  assert {k: office.optim[k] for k in want} == want
  assert office.init_from == "runs/office31_A-W_source_only"
  # Stage 1 (source_only) keeps the protocol's dropout.
  assert (
    digits_benchmark.run_config(
      "source_only", "digits", "digits_m", 0, study
    ).model.bottleneck_dropout
    > 0
  )


def test_source_free_quick(tmp_path):
  """The source-free study runs source_only and its four adaptations through `fit` and
  `dtl_jax.train.adapt`, and its table's mean is the per-seed values'."""
  from experiments import source_free

  out = tmp_path / "sf"
  assert source_free.main(["--quick", "--out", str(out)]) == 0
  data = json.loads((out / "source_free.json").read_text())
  runs = data["extra"]["runs"]
  assert {m for r in runs for m in r["acc"]} == set(source_free.METHODS)
  rows = {r["method"]: r for r in data["rows"]}
  for m in source_free.METHODS:
    assert rows[m]["acc"][0] == pytest.approx(np.mean([r["acc"][m] for r in runs]))
  assert (out / "source_free.png").read_bytes()[:4] == b"\x89PNG"
