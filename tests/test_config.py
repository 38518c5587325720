"""The config schema: defaults, validation naming the key, config files and overrides."""

import json

import ml_collections
import pytest

from dtl_jax import config as C

CONFIG_SRC = """
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
"""


@pytest.fixture
def config_path(tmp_path):
  p = tmp_path / "cfg.py"
  p.write_text(CONFIG_SRC)
  return p


def test_default_config_is_the_schema_and_valid():
  c = C.default_config()
  flat = C.flatten(c)
  assert set(flat) == set(C.KEYS)
  for key in C.SCHEMA:
    assert flat[key.name] == key.default, key.name
    assert key.doc, key.name
  C.validate(c)
  text = C.describe()
  for key in C.SCHEMA:
    assert f"{key.name} = {key.default!r}" in text


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("optim.learning_rate", -0.1, r"optim.learning_rate must be > 0, got -0.1"),
    ("data.batch_size", 0, r"data.batch_size must be > 0, got 0"),
    ("data.source_val_fraction", 1.0, r"data.source_val_fraction must be in \[0, 1\)"),
    ("optim.kind", "rmsprop", r"optim.kind must be one of 'sgd', 'adam'"),
    ("train.driver", "xla", r"train.driver must be one of 'jit', 'pmap', 'shard_map', 'sharded'"),
    ("method", "dannn", r"method must be one of .*dann.*got 'dannn'"),
    ("model.backbone", "vgg", r"model.backbone must be one of .*lenet.*got 'vgg'"),
    ("data.target", "svhn", r"data.target: unknown domain name 'svhn'"),
    ("data.source", "folder:/no/such/dir", r"data.source: data folder '/no/such/dir' does not"),
    ("train.selection", ("dev", "oracle"), r"train.selection must be a non-empty list"),
    ("model.pretrained", "/no/weights.pth", r"model.pretrained: no file '/no/weights.pth'"),
    ("init_from", "/no/run", r"init_from: '/no/run' is not a run directory"),
    ("optim.learning_rate", float("nan"), r"optim.learning_rate must be finite"),
    ("train.num_steps", 1.5, r"train.num_steps must be an integer, got 1.5"),
    ("data.augment", "randaugment", r"data.augment must be one of 'none', 'tllib_imagenet'"),
    ("data.workers", -1, r"data.workers must be >= 0, got -1"),
    ("data.prefetch", 0, r"data.prefetch must be > 0, got 0"),
    ("data.target_sampling", "random", r"data.target_sampling must be one of 'epochs', 'uniform'"),
  ],
)
def test_validate_names_the_key(key, value, match):
  d = C.config_to_dict(C.default_config())  # e.g. a hand-edited config.json
  group, _, name = key.rpartition(".")
  (d[group] if group else d)[name] = value
  c = ml_collections.ConfigDict(d)
  with pytest.raises(C.ConfigError, match=match) as e:
    C.validate(c)
  assert "\n" not in str(e.value)


def test_validate_catches_unknown_and_missing_keys():
  c = C.default_config()
  c.train.num_stepz = 3
  with pytest.raises(
    C.ConfigError,
    match=r"unknown config key 'train.num_stepz' \(did you mean "
    r"train.num_steps",
  ):
    C.validate(c)
  c = C.default_config()
  del c.optim["b1"]
  with pytest.raises(C.ConfigError, match=r"config key 'optim.b1' is missing"):
    C.validate(c)
  c = C.default_config()
  c.data.domain_kwargs.size = 28
  with pytest.raises(C.ConfigError, match="data.image_size, not data.domain_kwargs.size"):
    C.validate(c)
  c = C.default_config()
  c.optim.multipliers.backbone = -1.0
  with pytest.raises(C.ConfigError, match="optim.multipliers.backbone must be a number >= 0"):
    C.validate(c)


def test_saved_config_round_trips():
  c = C.default_config()
  c.model.head_hidden = (8, 4)
  c.method_kwargs.hidden = (16, 16)
  back = C.from_dict(json.loads(json.dumps(C.config_to_dict(c))))
  assert back.model.head_hidden == (8, 4) and back.train.selection == c.train.selection
  assert C.diff_keys(back, c) == []
  back.optim.learning_rate = 0.5
  assert C.diff_keys(back, c) == ["optim.learning_rate"]
  C.validate(back)


