"""The real-digit protocols and studies at tiny size: CLI training from the bundled
configs, PyTorch (dalib) parity of the side-by-side runner, the validator statistics
against scipy, and the study's report recomputed from its runs."""

import json
import pathlib

import numpy as np
import pytest
import scipy.stats

from dtl_jax import cli
from dtl_jax import config as config_lib

pytestmark = pytest.mark.usefixtures("fast_compile")

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = [
  "--config.train.num_steps=2",
  "--config.train.eval_every=2",
  "--config.train.checkpoint_every=2",
  "--config.train.log_every=1",
  "--config.train.selection=('source_val_acc', 'dev')",
  "--config.data.batch_size=8",
  "--config.data.target_batch_size=8",
  "--config.data.image_size=16",
]


@pytest.mark.parametrize(
  "spec",
  [
    "experiments/configs/dann_mnist_m.py:dann",
    "experiments/configs/dann_mnist_m.py:source_only:40",
    "experiments/configs/tllib_digits.py:uci_digits:mnist:cdan",
    # target-output regularizers, trainable as methods (issue 18, item 5)
    "experiments/configs/tllib_digits.py:uci_digits:mnist:mcc",
    "experiments/configs/tllib_digits.py:mnist:uci_digits:entropy_min",
  ],
)
def test_protocol_configs_train_from_the_cli(capsys, tmp_path, spec):
  w = tmp_path / "run"
  argv = ["train", "--config", f"{ROOT / spec}", *TINY, "--workdir", str(w), "--no-progress"]
  assert cli.main(argv) == 0, capsys.readouterr().err
  result = json.loads((w / "result.json").read_text())
  saved = json.loads((w / "config.json").read_text())
  assert result["steps"] == 2 and 0.0 <= result["last"]["target_acc"] <= 1.0
  if "dann_mnist_m" in spec:
    assert (saved["data"]["source"], saved["data"]["target"]) == ("mnist", "mnist_m")
    assert saved["model"]["backbone"] == "dann_mnist"
    steps = int(spec.split(":")[2]) if spec.count(":") == 2 else 600
    # lr (1 + 10 p)^-0.75: the schedule is relative to the protocol's run length.
    assert saved["optim"]["lr_gamma"] == pytest.approx(10.0 / steps)
  elif spec.endswith(("mcc", "entropy_min")):
    # the regularizer methods log their target term ("transfer"): entropy of 10-class
    # predictions lies in [0, log 10], MCC's confusion in [0, 1)
    logged = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
    transfer = [r["transfer"] for r in logged if "transfer" in r]
    assert transfer and all(0.0 <= t <= np.log(10) + 1e-6 for t in transfer), transfer
  if spec.endswith("entropy_min"):
    assert saved["data"]["source"] == "mnist" and saved["method"] == "entropy_min"
  elif "tllib_digits" in spec:
    assert saved["data"]["source"] == "uci_digits" and saved["optim"]["learning_rate"] == 0.1


def test_dann_protocol_is_the_papers():
  c = config_lib.load_config(f"{ROOT}/experiments/configs/dann_mnist_m.py:dann")
  config_lib.validate(c)
  assert dict(c.method_kwargs) == {"schedule": "dann", "hidden": (100,), "batch_norm": False}
  assert (c.data.batch_size, c.data.target_batch_size) == (64, 64)
  assert (c.optim.momentum, c.optim.nesterov, c.optim.weight_decay) == (0.9, False, 0.0)
  assert tuple(c.model.head_hidden) == (100, 100) and c.model.bottleneck_dim == 0
  # mu_p = 0.01 / (1 + 10 p)^0.75 at p = 1/2
  p = 0.5
  lr = c.optim.learning_rate * (1 + c.optim.lr_gamma * p * c.train.num_steps) ** -c.optim.lr_decay
  assert lr == pytest.approx(0.01 / (1 + 10 * p) ** 0.75)


