"""Config loading, overrides, work-directory rules and report files."""

import json

import ml_collections
import pytest

from dtl_jax import experiment_utils as eu
from dtl_jax import report

CONFIG_SRC = '''
import ml_collections

def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.method = arg or "dann"
  c.steps = 100
  c.lr = 0.01
  c.use_bn = True
  c.hidden = (16, 16)
  c.optim = ml_collections.ConfigDict({"name": "sgd", "momentum": 0.9})
  return c
'''


@pytest.fixture
def config_path(tmp_path):
  p = tmp_path / "cfg.py"
  p.write_text(CONFIG_SRC)
  return p


def test_load_config_with_arg(config_path):
  c = eu.load_config(f"{config_path}:jan")
  assert c.method == "jan" and c.steps == 100


def test_load_config_missing_file(tmp_path):
  with pytest.raises(eu.ConfigError, match="does not exist"):
    eu.load_config(tmp_path / "nope.py")


def test_overrides_types(config_path):
  c = eu.load_config(config_path)
  eu.apply_overrides(c, ["steps=7", "--config.lr=1", "optim.momentum=0.5",
                         "use_bn=false", "hidden=(8,4,2)", "method=cdan"])
  assert c.steps == 7 and isinstance(c.steps, int)
  assert c.lr == 1.0 and isinstance(c.lr, float)
  assert c.optim.momentum == 0.5 and c.use_bn is False
  assert tuple(c.hidden) == (8, 4, 2) and c.method == "cdan"


def test_overrides_may_add_keys_to_free_form_dicts_only():
  c = eu.digits_config("dann")
  eu.apply_overrides(c, ["method_kwargs.trade_off=0.3", "data.domain_kwargs.size=16",
                         "model.backbone_kwargs.dropout=0.0"])
  assert c.method_kwargs.trade_off == 0.3 and c.data.domain_kwargs.size == 16
  assert c.model.backbone_kwargs.dropout == 0.0
  # A second override of an added key keeps its type rules.
  with pytest.raises(eu.ConfigError, match="expects a number"):
    eu.apply_overrides(c, ["method_kwargs.trade_off=fast"])
  with pytest.raises(eu.ConfigError, match="unknown config key 'optim.trade_off'"):
    eu.apply_overrides(c, ["optim.trade_off=0.3"])


@pytest.mark.parametrize("override,match", [
    ("stepz=3", "unknown config key 'stepz'.*did you mean steps"),
    ("optim.nesterov=true", "unknown config key 'optim.nesterov'"),
    ("steps=0.5", "'steps' expects an integer"),
    ("use_bn=3", "'use_bn' expects true/false"),
    ("lr=fast", "'lr' expects a number"),
    ("steps", "must look like --config.key=value"),
])
def test_override_errors_are_one_line(config_path, override, match):
  c = eu.load_config(config_path)
  with pytest.raises(eu.ConfigError, match=match) as e:
    eu.apply_overrides(c, [override])
  assert "\n" not in str(e.value)


def test_workdir_rules(tmp_path):
  c1 = ml_collections.ConfigDict({"method": "dann", "steps": 10})
  c2 = ml_collections.ConfigDict({"method": "jan", "steps": 10})
  w = tmp_path / "run"
  eu.prepare_workdir(w, c1)
  assert json.loads((w / "config.json").read_text()) == {"method": "dann", "steps": 10}
  (w / "ckpt").write_text("precious")
  # Same config again without --resume / --overwrite: refused, nothing touched.
  with pytest.raises(eu.WorkdirError, match="--resume"):
    eu.prepare_workdir(w, c1)
  # Resume keeps the files.
  eu.prepare_workdir(w, c1, resume=True)
  assert (w / "ckpt").read_text() == "precious"
  # A different config is refused even with --resume, naming the differing key.
  with pytest.raises(eu.WorkdirError, match=r"different config \(differs in: method\)"):
    eu.prepare_workdir(w, c2, resume=True)
  assert (w / "ckpt").read_text() == "precious"
  # --overwrite deletes the old run.
  eu.prepare_workdir(w, c2, overwrite=True)
  assert not (w / "ckpt").exists()
  assert json.loads((w / "config.json").read_text())["method"] == "jan"


def test_workdir_foreign_directory_never_deleted(tmp_path):
  w = tmp_path / "mine"
  w.mkdir()
  (w / "thesis.tex").write_text("x")
  with pytest.raises(eu.WorkdirError, match="holds no dtl-jax run"):
    eu.prepare_workdir(w, ml_collections.ConfigDict({"a": 1}), overwrite=True)
  assert (w / "thesis.tex").exists()


def test_report_files(tmp_path):
  rows = [{"method": "source_only", "acc": (50.0, 1.5), "n": 3},
          {"method": "dann", "acc": (60.25, 0.0), "n": 3}]
  meta = eu.run_metadata(config=ml_collections.ConfigDict({"a": 1}), seeds=[0, 1, 2])
  paths = report.write_report(tmp_path, "t", title="T", rows=rows,
                              columns=[("method", "method"), ("acc", "acc (%)")],
                              metadata=meta, notes=["protocol"])
  md = paths["md"].read_text()
  assert "| dann | 60.25 ± 0.00 |" in md and "| source_only | 50.00 ± 1.50 |" in md
  assert "seeds" in md and "jax" in md and "cpu_count" in md
  data = json.loads(paths["json"].read_text())
  assert data["rows"][1]["acc"] == [60.25, 0.0]
  assert data["metadata"]["seeds"] == [0, 1, 2]
  assert data["metadata"]["config"] == {"a": 1}
  png = report.bar_plot(tmp_path / "p.png", ["a", "b"], {"x": [1.0, 2.0], "oracle": [3.0, 4.0]},
                        errors={"x": [0.1, 0.2]}, footer=report.footer_text(meta))
  assert png.read_bytes()[:4] == b"\x89PNG"


def test_mean_std_matches_numpy_formula():
  m, s = report.mean_std([1.0, 2.0, 4.0])
  assert m == pytest.approx(7 / 3)
  assert s == pytest.approx(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) ** 0.5 / 2 ** 0.5)


def test_aggregate_and_negative_transfer_flags():
  runs = []
  for seed, (a, b, c) in enumerate([(50., 60., 40.), (52., 62., 44.), (54., 58., 42.)]):
    runs += [{"pair": "p", "method": "source_only", "seed": seed, "selected": a},
             {"pair": "p", "method": "good", "seed": seed, "selected": b},
             {"pair": "p", "method": "bad", "seed": seed, "selected": c}]
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
  panel = {"title": "linear", "predict": lambda g: (g[:, 0] > 0).astype(float),
           "source_x": xs, "source_y": ys, "target_x": xs + 1}
  p = report.decision_boundary_plot(tmp_path / "b.png", [panel, panel], grid_size=20)
  assert p.read_bytes()[:4] == b"\x89PNG"
