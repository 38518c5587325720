"""fit(): resume is bit-identical, results carry the label-free selections, NaN stops,
nothing is written before the config and the data are known to work, collapsed runs are
reported, every method's needs are declared by the method."""

import json
import os

import jax
import numpy as np
import pytest

from dtl_jax import runs
from dtl_jax.config import ConfigError, default_config
from dtl_jax.train import TrainingDiverged, WorkdirError, fit, load_domains, workdir

pytestmark = pytest.mark.usefixtures("fast_compile")


def _config(num_steps=20, method="dann"):
  c = default_config()
  c.method = method
  c.data.source, c.data.target = "moons", "moons_rot"
  c.data.batch_size = 16
  c.model.backbone = "mlp"
  c.model.backbone_kwargs = {"hidden": (16,), "dropout": 0.2, "batch_norm": True}
  c.model.bottleneck_dim = 8
  c.model.bottleneck_dropout = 0.2
  c.method_kwargs = {"hidden": (16,)} if method == "dann" else {}
  c.optim.learning_rate = 0.05
  c.train.num_steps = num_steps
  c.train.log_every = 5
  c.train.eval_every = 10
  c.train.checkpoint_every = 5
  c.train.keep_checkpoints = 2
  c.train.progress = False
  return c


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_resume_is_identical_to_uninterrupted(tmp_path):
  k = 10
  full = fit(_config(2 * k), str(tmp_path / "full"))
  assert not full["interrupted"] and full["steps"] == 2 * k

  c = _config(2 * k)
  c.train.stop_at_step = k  # "killed" right after step k (checkpoint saved)
  part = fit(c, str(tmp_path / "resumed"))
  assert part["interrupted"] and part["steps"] == k
  c = _config(2 * k)
  c.train.resume = True
  resumed = fit(c, str(tmp_path / "resumed"))
  assert resumed["steps"] == 2 * k

  for a, b in zip(_leaves(full["state"]), _leaves(resumed["state"]), strict=True):
    np.testing.assert_array_equal(a, b)
  # the optimizer state and RNG also match
  for a, b in zip(
    jax.tree.leaves(full["state"].opt_state),
    jax.tree.leaves(resumed["state"].opt_state),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # and the evaluation history (steps 10 and 20) is the same
  assert [r["step"] for r in resumed["history"]] == [10, 20]
  assert resumed["history"][-1]["oracle_target_acc"] == full["history"][-1]["oracle_target_acc"]

  # keeps only the last 2 checkpoints
  steps = sorted(int(d) for d in os.listdir(tmp_path / "full" / "checkpoints") if d.isdigit())
  assert steps == [15, 20]

  # metrics.jsonl of the resumed run lists every step once, as the uninterrupted one
  def records(run):
    lines = [json.loads(x) for x in open(tmp_path / run / "metrics.jsonl")]
    return [(r["kind"], r["step"]) for r in lines]

  assert records("resumed") == records("full")
  assert len(set(records("resumed"))) == len(records("resumed"))


def test_result_selection_and_files(tmp_path):
  c = _config(30, method="source_only")
  c.train.eval_every = 5
  r = fit(c, str(tmp_path / "run"))
  assert set(r["selected"]) == {"source_val_acc", "iwv", "dev", "entropy", "snd", "last"}
  by_step = {h["step"]: h for h in r["history"]}
  for crit, pick in r["selected"].items():
    assert pick["step"] in by_step
    assert pick["target_acc"] == by_step[pick["step"]]["oracle_target_acc"]
    if crit != "last":  # the choice maximizes the criterion's own score
      assert pick["score"] == max(h["scores"][crit] for h in r["history"])
  # the checkpoint of every selected step is kept under selected/, and only those
  kept = sorted(int(d) for d in os.listdir(tmp_path / "run" / "selected") if d.isdigit())
  assert kept == sorted({p["step"] for c, p in r["selected"].items() if c != "last"})
  for pick in r["selected"].values():
    assert os.path.isdir(pick["checkpoint"])
  lines = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert {l["kind"] for l in lines} == {"train", "eval"}
  assert all("oracle_target_acc" in l for l in lines if l["kind"] == "eval")
  saved = json.load(open(tmp_path / "run" / "result.json"))
  assert saved["last"]["step"] == 30


def test_nan_stops_with_message(tmp_path):
  c = _config(20, method="source_only")
  c.optim.learning_rate = 1e30
  with pytest.raises(TrainingDiverged, match=r"step \d+.*checkpoint"):
    fit(c, str(tmp_path / "nan"))


def test_fit_drivers_agree(tmp_path):
  """fit with the pmap and shard_map drivers (8 devices) == fit with jit (no dropout):
  global-batch MMD and synchronised BatchNorm. (The sharded driver feeds its batch as
  shard_map does; its fit is checked against jit's in test_resume_kill.py, its step on
  8 devices in test_step.py.)"""
  results = {}
  for driver in ("jit", "pmap", "shard_map"):
    c = _config(6, method="dan")
    c.model.backbone_kwargs = {"hidden": (16,), "dropout": 0.0, "batch_norm": True}
    c.model.bottleneck_dropout = 0.0
    c.train.driver = driver
    c.train.eval_every = 6
    c.train.checkpoint_every = 6
    results[driver] = fit(c, str(tmp_path / driver))
  for driver in ("pmap", "shard_map"):
    for a, b in zip(
      _leaves(results["jit"]["state"]), _leaves(results[driver]["state"]), strict=True
    ):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert results[driver]["last"]["target_acc"] == results["jit"]["last"]["target_acc"]


def test_adda_stages_and_distill_through_fit(tmp_path):
  c1 = _config(8, method="adda")
  c1.method_kwargs = {"stage": 1}
  r1 = fit(c1, str(tmp_path / "stage1"))
  c2 = _config(8, method="adda")
  c2.method_kwargs = {"stage": 2}
  c2.init_from = str(tmp_path / "stage1")
  r2 = fit(c2, str(tmp_path / "stage2"))
  s1, s2 = r1["state"], r2["state"]
  for a, b in zip(
    jax.tree.leaves(s1.params["model"]["head"]),
    jax.tree.leaves(s2.params["model"]["head"]),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(
    jax.tree.leaves(s1.params["model"]),
    jax.tree.leaves(s2.params["extra"]["source_model"]),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c3 = _config(8, method="distill")
  c3.method_kwargs = {"teacher_workdir": str(tmp_path / "stage1")}
  r3 = fit(c3, str(tmp_path / "distill"))
  for a, b in zip(
    jax.tree.leaves(s1.params["model"]),
    jax.tree.leaves(r3["state"].params["extra"]["teacher"]),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="init_from"):
    c = _config(4, method="adda")
    c.method_kwargs = {"stage": 2}
    fit(c, str(tmp_path / "bad"))


def test_ctrl_c_saves_and_returns(tmp_path, monkeypatch):
  import signal

  from dtl_jax.train import writer

  original = writer.MetricWriter.write

  def write(self, record):
    original(self, record)
    if record.get("kind") == "train" and record["step"] == 5:
      signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C

  monkeypatch.setattr(writer.MetricWriter, "write", write)
  before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup / a background shell
  r = fit(_config(20, method="source_only"), str(tmp_path / "run"))
  assert r["interrupted"] and r["steps"] == 5
  assert "5" in os.listdir(tmp_path / "run" / "checkpoints")
  assert signal.getsignal(signal.SIGINT) is before  # fit put the caller's handler back


def test_run_domains_are_disjoint_halves_and_eval_sees_the_same_arrays():
  """fit's digits pair draws source and target from disjoint raw images; dtl-jax eval
  (runs.run_domain) gets exactly fit's arrays, and a third digits domain never shares a
  raw image with the source's training split."""
  load_run_domain = runs.run_domain
  c = default_config()
  c.seed = 3
  c.data.source, c.data.target = "digits", "digits_m"
  c.data.image_size = 8
  src, tgt = load_domains(c)
  src_ids = set(np.concatenate([src.ids_train, src.ids_test]).tolist())
  tgt_ids = set(np.concatenate([tgt.ids_train, tgt.ids_test]).tolist())
  assert not src_ids & tgt_ids
  # The halves of the 1,797 images, not a sixth each as load_domain's default pool.
  assert len(src_ids) + len(tgt_ids) == 1797
  assert src.input_shape == tgt.input_shape == (8, 8, 3)
  for name, dom in (("digits", src), ("digits_m", tgt)):
    again = load_run_domain(c, name)
    np.testing.assert_array_equal(again.x_test, dom.x_test)
    np.testing.assert_array_equal(again.ids_train, dom.ids_train)
  other = load_run_domain(c, "digits_rot")
  assert other.input_shape == src.input_shape
  assert not set(other.ids_train.tolist()) & set(src.ids_train.tolist())
  # Plain fine-tuning (source == target): one domain, both roles.
  c.data.target = "digits"
  a, b = load_domains(c)
  assert a is b


def _digits(num_steps=40, **changes):
  c = default_config()  # the bundled digits protocol at 16x16
  c.train.num_steps = num_steps
  c.train.eval_every = 10
  c.train.progress = False
  for key, value in changes.items():
    group, _, name = key.rpartition("__")
    (c[group] if group else c)[name] = value
  return c


def test_collapsed_run_is_reported_not_silent(tmp_path, capsys):
  """lr 2.0 on digits: the loss stays finite but the source classifier never leaves
  chance; fit says so on stderr and in result.json (a healthy run says nothing)."""
  r = fit(_digits(optim__learning_rate=2.0), str(tmp_path / "collapsed"))
  assert all(h["source_test_acc"] < 0.15 for h in r["history"])
  assert len(r["warnings"]) == 1 and "at chance" in r["warnings"][0]
  assert "at chance" in capsys.readouterr().err
  saved = json.load(open(tmp_path / "collapsed" / "result.json"))
  assert saved["warnings"] == r["warnings"]
  healthy = fit(_config(20, method="source_only"), str(tmp_path / "healthy"))
  assert healthy["warnings"] == []


def test_at_chance_threshold_closed_form():
  from dtl_jax.train.evaluation import at_chance

  labels = np.repeat(np.arange(10), 18)  # 180 labels, majority rate 0.1
  threshold = 0.1 + 3 * np.sqrt(0.1 * 0.9 / 180)
  assert at_chance(0.16, labels) == (True, pytest.approx(threshold))
  assert not at_chance(0.17, labels)[0]
  assert at_chance(0.8, np.array([0] * 80 + [1] * 20))[0]  # majority class alone is 0.8


def test_bad_config_writes_nothing(tmp_path):
  """Errors found before training (a bad value, an unknown key) leave no directory."""
  wd = tmp_path / "run"
  with pytest.raises(ConfigError, match=r"optim.learning_rate must be > 0, got -0.1"):
    fit(_digits(optim__learning_rate=-0.1), str(wd))
  with pytest.raises(ConfigError, match=r"unknown config key 'optim.learning_rat'"):
    c = _digits()
    c.optim.learning_rat = 0.1
    fit(c, str(wd))
  with pytest.raises(ConfigError, match=r"method_kwargs: bad hyperparameters for method 'dann'"):
    fit(_digits(method="dann", method_kwargs={"trade_of": 1.0}), str(wd))
  with pytest.raises(ConfigError, match=r"model.backbone_kwargs for 'lenet'"):
    fit(_digits(model__backbone_kwargs={"widht": 3}), str(wd))
  with pytest.raises(ConfigError, match=r"data.augment='tllib_digits' needs image domains"):
    c = _config(4)
    c.data.augment = "tllib_digits"
    fit(c, str(wd))
  assert not wd.exists()


def _image_folder(root, classes, n=6, corrupt=None):
  from PIL import Image

  rng = np.random.default_rng(0)
  for c in classes:
    os.makedirs(root / c, exist_ok=True)
    for i in range(n):
      Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
  if corrupt:
    (root / classes[0] / "broken.png").write_bytes(b"not a png")
  return f"folder:{root}"


def test_data_errors_write_nothing_and_digits_config_takes_folders(tmp_path):
  """Differing class lists and a corrupt image are reported before the run directory
  exists; the digits protocol trains on image folders at data.image_size."""
  a = _image_folder(tmp_path / "a", ["cat", "dog"])
  b = _image_folder(tmp_path / "b", ["cat", "fox"])
  bad = _image_folder(tmp_path / "bad", ["cat", "dog"], corrupt=True)
  wd = tmp_path / "run"
  with pytest.raises(ConfigError, match=r"class lists .* differ.*'dog'.*'fox'"):
    fit(_digits(data__source=a, data__target=b), str(wd))
  with pytest.raises(ConfigError, match=r"broken.png"):
    fit(_digits(data__source=a, data__target=bad), str(wd))
  assert not wd.exists()
  c = _digits(
    num_steps=4,
    data__source=a,
    data__target=str(a),
    data__batch_size=4,
    data__image_size=16,
    data__source_val_fraction=0.2,
  )
  r = fit(c, str(wd))
  assert r["steps"] == 4
  assert np.asarray(r["state"].params["model"]["backbone"]["conv1"]["kernel"]).shape[2] == 3


def test_run_that_fails_before_its_first_checkpoint_does_not_block_the_retry(tmp_path):
  wd = tmp_path / "run"
  c = _config(20, method="source_only")
  c.optim.learning_rate = 1e30
  with pytest.raises(TrainingDiverged):
    fit(c, str(wd))
  assert (wd / "config.json").exists() and not workdir.checkpoint_steps(wd)
  fixed = _config(20, method="source_only")  # corrected: no --overwrite needed
  assert fit(fixed, str(wd))["steps"] == 20
  other = _config(20, method="dan")
  with pytest.raises(WorkdirError, match=r"different config \(differs in: method\)"):
    fit(other, str(wd))
  with pytest.raises(WorkdirError, match="already holds a run of this config"):
    fit(fixed, str(wd))
  assert workdir.checkpoint_steps(wd) == [15, 20]  # nothing was deleted


def test_instance_weighted_trains_through_fit(tmp_path, monkeypatch):
  """fit asks the method for its source weights (KMM on the inputs) and feeds each
  batch the weights of its examples."""
  from dtl_jax import instance
  from dtl_jax.data import pipeline
  from dtl_jax.train import split_source_val

  seen = []
  original = pipeline.TrainBatches.__call__

  def spy(self, step):
    batch = original(self, step)
    seen.append((self.source_indices(step), batch.get("w_s")))
    return batch

  monkeypatch.setattr(pipeline.TrainBatches, "__call__", spy)
  c = _config(10, method="instance_weighted")
  c.method_kwargs = {"base": "dan", "weights": "kmm"}
  r = fit(c, str(tmp_path / "iw"))
  assert r["steps"] == 10 and np.isfinite(r["history"][-1]["source_test_acc"])
  src, tgt = load_domains(c)
  train_src, _ = split_source_val(src, c.data.source_val_fraction, c.seed)
  w = np.asarray(
    instance.kmm_weights(
      np.asarray(train_src.x_train, np.float32), np.asarray(tgt.x_train, np.float32)
    )
  )
  assert w.std() > 0.05  # the weights are informative, not all ones
  assert len(seen) == 10
  for idx, batch_w in seen:
    np.testing.assert_allclose(batch_w, w[idx], rtol=1e-5)
