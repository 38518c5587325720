"""The `dtl-jax` command: help texts, one-line errors, never overwriting results, and a
tiny run trained, evaluated at its label-free pick and measured."""

import json
import os
import pathlib
import re

import pytest

from dtl_jax import cli, config

pytestmark = pytest.mark.usefixtures("fast_compile")

CONFIG_SRC = """
from dtl_jax.config import default_config

def get_config(arg=None):
  c = default_config()
  c.method = arg or "dann"
  c.train.num_steps = 10
  return c
"""


ROOT = pathlib.Path(__file__).resolve().parent.parent


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
    ["train", "--config", "c.py", "--config.steps=3", "--config.lr", "0.5", "--resume"]
  )
  assert rest == ["train", "--config", "c.py", "--resume"]
  assert ov == ["steps=3", "lr=0.5"]


@pytest.fixture
def config_file(tmp_path):
  p = tmp_path / "c.py"
  p.write_text(CONFIG_SRC)
  return p


def test_show_config_applies_overrides(capsys, config_file):
  code, out, _ = _run(
    capsys,
    ["train", "--config", f"{config_file}:jan", "--config.train.num_steps=7", "--show-config"],
  )
  assert code == 0
  assert "num_steps: 7" in out and "method: jan" in out


@pytest.mark.parametrize(
  "argv,match",
  [
    (
      ["--config.train.num_stepz=3"],
      "unknown config key 'train.num_stepz' (did you mean train.num_steps",
    ),
    (["--config.train.num_steps=fast"], "'train.num_steps' expects an integer"),
    (["--config.optim.learning_rate=-1"], "optim.learning_rate must be > 0, got -1.0"),
    (["--config.data.target=nowhere"], "data.target: unknown domain name 'nowhere'"),
  ],
)
def test_bad_override_is_one_line_error(capsys, config_file, tmp_path, argv, match):
  code, out, err = _run(
    capsys, ["train", "--config", str(config_file), "--workdir", str(tmp_path / "w"), *argv]
  )
  assert code == 2
  assert err.startswith("dtl-jax: error: ") and match in err
  assert err.count("\n") == 1
  assert not (tmp_path / "w").exists()


def test_missing_config_file(capsys, tmp_path):
  code, _, err = _run(
    capsys, ["train", "--config", str(tmp_path / "none.py"), "--workdir", str(tmp_path / "w")]
  )
  assert code == 2 and "does not exist" in err and err.count("\n") == 1


def test_eval_of_a_directory_without_run(capsys, tmp_path):
  code, _, err = _run(capsys, ["eval", "--workdir", str(tmp_path)])
  assert code == 2 and "holds no dtl-jax run" in err and err.count("\n") == 1


def test_overrides_rejected_outside_train(capsys):
  code, _, err = _run(capsys, ["demo", "--config.train.num_steps=3"])
  assert code == 2 and "only apply to `dtl-jax train`" in err


def test_workdir_with_other_config_is_refused_and_untouched(capsys, config_file, tmp_path):
  w = tmp_path / "w"
  (w / "checkpoints" / "10").mkdir(parents=True)
  (w / "checkpoints" / "10" / "state").write_text("keep me")
  saved = config.config_to_dict(config.load_config(f"{config_file}:jan"))
  (w / "config.json").write_text(json.dumps(saved))
  code, _, err = _run(capsys, ["train", "--config", str(config_file), "--workdir", str(w)])
  assert code == 2
  assert "holds a run of a different config (differs in: method)" in err
  assert err.count("\n") == 1
  assert (w / "checkpoints" / "10" / "state").read_text() == "keep me"
  assert json.loads((w / "config.json").read_text())["method"] == "jan"


# ----------------------------------------------------------- end to end, tiny sizes

DIGITS = "experiments/configs/digits.py"
TINY = [
  "--config.train.num_steps=2",
  "--config.train.eval_every=1",
  "--config.train.checkpoint_every=2",
  "--config.train.log_every=1",
  "--config.data.batch_size=8",
]


