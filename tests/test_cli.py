"""The `dtl-jax` command: help texts, one-line errors, and never overwriting results."""

import json

import pytest

from dtl_jax import cli

CONFIG_SRC = '''
import ml_collections

def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.method = arg or "dann"
  c.steps = 10
  c.lr = 0.01
  return c
'''


def _run(capsys, argv):
  code = cli.main(argv)
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.parametrize("sub", ["demo", "train", "eval", "measure"])
def test_every_subcommand_has_help(capsys, sub):
  with pytest.raises(SystemExit) as e:
    cli.main([sub, "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: dtl-jax " + sub)


def test_top_level_help_lists_subcommands(capsys):
  with pytest.raises(SystemExit):
    cli.main(["--help"])
  out = capsys.readouterr().out
  for sub in ("demo", "train", "eval", "measure"):
    assert sub in out


def test_split_config_overrides():
  rest, ov = cli._split_config_overrides(
      ["train", "--config", "c.py", "--config.steps=3", "--config.lr", "0.5", "--resume"])
  assert rest == ["train", "--config", "c.py", "--resume"]
  assert ov == ["steps=3", "lr=0.5"]


@pytest.fixture
def config_file(tmp_path):
  p = tmp_path / "c.py"
  p.write_text(CONFIG_SRC)
  return p


def test_show_config_applies_overrides(capsys, config_file):
  code, out, _ = _run(capsys, ["train", "--config", f"{config_file}:jan", "--config.steps=7",
                               "--show-config"])
  assert code == 0
  assert "steps: 7" in out and "method: jan" in out


@pytest.mark.parametrize("argv,match", [
    (["--config.stepz=3"], "unknown config key 'stepz'"),
    (["--config.steps=fast"], "'steps' expects an integer"),
])
def test_bad_override_is_one_line_error(capsys, config_file, tmp_path, argv, match):
  code, out, err = _run(capsys, ["train", "--config", str(config_file), "--workdir",
                                 str(tmp_path / "w"), *argv])
  assert code == 2
  assert err.startswith("dtl-jax: error: ") and match in err
  assert err.count("\n") == 1
  assert not (tmp_path / "w").exists()


def test_missing_config_file(capsys, tmp_path):
  code, _, err = _run(capsys, ["train", "--config", str(tmp_path / "none.py"),
                               "--workdir", str(tmp_path / "w")])
  assert code == 2 and "does not exist" in err and err.count("\n") == 1


def test_eval_of_a_directory_without_run(capsys, tmp_path):
  code, _, err = _run(capsys, ["eval", "--workdir", str(tmp_path)])
  assert code == 2 and "holds no dtl-jax run" in err and err.count("\n") == 1


def test_overrides_rejected_outside_train(capsys):
  code, _, err = _run(capsys, ["demo", "--config.steps=3"])
  assert code == 2 and "only apply to `dtl-jax train`" in err


def test_workdir_with_other_config_is_refused_and_untouched(capsys, config_file, tmp_path):
  w = tmp_path / "w"
  w.mkdir()
  (w / "config.json").write_text(json.dumps({"method": "jan", "steps": 10, "lr": 0.01}))
  (w / "checkpoint").write_text("keep me")
  code, _, err = _run(capsys, ["train", "--config", str(config_file), "--workdir", str(w)])
  assert code == 2
  assert "holds a run of a different config (differs in: method)" in err
  assert err.count("\n") == 1
  assert (w / "checkpoint").read_text() == "keep me"
  assert json.loads((w / "config.json").read_text())["method"] == "jan"