def test_torch_runner_matches_the_jax_step():
  """Same data, batches, initial weights and schedules: on the DANN protocol (no
  dropout) the PyTorch + dalib run follows the JAX run step by step."""
  import jax

  from dtl_jax import models
  from dtl_jax.train import create_train_state, make_train_step
  from experiments import torch_digits as td

  for method in ("dann", "cdan", "mdd"):
    c = config_lib.load_config(f"{ROOT}/experiments/configs/dann_mnist_m.py:{method}")
    c.data.batch_size = c.data.target_batch_size = 16
    parts = td.build_torch(c)
    state, m, source, _, source_train, _ = td.jax_initial_state(c)
    model = models.build(c.model, num_classes=source.num_classes)
    extra = {
      n: {"params": state.params["extra"][n], "batch_stats": state.batch_stats["extra"][n]}
      for n in state.params["extra"]
    }
    variables = {"params": state.params["model"], "batch_stats": state.batch_stats["model"]}
    state, tx = create_train_state(
      model,
      m,
      key=jax.random.key(c.seed),
      example_x=source_train.x_train[:2],
      model_variables=variables,
      extra_variables=extra,
      **dict(c.optim),
    )
    step = jax.jit(make_train_step(model, m, tx, total_steps=c.train.num_steps))
    for i in range(3):
      b = parts["sampler"].batch(i)
      torch_loss = td.torch_step(parts, i)
      state, metrics = step(state, {"x_s": b.x_source, "y_s": b.y_source, "x_t": b.x_target})
      assert torch_loss == pytest.approx(float(metrics["loss"]), rel=1e-4), (method, i)
    w_jax = np.asarray(state.params["model"]["head"]["fc"]["kernel"])
    w_torch = parts["net"].head[-1].weight.detach().numpy().T
    np.testing.assert_allclose(w_torch, w_jax, atol=1e-5)


def test_validator_statistics_match_scipy(rng):
  from experiments import validators

  a = rng.integers(0, 6, size=40).astype(float)  # ties
  b = a + rng.normal(size=40)
  np.testing.assert_allclose(validators.ranks(a), scipy.stats.rankdata(a))
  np.testing.assert_allclose(validators.weighted_ranks(a, np.ones(40)), scipy.stats.rankdata(a))
  assert validators.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic)
  # power 0: every weight 1, the plain Spearman correlation.
  assert validators.weighted_spearman(a, b, power=0.0) == pytest.approx(
    scipy.stats.spearmanr(a, b).statistic
  )
  # Weighted mid-ranks by brute force: weight of smaller values + half the tie mass + ...
  w = rng.uniform(0.1, 1.0, size=40)
  brute = [w[a < v].sum() + (np.sum(a == v) + 1) / 2 * w[a == v].mean() for v in a]
  np.testing.assert_allclose(validators.weighted_ranks(a, w), brute)


def test_validators_on_synthetic_runs(tmp_path):
  """A criterion equal to the accuracy picks the oracle and has rho 1; its negation
  picks the worst checkpoint and has rho -1."""
  from experiments import validators

  rng = np.random.default_rng(0)
  runs = []
  for seed in range(3):
    for m in ("source_only", "dann"):
      accs = rng.uniform(20, 90, size=5)
      hist = [
        {
          "step": 10 * (i + 1),
          "target_acc": float(a),
          "scores": {"source_val_acc": float(a), "entropy": -float(a), "dev": 1.0},
        }
        for i, a in enumerate(accs)
      ]
      runs.append({"pair": "a→b", "method": m, "seed": seed, "history": hist})
  res = validators.analyse(runs, criteria=("source_val_acc", "entropy", "dev"))["a→b"]
  good, bad = res["criteria"]["source_val_acc"], res["criteria"]["entropy"]
  assert good["spearman"] == pytest.approx(1.0) and bad["spearman"] == pytest.approx(-1.0)
  assert good["weighted_spearman"] == pytest.approx(1.0)
  assert good["selected_within_run"] == pytest.approx(res["within_run"]["oracle"])
  worst = np.mean([min(h["target_acc"] for h in r["history"]) for r in runs])
  assert bad["selected_within_run"] == pytest.approx(worst)
  assert good["selected_across_methods"] == pytest.approx(res["across_methods"]["oracle"])
  assert np.isnan(res["criteria"]["dev"]["spearman"])  # a constant score ranks nothing
  assert res["criteria"]["dev"]["selected_within_run"] == pytest.approx(
    np.mean([r["history"][-1]["target_acc"] for r in runs])  # ties go to the later step
  )
  path = tmp_path / "runs.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in runs))
  assert validators.main(["--runs", str(path), "--out", str(tmp_path / "v")]) == 0
  assert (tmp_path / "v" / "validators.png").read_bytes()[:4] == b"\x89PNG"


