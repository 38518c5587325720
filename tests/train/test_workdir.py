"""Run directories: who may reuse one, what a restart removes, re-opening a model."""

import json

import pytest

from dtl_jax.config import default_config
from dtl_jax.train import workdir as W


def _config(method="dann"):
  c = default_config()
  c.method = method
  return c


def _fake_checkpoint(w, step=10):
  (w / "checkpoints" / str(step)).mkdir(parents=True)
  (w / "checkpoints" / str(step) / "state").write_text("precious")


def test_workdir_rules(tmp_path):
  w = tmp_path / "run"
  assert W.prepare(w, _config()) == "new"
  assert json.loads((w / "config.json").read_text())["method"] == "dann"
  # Before a checkpoint exists, the directory is an unfinished attempt: a retry (even of
  # another config) restarts it without --overwrite.
  (w / "metrics.jsonl").write_text("{}\n")
  assert W.check(w, _config("jan")) == "restart"
  _fake_checkpoint(w)
  # Same config again without resume / overwrite: refused, nothing touched.
  with pytest.raises(W.WorkdirError, match="--resume"):
    W.prepare(w, _config())
  # Resume keeps the files; keys that may change on resume do not count.
  c = _config()
  c.train.resume, c.train.progress, c.train.stop_at_step = True, False, 3
  assert W.prepare(w, c, resume=True) == "resume"
  assert (w / "checkpoints" / "10" / "state").read_text() == "precious"
  # A different config is refused even with resume, naming the differing key.
  with pytest.raises(W.WorkdirError, match=r"different config \(differs in: method\)"):
    W.prepare(w, _config("jan"), resume=True)
  assert (w / "checkpoints" / "10" / "state").read_text() == "precious"
  # overwrite deletes the old run's files (and only those).
  (w / "notes.txt").write_text("mine")
  assert W.prepare(w, _config("jan"), overwrite=True) == "restart"
  assert not (w / "checkpoints").exists() and not (w / "metrics.jsonl").exists()
  assert (w / "notes.txt").read_text() == "mine"
  assert json.loads((w / "config.json").read_text())["method"] == "jan"


def test_workdir_foreign_directory_never_deleted(tmp_path):
  w = tmp_path / "mine"
  w.mkdir()
  (w / "thesis.tex").write_text("x")
  with pytest.raises(W.WorkdirError, match="holds no dtl-jax run"):
    W.prepare(w, _config(), overwrite=True)
  assert (w / "thesis.tex").exists()
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(W.WorkdirError, match="is a file"):
    W.check(f, _config())


def test_truncate_jsonl_keeps_steps_up_to(tmp_path):
  p = tmp_path / "m.jsonl"
  p.write_text("".join(json.dumps({"kind": "train", "step": s}) + "\n" for s in (5, 10, 15)))
  W.truncate_jsonl(p, upto=10)
  assert [json.loads(x)["step"] for x in p.read_text().splitlines()] == [5, 10]


def test_restore_model_errors(tmp_path):
  with pytest.raises(W.WorkdirError, match="holds no dtl-jax run"):
    W.restore_model(tmp_path)
  W.prepare(tmp_path / "r", _config())
  with pytest.raises(W.WorkdirError, match="has no checkpoint yet"):
    W.restore_model(tmp_path / "r")
  with pytest.raises(W.WorkdirError, match="no result.json with selections"):
    W.restore_model(tmp_path / "r", selected="dev")