def test_train_eval_and_workdir_rules(capsys, tmp_path):
  w = tmp_path / "run"
  argv = [
    "train",
    "--config",
    f"{ROOT / DIGITS}:source_only",
    *TINY,
    "--workdir",
    str(w),
    "--no-progress",
  ]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "target acc. at the last step" in out
  result = json.loads((w / "result.json").read_text())
  # eval restores the checkpoint and recomputes the target accuracy on its own.
  assert cli.main(["eval", "--workdir", str(w)]) == 0
  ev = json.loads(capsys.readouterr().out)
  assert ev["step"] == 2 and ev["domain"] == "digits_m"
  assert ev["accuracy"] == pytest.approx(100 * result["last"]["target_acc"], abs=1e-6)
  # Same config again: refused without --resume/--overwrite, files untouched.
  before = (w / "result.json").read_bytes()
  assert cli.main(argv) == 2
  assert "--resume" in capsys.readouterr().err
  assert (w / "result.json").read_bytes() == before
  # eval of a step that has no checkpoint, and of an unknown domain: one line each.
  assert cli.main(["eval", "--workdir", str(w), "--step", "7"]) == 2
  err = capsys.readouterr().err
  assert "no checkpoint at step 7" in err and err.count("\n") == 1
  assert cli.main(["eval", "--workdir", str(w), "--domain", "svhn"]) == 2
  assert "unknown domain name 'svhn'" in capsys.readouterr().err
  # --resume continues the finished run (nothing left to do) and keeps it.
  assert cli.main(argv + ["--resume"]) == 0


def test_demo_tiny_is_deterministic_and_never_clobbers(capsys, tmp_path):
  out = tmp_path / "demo"
  argv = [
    "demo",
    "--methods",
    "source_only,deep_coral",
    "--steps",
    "2",
    "--out",
    str(out),
    "--no-progress",
  ]
  assert cli.main(argv) == 0
  printed = capsys.readouterr().out
  assert "oracle*" in printed and "deep_coral" in printed
  first = json.loads((out / "demo.json").read_text())
  assert [r["method"] for r in first["rows"]] == ["source_only", "deep_coral"]
  assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"
  md = (out / "demo.md").read_text()
  assert "oracle*" in md and "seeds" in md and "cpu_count" in md
  assert cli.main(argv) == 2
  assert "--overwrite" in capsys.readouterr().err
  assert json.loads((out / "demo.json").read_text()) == first
  assert cli.main(argv + ["--overwrite"]) == 0
  second = json.loads((out / "demo.json").read_text())
  strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
  assert strip(second["rows"]) == strip(first["rows"])


def test_demo_unknown_method_is_one_line(capsys, tmp_path):
  assert cli.main(["demo", "--methods", "source_only,dannn", "--out", str(tmp_path / "d")]) == 2
  err = capsys.readouterr().err
  assert "unknown method(s) ['dannn']" in err and err.count("\n") == 1
  assert not (tmp_path / "d").exists()