def test_load_config_with_arg(config_path):
  c = C.load_config(f"{config_path}:jan")
  assert c.method == "jan" and c.steps == 100


def test_load_config_errors(tmp_path):
  with pytest.raises(C.ConfigError, match="does not exist"):
    C.load_config(tmp_path / "nope.py")
  bad = tmp_path / "bad.py"
  bad.write_text("raise RuntimeError('boom')\n")
  with pytest.raises(C.ConfigError, match="failed to load: RuntimeError: boom"):
    C.load_config(bad)
  none = tmp_path / "none.py"
  none.write_text("x = 1\n")
  with pytest.raises(C.ConfigError, match="has no get_config"):
    C.load_config(none)


def test_overrides_types(config_path):
  c = C.load_config(config_path)
  C.apply_overrides(
    c,
    [
      "steps=7",
      "--config.lr=1",
      "optim.momentum=0.5",
      "use_bn=false",
      "hidden=(8,4,2)",
      "method=cdan",
    ],
  )
  assert c.steps == 7 and isinstance(c.steps, int)
  assert c.lr == 1.0 and isinstance(c.lr, float)
  assert c.optim.momentum == 0.5 and c.use_bn is False
  assert tuple(c.hidden) == (8, 4, 2) and c.method == "cdan"


def test_overrides_may_add_keys_to_free_form_dicts_only():
  c = C.default_config()
  C.apply_overrides(
    c,
    [
      "method_kwargs.trade_off=0.3",
      "data.domain_kwargs.channels=3",
      "model.backbone_kwargs.dropout=0.0",
      "optim.multipliers.head=2",
    ],
  )
  assert c.method_kwargs.trade_off == 0.3 and c.data.domain_kwargs.channels == 3
  assert c.model.backbone_kwargs.dropout == 0.0 and c.optim.multipliers.head == 2
  # A second override of an added key keeps its type rules.
  with pytest.raises(C.ConfigError, match="expects a number"):
    C.apply_overrides(c, ["method_kwargs.trade_off=fast"])
  with pytest.raises(C.ConfigError, match="unknown config key 'optim.trade_off'"):
    C.apply_overrides(c, ["optim.trade_off=0.3"])


@pytest.mark.parametrize(
  "override,match",
  [
    ("stepz=3", "unknown config key 'stepz'.*did you mean steps"),
    ("optim.nesterov=true", "unknown config key 'optim.nesterov'"),
    ("steps=0.5", "'steps' expects an integer"),
    ("use_bn=3", "'use_bn' expects true/false"),
    ("lr=fast", "'lr' expects a number"),
    ("steps", "must look like --config.key=value"),
  ],
)
def test_override_errors_are_one_line(config_path, override, match):
  c = C.load_config(config_path)
  with pytest.raises(C.ConfigError, match=match) as e:
    C.apply_overrides(c, [override])
  assert "\n" not in str(e.value)


def test_every_config_file_is_valid():
  """The study protocols in experiments/configs/ build valid run configs."""
  import pathlib

  root = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "configs"
  for spec in ("digits.py", "digits.py:wdgrl", "two_moons.py:dann", "two_moons.py:dann-paper"):
    c = C.load_config(root / spec if ":" not in spec else f"{root}/{spec}")
    C.validate(c)
  assert C.load_config(f"{root}/digits.py:wdgrl").method_kwargs.trade_off == 0.1
  assert isinstance(C.load_config(f"{root}/digits.py"), ml_collections.ConfigDict)


def test_augmentation_and_multihost_need_a_consistent_config():
  c = C.default_config()
  c.data.augment = "tllib_imagenet"
  c.data.normalize = "imagenet"  # the protocol's own normalization: consistent
  C.validate(c)
  c.data.image_size = 0
  with pytest.raises(C.ConfigError, match=r"data.augment='tllib_imagenet' needs data.image_size"):
    C.validate(c)
  c = C.default_config()
  c.data.augment = "tllib_digits"
  c.data.normalize = "imagenet"
  with pytest.raises(C.ConfigError, match=r"conflicts with data.augment='tllib_digits'"):
    C.validate(c)
  c = C.default_config()
  c.train.multihost = True
  with pytest.raises(C.ConfigError, match=r"train.multihost needs a multi-device train.driver"):
    C.validate(c)
  for driver in ("pmap", "shard_map", "sharded"):
    c.train.driver = driver
    C.validate(c)
