"""Studies 4 and 5 smoke tests: fine-tuning a converted ResNet on an image folder, and
the published-benchmark configs on generated mock data with tiny models."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from dtl_jax import cli, models, runs
from dtl_jax.config import apply_overrides, load_config, load_config_module, validate
from dtl_jax.train import fit
from experiments import published

CONFIGS = published.HERE / "configs"


pytestmark = pytest.mark.usefixtures("fast_compile")


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
  c = load_config(f"{CONFIGS / 'finetune_folder.py'}:freeze2")
  apply_overrides(
    c,
    [
      f"model.pretrained={path}",
      f"data.source=folder:{root}",
      f"data.target=folder:{root}",
      "data.image_size=32",
      "data.batch_size=4",
      "data.eval_batch_size=8",
      "data.source_val_fraction=0.25",
      "train.num_steps=2",
      "train.eval_every=1",
      "train.checkpoint_every=2",
      "train.log_every=1",
      "optim.learning_rate=0.1",
      "train.progress=false",
    ],
  )
  wd = tmp_path / "run"
  result = fit(c, wd)
  bb = result["state"].params["model"]["backbone"]
  ref = variables["params"]  # the weights written to the .npz
  # Frozen stages (stem + layer1) are bit-identical to the converted state dict ...
  for name in ("conv1", "bn1", "layer1"):
    for a, b in zip(jax.tree.leaves(bb[name]), jax.tree.leaves(ref[name]), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # ... and the trainable ones moved away from it.
  moved = [
    not np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(bb["layer3"]), jax.tree.leaves(ref["layer3"]), strict=True)
  ]
  assert any(moved)
  saved = json.loads((wd / "config.json").read_text())
  assert saved["model"]["pretrained"] == str(path) and saved["data"]["image_size"] == 32
  # eval on the run's target (val split).
  out = runs.evaluate_run(wd)
  assert out["num_examples"] == 12 and 0.0 <= out["accuracy"] <= 100.0


def test_published_office31_config_runs_on_mock_data(tmp_path, monkeypatch):
  # The ResNet + converted-weights path is covered by the fine-tuning test above; here
  # the Office-31 config's data / DANN / bottleneck wiring runs with a small backbone.
  from dtl_jax.data import pipeline
  from dtl_jax.data.streaming import LazyImages

  seen = []
  original = pipeline.TrainBatches.__call__

  def spy(self, step):  # the batches fit trains on, and the test view of the same images
    batch = original(self, step)
    seen.append((self.source_x, batch["x_s"], self.source_x[self.source_indices(step)]))
    return batch

  monkeypatch.setattr(pipeline.TrainBatches, "__call__", spy)
  amazon = _write_folder(tmp_path / "office31" / "amazon" / "images")
  webcam = _write_folder(tmp_path / "office31" / "webcam" / "images", seed=2)
  c = load_config(f"{CONFIGS / 'published.py'}:office31:A-W:dann")
  assert c.model.backbone == "resnet50" and c.data.batch_size == 32
  assert c.model.bottleneck_dim == 256 and c.optim.multipliers.backbone == 0.1
  assert c.train.num_steps == 20000 and c.data.normalize == "imagenet"
  assert c.data.augment == "tllib_imagenet"  # TLlib's crops and flips, streamed
  apply_overrides(
    c,
    [
      "model.pretrained=",
      "model.backbone=lenet",
      "model.bottleneck_dim=8",
      f"data.source=folder:{amazon}",
      f"data.target=folder:{webcam}",
      "data.image_size=28",
      "data.batch_size=4",
      "data.source_val_fraction=0.25",
      "train.num_steps=1",
      "train.eval_every=1",
      "train.checkpoint_every=1",
      "train.log_every=1",
      "train.progress=false",
    ],
  )
  c.method_kwargs.hidden = (8,)
  result = fit(c, tmp_path / "r")
  assert result["steps"] == 1 and 0.0 <= result["last"]["target_acc"] <= 1.0
  # streamed from the folder (a lazy view, decoded per batch), and augmented: the
  # training crops differ from the test transform's centre crops of the same images
  ((source_x, trained, centred),) = seen
  assert isinstance(source_x, LazyImages) and trained.shape == centred.shape == (4, 28, 28, 3)
  assert not np.allclose(trained, centred)


@pytest.mark.parametrize("spec,backbone,size", [("svhn_mnist:S-M:dann", "dtn", 32)])
def test_published_digit_configs_run_on_mock_folders(tmp_path, spec, backbone, size):
  c = load_config(f"{CONFIGS / 'published.py'}:{spec}")
  assert c.model.backbone == backbone and c.data.image_size == size
  assert str(c.data.source).startswith("tfds:") and c.data.augment == "tllib_digits"
  src = _write_folder(tmp_path / "s", classes=tuple("0123456789"), n=2, size=size)
  tgt = _write_folder(tmp_path / "t", classes=tuple("0123456789"), n=2, size=size, seed=3)
  apply_overrides(
    c,
    [
      f"data.source=folder:{src}",
      f"data.target=folder:{tgt}",
      "data.batch_size=10",
      "data.source_val_fraction=0.5",
      "train.num_steps=1",
      "train.eval_every=1",
      "train.checkpoint_every=1",
      "train.log_every=1",
      "train.progress=false",
    ],
  )
  if c.method == "dann":
    c.method_kwargs = {"hidden": (8,)}
  result = fit(c, tmp_path / "r")
  assert result["steps"] == 1


def test_every_published_config_loads_and_lists_references(capsys):
  for spec in published.EXAMPLES:
    c = load_config(f"{CONFIGS / 'published.py'}:{spec}")
    assert c.method == spec.split(":")[2]
    if c.method != "adda":  # adda's stage 1 (init_from) does not exist here
      c.model.pretrained = ""  # nor do the ImageNet weights or the data folders: every
      try:  # other key is valid
        validate(c)
      except ValueError as e:
        assert str(e).startswith(("data.source: data folder", "data.target: data folder")), e
  mu = load_config(f"{CONFIGS / 'published.py'}:mnist_usps:M-U:adda")
  assert mu.model.backbone == "lenet" and mu.data.image_size == 28
  assert mu.method_kwargs.stage == 2 and mu.init_from.endswith("mnist_usps_M-U_source_only")
  assert published.main(["--list"]) == 0
  out = capsys.readouterr().out
  assert "| office31 | mdd | A-W 94.5" in out


def test_missing_data_folder_and_weights_are_one_line_errors(capsys, tmp_path):
  code = cli.main(
    [
      "train",
      "--config",
      f"{CONFIGS / 'finetune_folder.py'}:linear_probe",
      "--config.model.pretrained=",
      f"--config.data.source=folder:{tmp_path}/nope",
      "--workdir",
      str(tmp_path / "w"),
    ]
  )
  err = capsys.readouterr().err
  assert code == 2 and "data folder" in err and "does not exist" in err
  assert err.count("\n") == 1 and not (tmp_path / "w").exists()
  code = cli.main(
    [
      "train",
      "--config",
      f"{CONFIGS / 'published.py'}:office31:A-W:dann",
      "--workdir",
      str(tmp_path / "w"),
    ]
  )
  err = capsys.readouterr().err
  assert code == 2 and "model.pretrained: no file" in err and err.count("\n") == 1


def _published_cfg_module():
  return load_config_module(CONFIGS / "published.py")


def test_tllib_reference_is_consistent_with_configs_and_methods(capsys):
  import itertools
  import statistics

  from dtl_jax.methods import METHODS

  mod = _published_cfg_module()
  tl = mod.TLLIB_REFERENCE
  assert set(tl) == {"office31", "office_home", "mnist_usps", "svhn_mnist"}
  # Every ordered pair of the Office domains (full tables), and the one digit pair each
  # digit config is for, from the domain letters rather than from the table.
  expected = {
    b: {f"{s}-{t}" for s, t in itertools.permutations(names, 2)}
    for b, names in (("office31", mod.OFFICE31), ("office_home", mod.OFFICE_HOME))
  }
  expected.update(mnist_usps={"M-U"}, svhn_mnist={"S-M"})
  digit_data = {
    "M-U": ("tfds:mnist", "folder:data/usps"),
    "S-M": ("tfds:svhn_cropped", "tfds:mnist"),
  }
  for bench, methods in tl.items():
    assert set(methods) <= set(METHODS), (bench, set(methods) - set(METHODS))
    assert {"source_only", "dann", "cdan"} <= set(methods)
    for method, accs in methods.items():
      tasks = {k: v for k, v in accs.items() if k != "avg"}
      assert set(tasks) == expected[bench], (bench, method)
      assert all(0.0 < v <= 100.0 for v in accs.values()), (bench, method)
      if len(tasks) > 1:
        # TLlib's Avg is over unrounded accuracies: rounding each task and the average to
        # 0.1 moves the mean by at most 0.05 + 0.05.
        assert abs(statistics.mean(tasks.values()) - accs["avg"]) <= 0.1 + 1e-9, (bench, method)
      else:
        assert "avg" not in accs  # one-task tables publish no average
      assert mod.reference(bench, method, source="tllib") is accs
    for task in expected[bench]:  # each task is a valid config pair
      c = mod.get_config(f"{bench}:{task}:dann")
      if task in digit_data:
        assert (c.data.source, c.data.target) == digit_data[task]
      else:
        names = mod.OFFICE31 if bench == "office31" else mod.OFFICE_HOME
        src, tgt = task.split("-")
        assert f"/{names[src]}" in c.data.source and f"/{names[tgt]}" in c.data.target
  # The default source is still the papers' table; an unknown source is a ValueError.
  assert mod.reference("office31", "mdd") is mod.REFERENCE["office31"]["mdd"]
  assert mod.reference("office31", "cdan_e", source="tllib") == {}
  with pytest.raises(ValueError, match="source"):
    mod.reference("office31", "mdd", source="dalib")
  # --list prints both columns: paper, then TLlib ("-" where a source has no row).
  assert published.main(["--list"]) == 0
  rows = {
    tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")]
    for line in capsys.readouterr().out.splitlines()
    if line.startswith("| ")
  }
  assert rows[("office31", "mdd")][3].startswith("A-W 94.5")
  assert rows[("office31", "mdd")][4] == (
    "A-W 95.6, D-W 98.6, W-D 100.0, A-D 94.4, D-A 76.6, W-A 72.2, avg 89.6"
  )
  assert rows[("office31", "cdan")][3] == "-" and rows[("office31", "cdan_e")][4] == "-"
  assert rows[("svhn_mnist", "cdan")][4] == "S-M 93.8"


@pytest.mark.parametrize(
  "backbone,case,method,size",
  [
    ("vit_b16", "vit", "dan", 32),
    ("dinov2_b14", "dinov2", "cdan", 24),  # another size: interpolated position embeddings
    ("clip_b16", "clip", "mdd", 32),
  ],  # DANN on a ViT: tests/train/test_vit_fit.py; MCC from the CLI: test_real_digits.py
)
def test_published_vit_configs_run_on_mock_data(tmp_path, backbone, case, method, size):
  """The Office configs with a foundation backbone: TLlib's ViT protocol (batch 24, the
  ResNet-50 optimizer and augmentation), the architecture and weights from a
  ``transformers`` checkpoint folder (a tiny random-weight model saved here, no hub), and
  the method trained through fit on streamed mock folders, moving the converted
  checkpoint's weights."""
  from tests.models import vit_testing

  c = load_config(f"{CONFIGS / 'published.py'}:office31:A-W:{method}:{backbone}")
  family, default_weights = _published_cfg_module().VIT_BACKBONES[backbone]
  assert (c.model.backbone, c.model.pretrained) == (family, default_weights)
  assert c.data.batch_size == 24 and c.data.augment == "tllib_imagenet"
  assert c.optim.multipliers.backbone == 0.1 and c.model.bottleneck_dim == 256
  torch_model, _ = vit_testing.make_model(case, seed=5)
  folder = tmp_path / "weights"
  torch_model.save_pretrained(folder)
  amazon = _write_folder(tmp_path / "office31" / "amazon" / "images", size=40)
  webcam = _write_folder(tmp_path / "office31" / "webcam" / "images", size=36, seed=2)
  apply_overrides(
    c,
    [
      f"model.pretrained={folder}",
      "model.bottleneck_dim=8",
      f"data.source=folder:{amazon}",
      f"data.target=folder:{webcam}",
      f"data.image_size={size}",
      "data.batch_size=4",
      "data.source_val_fraction=0.25",
      "train.num_steps=1",
      "train.eval_every=1",
      "train.checkpoint_every=1",
      "train.progress=false",
    ],
  )
  if method == "cdan":
    c.method_kwargs.hidden = (8,)
  model = models.build(c.model, num_classes=3)
  assert model.backbone.hidden_size == vit_testing.HIDDEN  # from the folder's config.json
  result = fit(c, tmp_path / "run")
  assert result["steps"] == 1 and 0.0 <= result["last"]["target_acc"] <= 1.0
  start = models.load_hf_vision(folder, model.backbone)["params"]
  moved = [
    not np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(
      jax.tree.leaves(start),
      jax.tree.leaves(result["state"].params["model"]["backbone"]),
      strict=True,
    )
  ]
  assert any(moved)  # fine-tuned (backbone lr x 0.1), from the converted checkpoint
