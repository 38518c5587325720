"""Studies 4 and 5 smoke tests: fine-tuning a converted ResNet on an image folder, and
the published-benchmark configs on generated mock data with tiny models."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from dtl_jax import cli
from dtl_jax import experiment_utils as eu
from dtl_jax import models
from experiments import published

CONFIGS = published.HERE / "configs"


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  old = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def _write_folder(root, classes=("ants", "bees", "wasps"), n=4, size=20, seed=0):
  rng = np.random.default_rng(seed)
  for c_i, c in enumerate(classes):
    (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
      img = rng.integers(0, 255, (size, size, 3)).astype(np.uint8)
      img[..., c_i % 3] = 255  # a class-dependent colour
      Image.fromarray(img).save(root / c / f"{i}.png")
  return root


@pytest.fixture(scope="module")
def resnet18_npz(tmp_path_factory):
  """A random-weight torchvision-layout ResNet-18 state dict (no internet here)."""
  model = models.ResNet(depth=18, num_classes=None)
  variables = model.init(jax.random.key(1), np.zeros((1, 32, 32, 3), np.float32), train=False)
  sd = models.convert.flax_to_torch(variables)
  path = tmp_path_factory.mktemp("w") / "resnet18.npz"
  np.savez(path, **sd)
  return path, variables


def test_finetune_folder_freeze2_keeps_pretrained_stages(tmp_path, resnet18_npz):
  path, variables = resnet18_npz
  root = tmp_path / "hymenoptera"
  _write_folder(root / "train")
  _write_folder(root / "val", seed=1)
  c = eu.load_config(f"{CONFIGS / 'finetune_folder.py'}:freeze2")
  eu.apply_overrides(c, [
      f"pretrained={path}", f"data.source=folder:{root}", f"data.target=folder:{root}",
      "image_size=32", "data.batch_size=4", "data.eval_batch_size=8",
      "data.source_val_fraction=0.25", "train.num_steps=2", "train.eval_every=1",
      "train.checkpoint_every=2", "train.log_every=1", "optim.learning_rate=0.1"])
  eu.check_run_config(c)
  wd = eu.prepare_workdir(tmp_path / "run", c)
  result = eu.train_config(c, workdir=wd, progress=False)
  bb = result["state"].params["model"]["backbone"]
  ref = variables["params"]  # the weights written to the .npz
  # Frozen stages (stem + layer1) are bit-identical to the converted state dict ...
  for name in ("conv1", "bn1", "layer1"):
    for a, b in zip(jax.tree.leaves(bb[name]), jax.tree.leaves(ref[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # ... and the trainable ones moved away from it.
  moved = [not np.array_equal(np.asarray(a), np.asarray(b))
           for a, b in zip(jax.tree.leaves(bb["layer3"]), jax.tree.leaves(ref["layer3"]))]
  assert any(moved)
  saved = json.loads((wd / "config.json").read_text())
  assert saved["pretrained"] == str(path) and saved["image_size"] == 32
  # eval on the run's target (val split) through the command.
  out = eu.evaluate_workdir(wd)
  assert out["num_examples"] == 12 and 0.0 <= out["accuracy"] <= 100.0


def test_published_office31_config_runs_on_mock_data(tmp_path):
  # The ResNet + converted-weights path is covered by the fine-tuning test above; here
  # the Office-31 config's data / DANN / bottleneck wiring runs with a small backbone.
  amazon = _write_folder(tmp_path / "office31" / "amazon" / "images")
  webcam = _write_folder(tmp_path / "office31" / "webcam" / "images", seed=2)
  c = eu.load_config(f"{CONFIGS / 'published.py'}:office31:A-W:dann")
  assert c.model.backbone == "resnet50" and c.data.batch_size == 32
  assert c.model.bottleneck_dim == 256 and c.optim.backbone_lr_mult == 0.1
  assert c.train.num_steps == 20000
  eu.apply_overrides(c, [
      "pretrained=", "model.backbone=lenet", "model.bottleneck_dim=8",
      f"data.source=folder:{amazon}", f"data.target=folder:{webcam}", "image_size=28",
      "data.batch_size=4", "data.source_val_fraction=0.25", "train.num_steps=1",
      "train.eval_every=1", "train.checkpoint_every=1", "train.log_every=1"])
  c.method_kwargs.hidden = (8,)
  result = eu.train_config(c, workdir=eu.prepare_workdir(tmp_path / "r", c), progress=False)
  assert result["steps"] == 1 and 0.0 <= result["last"]["target_acc"] <= 1.0


@pytest.mark.parametrize("spec,backbone,size", [("svhn_mnist:S-M:dann", "dtn", 32)])
def test_published_digit_configs_run_on_mock_folders(tmp_path, spec, backbone, size):
  c = eu.load_config(f"{CONFIGS / 'published.py'}:{spec}")
  assert c.model.backbone == backbone and c.image_size == size
  assert str(c.data.source).startswith("tfds:")
  src = _write_folder(tmp_path / "s", classes=tuple("0123456789"), n=2, size=size)
  tgt = _write_folder(tmp_path / "t", classes=tuple("0123456789"), n=2, size=size, seed=3)
  eu.apply_overrides(c, [f"data.source=folder:{src}", f"data.target=folder:{tgt}",
                         "data.batch_size=10", "data.source_val_fraction=0.5",
                         "train.num_steps=1", "train.eval_every=1",
                         "train.checkpoint_every=1", "train.log_every=1"])
  if c.method == "dann":
    c.method_kwargs = {"hidden": (8,)}
  result = eu.train_config(c, workdir=eu.prepare_workdir(tmp_path / "r", c), progress=False)
  assert result["steps"] == 1


def test_every_published_config_loads_and_lists_references(capsys):
  for spec in published.EXAMPLES:
    c = eu.load_config(f"{CONFIGS / 'published.py'}:{spec}")
    assert c.method == spec.split(":")[2]
  mu = eu.load_config(f"{CONFIGS / 'published.py'}:mnist_usps:M-U:adda")
  assert mu.model.backbone == "lenet" and mu.image_size == 28
  assert mu.method_kwargs.stage == 2 and mu.init_from.endswith("mnist_usps_M-U_source_only")
  assert published.main(["--list"]) == 0
  out = capsys.readouterr().out
  assert "| office31 | mdd | A-W 94.5" in out


def test_missing_data_folder_and_weights_are_one_line_errors(capsys, tmp_path):
  code = cli.main(["train", "--config", f"{CONFIGS / 'finetune_folder.py'}:linear_probe",
                   "--config.pretrained=", f"--config.data.source=folder:{tmp_path}/nope",
                   "--workdir", str(tmp_path / "w")])
  err = capsys.readouterr().err
  assert code == 2 and "data folder" in err and "does not exist" in err
  assert err.count("\n") == 1 and not (tmp_path / "w").exists()
  code = cli.main(["train", "--config", f"{CONFIGS / 'published.py'}:office31:A-W:dann",
                   "--workdir", str(tmp_path / "w")])
  err = capsys.readouterr().err
  assert code == 2 and "pretrained weights" in err and err.count("\n") == 1