def test_validators_on_picks_only_runs_and_the_default_verdict(tmp_path):
  """Runs that kept only each criterion's pick (the digits benchmark's runs.jsonl) give
  the selection column; the shortfall and the paired comparison with the default are
  the closed forms of a constant gap."""
  from dtl_jax import runs as runs_lib
  from experiments import validators

  default = runs_lib.DEFAULT_SELECTION
  other = next(c for c in validators.CRITERIA if c != default)
  rng = np.random.default_rng(1)
  runs = []
  for seed in range(4):
    base = float(rng.uniform(30, 60))
    picks = {c: base for c in validators.CRITERIA}
    picks[other] = base + 2.0  # always 2 points better than the default
    runs.append(
      {
        "pair": "x→y",
        "method": "m",
        "seed": seed,
        "by_criterion": picks,
        "oracle": base + 3.0,
        "last": base - 1.0,
      }
    )
  res = validators.analyse(runs)["x→y"]
  assert res["n_checkpoints"] is None and res["n_runs"] == 4
  assert res["criteria"][other]["selected_within_run"] == pytest.approx(
    np.mean([r["by_criterion"][other] for r in runs])
  )
  assert np.isnan(res["criteria"][other]["spearman"])
  gaps = validators.shortfall({"x→y": res})
  assert gaps[default]["mean"] == pytest.approx(3.0) and gaps[other]["mean"] == pytest.approx(1.0)
  paired = validators.paired_vs_default(runs, default)
  assert paired[other]["mean"] == pytest.approx(2.0)
  assert paired[other]["low"] == pytest.approx(2.0) and paired[other]["high"] == pytest.approx(2.0)
  assert default not in paired
  path = tmp_path / "runs.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in runs))
  assert validators.main(["--runs", str(path), "--out", str(tmp_path / "v")]) == 0
  md = (tmp_path / "v" / "validators.md").read_text()
  assert f"{other} picked better checkpoints beyond the 95% interval" in md
  assert "picks only" in md


def test_real_digits_quick(tmp_path):
  from experiments import real_digits

  out = tmp_path / "rd"
  argv = ["--quick", "--out", str(out), "--no-progress", "--no-cache"]
  argv += ["--pairs", "mnist->mnist_m", "--methods", "source_only,dann"]
  assert real_digits.main(argv) == 0
  runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
  assert {r["method"] for r in runs} == {"source_only", "dann"}
  assert all("error" not in r and len(r["history"]) == 2 for r in runs)
  data = json.loads((out / "real_digits.json").read_text())
  rows = {r["method"]: r for r in data["rows"]}
  ok = {r["method"]: r for r in runs}
  assert rows["dann"]["selected"][0] == pytest.approx(ok["dann"]["selected"])
  assert float(rows["dann"]["delta"]) == pytest.approx(
    ok["dann"]["selected"] - ok["source_only"]["selected"], abs=0.06
  )
  assert rows["dann"]["published"] == 76.66 and rows["source_only"]["published"] == 52.25
  md = (out / "real_digits.md").read_text()
  assert "ORACLE (target labels)" in md and "Incomplete" not in md
  # A failed run (e.g. TrainingDiverged) stays out of the means and is named in the notes.
  failed = {"pair": "mnist→mnist_m", "method": "dann", "seed": 1, "error": "TrainingDiverged: NaN"}
  with (out / "runs.jsonl").open("a") as f:
    f.write(json.dumps(failed) + "\n")
  assert real_digits.main(argv[:3] + ["--report-only", *argv[4:]]) == 0
  data = json.loads((out / "real_digits.json").read_text())
  rows = {r["method"]: r for r in data["rows"]}
  assert rows["dann"]["n_seeds"] == 1 and rows["dann"]["selected"][0] == pytest.approx(
    ok["dann"]["selected"]
  )
  assert any(
    n.startswith("Failed runs") and "mnist→mnist_m dann seed 1 (TrainingDiverged)" in n
    for n in data["notes"]
  )