def test_tiny_run_is_evaluated_at_its_label_free_pick_and_measured(capsys, tmp_path):
  """The README's path through a run: train, evaluate the checkpoint the label-free
  criterion picked (by name, and by its step), measure the run against itself."""
  w = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--config",
        f"{ROOT / DIGITS}:dann",
        "--workdir",
        str(w),
        "--config.train.num_steps=6",
        "--config.train.eval_every=2",
        "--config.data.batch_size=8",
        "--no-progress",
      ]
    )
    == 0
  )
  capsys.readouterr()
  result = json.loads((w / "result.json").read_text())
  pick = result["selected"]["dev"]
  assert cli.main(["eval", "--workdir", str(w), "--selected", "dev"]) == 0
  ev = json.loads(capsys.readouterr().out)
  assert ev["step"] == pick["step"] and ev["selected"] == "dev"
  assert ev["accuracy"] == pytest.approx(100 * pick["target_acc"], abs=1e-6)
  # the same checkpoint by step (it lives under selected/ when it is not the last one)
  assert cli.main(["eval", "--workdir", str(w), "--step", str(pick["step"])]) == 0
  assert json.loads(capsys.readouterr().out)["accuracy"] == ev["accuracy"]
  assert cli.main(["eval", "--workdir", str(w), "--selected", "oracle"]) == 2
  err = capsys.readouterr().err
  assert "no selection 'oracle'" in err and "dev" in err and err.count("\n") == 1
  # measure rebuilds the data as the run did (16x16 digits), so the model fits it.
  assert (
    cli.main(
      [
        "measure",
        "--workdir",
        str(w),
        "--candidate",
        str(w),
        "--permutations",
        "20",
        "--num-labeled",
        "50",
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "digits -> digits_m" in out and "logme" in out.lower()


def test_errors_after_setup_are_one_line(capsys, tmp_path, monkeypatch):
  """A diverged run, an unwritable run directory and a model that does not fit its data
  print one `dtl-jax: error:` line with status 2, not a traceback."""
  base = [
    "train",
    "--config",
    f"{ROOT / DIGITS}:source_only",
    "--config.train.num_steps=4",
    "--config.train.log_every=2",
    "--no-progress",
  ]
  code, _, err = _run(
    capsys, [*base, "--config.optim.learning_rate=1e30", "--workdir", str(tmp_path / "nan")]
  )
  assert code == 2 and err.startswith("dtl-jax: error: training diverged: loss is NaN/Inf")
  assert err.count("\n") == 1
  code, _, err = _run(
    capsys, [*base, "--config.data.image_size=8", "--workdir", str(tmp_path / "small")]
  )
  assert code == 2 and err.count("\n") == 1
  assert "backbone 'lenet' cannot take inputs of shape (8, 8, 3)" in err
  assert not (tmp_path / "small").exists()
  ro = tmp_path / "ro"
  ro.mkdir()
  if os.geteuid() == 0:  # root ignores file modes: make the file system refuse instead
    real_mkdir = pathlib.Path.mkdir

    def refuse(self, *args, **kwargs):
      if str(self).startswith(str(ro)):
        raise PermissionError(13, "Permission denied", str(self))
      return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
  else:
    ro.chmod(0o500)
  code, _, err = _run(capsys, [*base, "--workdir", str(ro / "run")])
  assert code == 2 and err.count("\n") == 1
  assert re.match(r"dtl-jax: error: Permission denied: '.*ro", err), err


def test_documented_examples_use_real_keys_and_outputs_are_ignored():
  """The --config.* keys in the CLI's docstring and the README exist in the schema, and
  the README's output folders are in .gitignore."""
  texts = [cli.__doc__, (ROOT / "README.md").read_text()]
  keys = {k for t in texts for k in re.findall(r"--config\.([a-z_.0-9]+)[= ]", t)}
  assert keys, "no --config examples found"
  for k in keys:
    free = any(k.startswith(f + ".") for f in config.FREE_FORM_KEYS)
    assert k in config.KEYS or free, f"documented key {k!r} is not in the schema"
  ignored = (ROOT / ".gitignore").read_text().split()
  for folder in ("/dtl_jax_demo/", "/runs/"):
    assert folder in ignored


def test_l2_sp_fine_tuning_trains_from_the_cli(capsys, tmp_path):
  """`finetune` with optim.l2_sp (L2-SP's alpha) from a bundled config: the backbone stays
  closer to its starting weights than without the anchor, and still moves."""
  import jax
  import numpy as np

  from dtl_jax import models
  from dtl_jax.runs import run_domain
  from dtl_jax.train.loop import initial_variables
  from dtl_jax.train.workdir import read_config, restore_model

  def train(name, alpha):
    w = tmp_path / name
    argv = ["train", "--config", f"{ROOT / DIGITS}:finetune", *TINY]
    argv += ["--config.train.num_steps=6", "--config.optim.momentum=0.0"]
    argv += [f"--config.optim.l2_sp={alpha}", "--workdir", str(w), "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    return w

  plain, anchored = train("plain", 0.0), train("l2sp", 50.0)  # lr 0.01: lr * alpha = 0.5
  c = read_config(anchored)
  assert c.optim.l2_sp == 50.0 and c.method == "finetune"
  model = models.build(c.model, num_classes=10)
  x = np.asarray(run_domain(c, c.data.source).x_train[:1])  # the run's input shape
  start = initial_variables(c, model, jax.random.key(c.seed), x)["params"]["backbone"]

  def distance(w):
    bb = restore_model(w)[2]["params"]["backbone"]
    pairs = list(zip(jax.tree.leaves(bb), jax.tree.leaves(start), strict=True))
    assert all(np.shape(a) == np.shape(b) for a, b in pairs)
    return float(np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2) for a, b in pairs)))

  d_plain, d_anchored = distance(plain), distance(anchored)
  assert 0.0 < d_anchored < 0.9 * d_plain, (d_anchored, d_plain)
