"""Source-free adaptation (`dtl-jax adapt`, dtl_jax.train.adapt): AdaBN, Tent and SHOT from
a trained source run with target data only; resume is bit-identical (SHOT's
pseudo-labels are checkpointed), a target with other classes is refused, online
test-time evaluation scores each batch before the update."""

import json

import jax
import numpy as np
import pytest

from dtl_jax import cli
from dtl_jax.config import ConfigError
from dtl_jax.train import adapt as adapt_lib
from dtl_jax.train import fit, workdir

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, fast_compile):
  from dtl_jax.config import default_config

  c = default_config()  # digits -> digits_m at 16x16
  c.train.num_steps, c.train.eval_every, c.train.progress = 40, 20, False
  c.data.batch_size = 16
  run = tmp_path_factory.mktemp("so") / "run"
  fit(c, str(run))
  return run


def _adapt(source_run, tmp_path, method, **changes):
  c = adapt_lib.adapt_config(
    source_run, target="digits_rot", method=method, batch_size=32, epochs=1
  )
  c.train.progress = False
  for k, v in changes.items():
    c.train[k] = v
  return c


@pytest.mark.parametrize("method", ["adabn", "tent", "shot"])
def test_adapt_reports_before_and_after(source_run, tmp_path, method):
  c = _adapt(source_run, tmp_path, method)
  r = adapt_lib.adapt(c, str(tmp_path / method))
  src_config, model, variables, _ = workdir.restore_model(source_run)
  from dtl_jax import runs

  target = runs.run_domain(src_config, "digits_rot")
  logits = runs.model_outputs(model, variables, target.x_test, keys=("logits",))["logits"]
  # "before" is the source model's target accuracy, computed independently here
  assert r["before"]["target_acc"] == pytest.approx(np.mean(logits.argmax(-1) == target.y_test))
  assert set(r["selected"]) == {"entropy", "snd", "last"}
  saved = json.loads((tmp_path / method / "result.json").read_text())
  assert saved["last"]["target_acc"] == r["last"]["target_acc"]
  state = r["state"]
  head0 = jax.tree.leaves(variables["params"]["head"])
  head1 = jax.tree.leaves(state.params["model"]["head"])
  if method in ("shot", "adabn", "tent"):  # SHOT freezes the head, Tent all but BN affine
    for a, b in zip(head0, head1, strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  if method == "adabn":  # statistics only: every parameter is the source model's
    for a, b in zip(
      jax.tree.leaves(variables["params"]), jax.tree.leaves(state.params["model"]), strict=True
    ):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_shot_resume_is_bit_identical(source_run, tmp_path):
  full = adapt_lib.adapt(_adapt(source_run, tmp_path, "shot"), str(tmp_path / "full"))
  steps = full["steps"]
  part = adapt_lib.adapt(
    _adapt(source_run, tmp_path, "shot", stop_at_step=steps // 2 + 1), str(tmp_path / "resumed")
  )
  assert part["interrupted"]
  resumed = adapt_lib.adapt(
    _adapt(source_run, tmp_path, "shot", resume=True), str(tmp_path / "resumed")
  )
  assert resumed["steps"] == steps
  for a, b in zip(
    jax.tree.leaves(full["state"].params), jax.tree.leaves(resumed["state"].params), strict=True
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cli_adapt_errors_are_one_line(source_run, tmp_path, capsys):
  code = cli.main(
    [
      "adapt",
      "--from",
      str(source_run),
      "--target",
      "moons",
      "--workdir",
      str(tmp_path / "w"),
      "--no-progress",
    ]
  )
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("dtl-jax: error: data.target") and err.count("\n") == 1
  assert not (tmp_path / "w").exists()
  code = cli.main(
    [
      "adapt",
      "--from",
      str(source_run),
      "--target",
      "digits_rot",
      "--method",
      "dann",
      "--workdir",
      str(tmp_path / "w"),
    ]
  )
  assert code == 2 and "--method must be one of tent, shot, adabn" in capsys.readouterr().err
  with pytest.raises(ConfigError, match="adapts a trained model with target data only"):
    c = adapt_lib.adapt_config(source_run, target="digits_rot", method="tent")
    c.init_from = ""
    fit(c, str(tmp_path / "fit"))


def test_cli_adapt_and_online(source_run, tmp_path, capsys):
  w = tmp_path / "tent"
  assert (
    cli.main(
      [
        "adapt",
        "--from",
        str(source_run),
        "--target",
        "digits_rot",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--workdir",
        str(w),
        "--no-progress",
      ]
    )
    == 0
  )
  assert "before" in capsys.readouterr().out
  assert (
    cli.main(
      [
        "adapt",
        "--from",
        str(source_run),
        "--target",
        "digits_rot",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--workdir",
        str(w),
      ]
    )
    == 2
  )
  assert "--resume" in capsys.readouterr().err
  out = tmp_path / "online.json"
  assert (
    cli.main(
      [
        "adapt",
        "--from",
        str(source_run),
        "--online",
        "--shifts",
        "digits_rot,digits_noisy",
        "--batch-size",
        "50",
        "--out",
        str(out),
      ]
    )
    == 0
  )
  report = json.loads(out.read_text())
  assert list(report["source"]["per_shift"]) == ["digits_rot", "digits_noisy"]
  # the no-adaptation stream equals the source model's accuracy on the same test images
  src_config, model, variables, _ = workdir.restore_model(source_run)
  from dtl_jax import runs

  rot = runs.run_domain(src_config, "digits_rot")
  logits = runs.model_outputs(model, variables, rot.x_test, keys=("logits",))["logits"]
  want = 100 * np.mean(logits.argmax(-1) == rot.y_test)
  assert report["source"]["per_shift"]["digits_rot"] == pytest.approx(want)
