"""The one config schema of a training run: every key, its default and what it does.

A run is described by one :class:`ml_collections.ConfigDict`. :func:`default_config`
returns it with every key at its default; :data:`SCHEMA` is the single place where the
keys, their defaults and their documentation live (``dtl-jax train --list-keys`` prints
it). The defaults are the bundled digits protocol (``experiments/configs/digits.py``, the
digits benchmark): ``digits -> digits_m`` at 16x16, LeNet + 256-d bottleneck + linear
head, TLlib's SGD (lr 0.01, Nesterov momentum 0.9, weight decay 1e-3, lr
``(1 + 1e-3 i)^-0.75``), 32 + 32 images per step, 500 steps, evaluation and label-free
selection every 100 steps (a run of seconds on a CPU). ``dtl-jax demo`` changes them to
the DANN paper's MNIST -> MNIST-M protocol (:func:`dtl_jax.demo.dann_mnist_m_config`).

Study protocols are Python files in ``experiments/configs/`` with a
``get_config(arg=None)`` function (the big_vision convention) that starts from
:func:`default_config` and changes what the protocol needs. On the command line,
``--config.key.sub=value`` overrides one key (:func:`apply_overrides`: the key must
exist, the value must have the key's type).

:func:`validate` checks a whole config before anything is built or written; its errors
(:class:`ConfigError`) name the key (``optim.learning_rate must be > 0, got -0.1``).
Parts of the run are built straight from their sub-configs::

  model = dtl_jax.models.build(config.model, num_classes=...)
  method = dtl_jax.methods.build(config.method, **config.method_kwargs)
  tx = dtl_jax.params.make_optimizer(labels, **config.optim)
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import importlib.util
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config file, key or value that cannot be used (the message is one line)."""


# ------------------------------------------------------------------------------ schema

Check = Callable[[Any], "str | None"]


def _positive(v) -> str | None:
  return None if v > 0 else "must be > 0"


def _non_negative(v) -> str | None:
  return None if v >= 0 else "must be >= 0"


def _fraction(v) -> str | None:
  return None if 0 <= v < 1 else "must be in [0, 1)"


def _unit(v) -> str | None:
  return None if 0 <= v <= 1 else "must be in [0, 1]"


def _one_of(*choices: str) -> Check:
  def check(v):
    return None if v in choices else f"must be one of {', '.join(map(repr, choices))}"

  return check


def _strings(v) -> str | None:
  ok = isinstance(v, (tuple, list)) and all(isinstance(s, str) for s in v)
  return None if ok else "must be a list of strings"


def _ints(v) -> str | None:
  ok = isinstance(v, (tuple, list)) and all(isinstance(s, int) and s > 0 for s in v)
  return None if ok else "must be a list of positive integers"


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key: dotted name, default, documentation and value check.

  ``free_form`` keys hold a dict whose entries are passed on as keyword arguments
  (to the method, the backbone, the domains or the optimizer), which validate them.
  """

  name: str
  default: Any
  doc: str
  check: Check | None = None
  free_form: bool = False


SCHEMA: tuple[Key, ...] = (
  Key(
    "seed",
    0,
    "model init, data order and train/test splits, dropout, method "
    "randomness; same seed and config, same run",
    _non_negative,
  ),
  Key(
    "method",
    "source_only",
    "a name of dtl_jax.methods.METHODS (source_only, ddc, "
    "dan, jan, deep_coral, dann, cdan, cdan_e, mdd, adda, wdgrl, domain_confusion, "
    "instance_weighted, finetune, distill)",
  ),
  Key(
    "method_kwargs",
    {},
    "keyword hyperparameters of the method (trade_off, "
    "schedule, margin, ...; adda: stage; distill: teacher_workdir; "
    "instance_weighted: base, weights)",
    free_form=True,
  ),
  Key(
    "init_from",
    "",
    "a run directory whose latest checkpoint initializes the model "
    "(ADDA stage 2, fine-tuning from a previous run); '' = fresh initialization",
  ),
  # data
  Key(
    "data.source",
    "digits",
    "source domain: a bundled name (dtl-jax train "
    "--list-domains), folder:<path> (an image folder) or tfds:<name> (a prepared "
    "TFDS dataset)",
  ),
  Key(
    "data.target",
    "digits_m",
    "target domain, same kinds (the same name as the source for plain fine-tuning)",
  ),
  Key(
    "data.image_size",
    16,
    "height = width every image domain is resized to "
    "(the bundled digits are 8x8 upsampled; 28 for TLlib's digit protocol, 224 for "
    "ImageNet backbones); 0 = each domain's own size; ignored by tabular domains",
    _non_negative,
  ),
  Key(
    "data.normalize",
    "none",
    "image normalization of folder:/tfds: domains: "
    "'none' or 'imagenet' (ImageNet mean / std, for pretrained backbones); the "
    "data.augment protocols other than 'none' normalize themselves",
    _one_of("none", "imagenet"),
  ),
  Key(
    "data.domain_kwargs",
    {},
    "other options of the domain builders (e.g. "
    "channels, angle_range, noise_std, angle), passed to the domains that accept "
    "them",
    free_form=True,
  ),
  Key("data.batch_size", 32, "source images per step (global, over all devices)", _positive),
  Key("data.target_batch_size", 0, "target images per step; 0 = data.batch_size", _non_negative),
  Key(
    "data.source_val_fraction",
    0.1,
    "share of the source training images held "
    "out (stratified) for the label-free selection criteria",
    _fraction,
  ),
  Key(
    "data.target_sampling",
    "epochs",
    "how the target examples of the training batches are drawn: 'epochs' (each epoch "
    "a fresh permutation of the target, like the source) or 'uniform' (independently "
    "and uniformly, with replacement, as the released DANN code of Ganin et al. pairs "
    "each source example with a target one; see experiments/results/two_moons_ablation)",
    _one_of("epochs", "uniform"),
  ),
  Key("data.eval_batch_size", 500, "batch size of evaluation passes", _positive),
  # input pipeline (dtl_jax.data.pipeline): streamed, decoded by workers
  Key(
    "data.augment",
    "none",
    "augmentation protocol: 'none' (each domain's own images, train = test), "
    "'tllib_imagenet' (TLlib's Office / VisDA protocol: resize 256, random-resized crop "
    "data.image_size, horizontal flip, ImageNet normalization; test: centre crop) or "
    "'tllib_digits' (TLlib's digits protocol: resize, normalize with mean 0.5 / std "
    "0.5); random per (seed, step, example), so a resumed run is bit-identical",
    _one_of("none", "tllib_imagenet", "tllib_digits"),
  ),
  Key(
    "data.workers",
    0,
    "decoding processes of the input pipeline (grain mp_prefetch); 0 = decode in "
    "threads of the training process",
    _non_negative,
  ),
  Key(
    "data.threads",
    2,
    "batches decoded at once by threads of each decoding process (0 = decode in the "
    "training loop's thread)",
    _non_negative,
  ),
  Key(
    "data.prefetch",
    2,
    "batches decoded ahead of the training step; host memory holds about "
    "prefetch + threads (per worker) batches, whatever the dataset size",
    _positive,
  ),
  # model
  Key(
    "model.backbone",
    "lenet",
    "a name of dtl_jax.models.BACKBONES (lenet, dann_mnist, dtn, mlp, resnet18 ... resnet101, "
    "vit, dinov2, clip_vision)",
  ),
  Key(
    "model.backbone_kwargs",
    {},
    "keyword arguments of the backbone (e.g. dropout, hidden; ViTs: preset, dtype, "
    "return_blocks, pool, drop_path_rate, lora_rank / lora_alpha / lora_targets -- a "
    "backbone with LoRA adapters trains only its adapters)",
    free_form=True,
  ),
  Key(
    "model.bottleneck_dim",
    256,
    "width of the bottleneck (TLlib's adaptation layer) between backbone and head; 0 = none",
    _non_negative,
  ),
  Key("model.bottleneck_dropout", 0.5, "dropout after the bottleneck", _fraction),
  Key("model.bottleneck_batch_norm", True, "BatchNorm in the bottleneck"),
  Key("model.head_hidden", (), "hidden widths of the classifier head", _ints),
  Key(
    "model.pretrained",
    "",
    "a pretrained backbone's weights: a torchvision / timm ResNet state dict "
    "(.safetensors, .npz or .pth), or a transformers ViT / DINOv2 / CLIP checkpoint "
    "(folder with config.json + model.safetensors, which also sets the architecture); "
    "bottleneck and head keep their fresh initialization",
  ),
  Key(
    "model.freeze",
    (),
    "regexes on model parameter paths (e.g. "
    "'backbone/(conv1|bn1|layer1)/.*') that stay frozen; their BatchNorm layers "
    "keep their statistics",
    _strings,
  ),
  # optimizer
  Key(
    "optim.kind",
    "sgd",
    "'sgd' (PyTorch-style coupled weight decay, as TLlib) or "
    "'adam' (AdamW, decoupled weight decay)",
    _one_of("sgd", "adam"),
  ),
  Key("optim.learning_rate", 0.01, "base learning rate", _positive),
  Key("optim.momentum", 0.9, "SGD momentum (0 = none)", _fraction),
  Key("optim.nesterov", True, "Nesterov momentum (SGD)"),
  Key("optim.weight_decay", 1e-3, "weight decay of the trainable groups", _non_negative),
  Key(
    "optim.lr_gamma",
    1e-3,
    "TLlib's schedule lr * (1 + lr_gamma * step) ** -lr_decay; 0 = constant learning rate",
    _non_negative,
  ),
  Key("optim.lr_decay", 0.75, "exponent of that schedule", _non_negative),
  Key("optim.b1", 0.9, "Adam's first-moment decay", _fraction),
  Key("optim.b2", 0.999, "Adam's second-moment decay", _fraction),
  Key("optim.grad_clip", 0.0, "global-norm gradient clipping; 0 = off", _non_negative),
  Key(
    "optim.l2_sp",
    0.0,
    "L2-SP (Li et al. 2018): alpha of alpha/2 ||w - w0||^2 on the backbone, w0 = its "
    "weights at the start (model.pretrained / init_from); 0 = off; weight_decay stays "
    "the other groups' plain L2 (the paper's beta)",
    _non_negative,
  ),
  Key(
    "optim.multipliers",
    {"backbone": 1.0},
    "learning-rate multiplier per "
    "parameter group (backbone, head, extra/<module>); TLlib uses backbone 0.1 for "
    "a pretrained backbone",
    free_form=True,
  ),
  Key(
    "optim.layer_decay",
    1.0,
    "layer-wise learning-rate decay of a ViT backbone (BEiT / MAE): block i of L trains at "
    "layer_decay ** (L - i) x the backbone's rate, the embeddings at layer_decay ** (L + 1); "
    "1 = off (MAE: 0.75 for ViT-B)",
    lambda v: None if 0 < v <= 1 else "must be in (0, 1]",
  ),
  # training loop
  Key("train.num_steps", 500, "optimizer steps", _positive),
  Key(
    "train.driver",
    "jit",
    "'jit' (one device), 'pmap' or 'shard_map' (one step "
    "body over a device axis) or 'sharded' (jax.jit over a Mesh with "
    "NamedSharding; XLA places the collectives)",
    _one_of("jit", "pmap", "shard_map", "sharded"),
  ),
  Key("train.log_every", 50, "steps between training-metric records", _positive),
  Key(
    "train.eval_every",
    100,
    "steps between evaluations (and label-free selection "
    "points); the last step is always evaluated",
    _positive,
  ),
  Key(
    "train.checkpoint_every",
    500,
    "steps between checkpoints; the last step is always saved",
    _positive,
  ),
  Key("train.keep_checkpoints", 1, "how many of the latest checkpoints are kept", _positive),
  Key(
    "train.keep_selected",
    True,
    "keep the checkpoints the label-free criteria pick under workdir/selected/<step>",
  ),
  Key(
    "train.selection",
    ("source_val_acc", "iwv", "dev", "entropy", "snd"),
    "label-free selection criteria computed at each evaluation",
    _strings,
  ),
  Key(
    "train.chance_check",
    0.5,
    "warn (and record in result.json) when source "
    "test accuracy is still at chance after this fraction of the run; 0 = off",
    _unit,
  ),
  Key(
    "train.resume",
    False,
    "continue from the latest checkpoint in the workdir (bit-identical to an uninterrupted run)",
  ),
  Key("train.progress", True, "show a progress bar"),
  Key(
    "train.tensorboard",
    True,
    "write TensorBoard events (tensorboardX) to workdir/tb next to metrics.jsonl",
  ),
  Key(
    "train.stop_at_step",
    0,
    "act as if interrupted after this step (checkpoint, return with interrupted=True); 0 = off",
    _non_negative,
  ),
  Key(
    "train.multihost",
    False,
    "call jax.distributed.initialize() first (driver pmap, shard_map or "
    "sharded): each process decodes and feeds its slice of every global batch",
  ),
  Key(
    "train.coordinator_address",
    "",
    "multihost: coordinator host:port ('' = auto-detect, e.g. on TPU VMs and SLURM)",
  ),
  Key("train.num_processes", 0, "multihost: number of processes (with the address)", _non_negative),
  Key("train.process_id", -1, "multihost: this process's index (with the address)"),
)

KEYS: dict[str, Key] = {k.name: k for k in SCHEMA}
#: Keys whose value is a dict of keyword arguments: an override may add entries.
FREE_FORM_KEYS: tuple[str, ...] = tuple(k.name for k in SCHEMA if k.free_form)


def default_config() -> ml_collections.ConfigDict:
  """A run config with every key of :data:`SCHEMA` at its default."""
  root: dict[str, Any] = {}
  for key in SCHEMA:
    *groups, leaf = key.name.split(".")
    node = root
    for g in groups:
      node = node.setdefault(g, {})
    node[leaf] = dict(key.default) if isinstance(key.default, dict) else key.default
  return ml_collections.ConfigDict(root)


def describe() -> str:
  """Every key with its default and documentation (``dtl-jax train --list-keys``)."""
  lines = []
  for key in SCHEMA:
    lines.append(f"{key.name} = {key.default!r}")
    lines.append(f"    {key.doc}")
  return "\n".join(lines)


# ----------------------------------------------------------------------- validation


def _plain(x: Any) -> Any:
  if isinstance(x, (ml_collections.ConfigDict, Mapping)):
    return {k: _plain(v) for k, v in x.items()}
  return x


def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
  """``{"optim.learning_rate": 0.01, ...}``; free-form dicts stay whole values."""
  out: dict[str, Any] = {}

  def rec(prefix: str, node: Mapping[str, Any]) -> None:
    for k, v in node.items():
      name = f"{prefix}{k}"
      if isinstance(v, (ml_collections.ConfigDict, Mapping)) and name not in FREE_FORM_KEYS:
        rec(name + ".", v)
      else:
        out[name] = _plain(v)

  rec("", config)
  return out


def _type_name(value: Any) -> str:
  if isinstance(value, bool):
    return "true/false"
  if isinstance(value, int):
    return "an integer"
  if isinstance(value, float):
    return "a number"
  if isinstance(value, str):
    return "a string"
  if isinstance(value, (tuple, list)):
    return "a list"
  if isinstance(value, dict):
    return "a dict"
  return type(value).__name__


def _same_type(default: Any, value: Any) -> bool:
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(default, bool) and isinstance(value, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, int):
    return isinstance(value, int)
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  if isinstance(default, dict):
    return isinstance(value, Mapping)
  return isinstance(value, type(default))


def validate(config: Mapping[str, Any]) -> None:
  """Checks a whole run config before anything is built or written.

  Checks that every key of :data:`SCHEMA` is present with a value of its type and
  range, that no unknown key is set (a typo would otherwise be ignored), and that the
  names it gives exist: the method, the backbone, the domains (a ``folder:`` path must
  be a directory), the selection criteria, ``model.pretrained`` (a file) and
  ``init_from`` (a run directory with a checkpoint).

  Raises:
    ConfigError: one line naming the key and what it must be.
  """
  flat = flatten(config)
  for name in flat:
    if name not in KEYS:
      raise ConfigError(
        f"unknown config key {name!r}{_close(name)}; every key is "
        "listed by `dtl-jax train --list-keys`"
      )
  for key in SCHEMA:
    if key.name not in flat:
      raise ConfigError(
        f"config key {key.name!r} is missing; start from dtl_jax.config.default_config()"
      )
    value = flat[key.name]
    if not _same_type(key.default, value):
      raise ConfigError(f"{key.name} must be {_type_name(key.default)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"{key.name} must be finite, got {value!r}")
    problem = key.check(value) if key.check else None
    if problem:
      raise ConfigError(f"{key.name} {problem}, got {value!r}")
  _validate_names(flat)


def _validate_names(flat: Mapping[str, Any]) -> None:
  from dtl_jax import data, methods, models  # the registries (imported on first use)
  from dtl_jax.train import selection

  if flat["method"] not in methods.METHODS:
    raise ConfigError(
      f"method must be one of {', '.join(sorted(methods.METHODS))}, got {flat['method']!r}"
    )
  if flat["model.backbone"] not in models.BACKBONES:
    raise ConfigError(
      f"model.backbone must be one of {', '.join(sorted(models.BACKBONES))}"
      f", got {flat['model.backbone']!r}"
    )
  pretrained = flat["model.pretrained"]
  if pretrained and not Path(pretrained).expanduser().exists():
    raise ConfigError(
      f"model.pretrained: no file {pretrained!r}; convert or download a "
      "state dict there (.safetensors, .npz or .pth; a transformers checkpoint folder for "
      "ViTs), or set it to ''"
    )
  init_from = flat["init_from"]
  if init_from and not (Path(init_from) / "checkpoints").is_dir():
    raise ConfigError(f"init_from: {init_from!r} is not a run directory with checkpoints/")
  for role in ("source", "target"):
    try:
      data.check_domain_name(flat[f"data.{role}"])
    except ValueError as e:
      raise ConfigError(f"data.{role}: {e}") from None
  if "size" in flat["data.domain_kwargs"]:
    raise ConfigError("set the image size with data.image_size, not data.domain_kwargs.size")
  unknown = sorted(set(flat["train.selection"]) - set(selection.CRITERIA))
  if unknown or not flat["train.selection"]:
    raise ConfigError(
      f"train.selection must be a non-empty list of "
      f"{', '.join(selection.CRITERIA)}, got {list(flat['train.selection'])}"
    )
  for label, mult in flat["optim.multipliers"].items():
    if not isinstance(mult, (int, float)) or isinstance(mult, bool) or mult < 0:
      raise ConfigError(f"optim.multipliers.{label} must be a number >= 0, got {mult!r}")
  if flat["train.multihost"] and flat["train.driver"] == "jit":
    raise ConfigError(
      "train.multihost needs a multi-device train.driver ('pmap', 'shard_map' or "
      "'sharded'), got 'jit'"
    )
  _validate_augment(flat)


def _validate_augment(flat: Mapping[str, Any]) -> None:
  augment = flat["data.augment"]
  if augment != "none" and not flat["data.image_size"]:
    raise ConfigError(
      f"data.augment={augment!r} needs data.image_size > 0 (the size it crops or resizes to), got 0"
    )
  own = {"tllib_imagenet": "imagenet", "tllib_digits": "mean 0.5 / std 0.5"}.get(augment)
  if own and flat["data.normalize"] not in ("none", own):
    raise ConfigError(
      f"data.normalize={flat['data.normalize']!r} conflicts with data.augment="
      f"{augment!r}, which normalizes with {own}; set data.normalize='none'"
    )


def _close(name: str) -> str:
  matches = difflib.get_close_matches(name, list(KEYS), n=3, cutoff=0.6)
  return f" (did you mean {', '.join(matches)}?)" if matches else ""


# --------------------------------------------------------------- files and overrides


def load_config_module(path: str | os.PathLike) -> Any:
  """Imports a Python config file as a module (to use its helper functions).

  Raises:
    ConfigError: a missing file, or one that fails to import (one line).
  """
  path = Path(path)
  if not path.is_file():
    raise ConfigError(
      f"config file {str(path)!r} does not exist; pass --config "
      "experiments/configs/<name>.py (see experiments/configs/)"
    )
  digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
  module_spec = importlib.util.spec_from_file_location(f"_dtl_jax_config_{digest}", path)
  if module_spec is None or module_spec.loader is None:
    raise ConfigError(f"config file {str(path)!r} cannot be imported")
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # the user's file: report it in one line.
    raise ConfigError(f"config file {str(path)!r} failed to load: {type(e).__name__}: {e}") from e
  return module


def load_config(spec: str | os.PathLike) -> ml_collections.ConfigDict:
  """Loads ``get_config()`` from a Python config file.

  Args:
    spec: ``path/to/config.py`` or ``path/to/config.py:arg``; ``arg`` is passed as
      the single string argument of ``get_config`` (e.g. a method name).

  Returns:
    The config (overrides may still be applied).

  Raises:
    ConfigError: a missing file, no ``get_config`` function, one that fails, or one
      that does not return a ``ConfigDict``.
  """
  spec = str(spec)
  arg = None
  path_str = spec
  if ".py:" in spec and not os.path.exists(spec):
    path_str, arg = spec.split(".py:", 1)
    path_str += ".py"
  path = Path(path_str)
  module = load_config_module(path)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {str(path)!r} has no get_config() function")
  try:
    config = module.get_config(arg) if arg is not None else module.get_config()
  except (ValueError, KeyError) as e:
    raise ConfigError(f"config {spec!r}: {e}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(
      f"get_config() in {str(path)!r} returned {type(config).__name__}, "
      "expected ml_collections.ConfigDict"
    )
  return config


def _parse_value(text: str) -> Any:
  """An override value: a Python literal, true / false / none, else a string."""
  lowered = text.strip().lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  if lowered in ("none", "null"):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _all_keys(node: Mapping[str, Any], prefix: str = "") -> list[str]:
  keys = []
  for k, v in node.items():
    keys.append(f"{prefix}{k}")
    if isinstance(v, (ml_collections.ConfigDict, Mapping)):
      keys.extend(_all_keys(v, f"{prefix}{k}."))
  return keys


def _coerce(key: str, old: Any, new: Any) -> Any:
  """``new`` converted to the type of the field's current value ``old``."""
  if old is None or new is None:
    return new
  if isinstance(old, bool):
    if isinstance(new, bool):
      return new
    raise ConfigError(f"config key {key!r} expects true/false, got {new!r}")
  if isinstance(old, int):
    if isinstance(new, int) and not isinstance(new, bool):
      return new
    raise ConfigError(f"config key {key!r} expects an integer, got {new!r}")
  if isinstance(old, float):
    if isinstance(new, (int, float)) and not isinstance(new, bool):
      return float(new)
    raise ConfigError(f"config key {key!r} expects a number, got {new!r}")
  if isinstance(old, str):
    return new if isinstance(new, str) else str(new)  # e.g. a name that parses as a number
  if isinstance(old, (tuple, list)):
    if isinstance(new, (tuple, list)):
      return type(old)(new)
    if isinstance(new, (int, float, str)):
      return type(old)([new])
    raise ConfigError(f"config key {key!r} expects a list, got {new!r}")
  if isinstance(old, (ml_collections.ConfigDict, Mapping)):
    raise ConfigError(
      f"config key {key!r} is a group; set its fields, e.g. "
      f"--config.{key}.{next(iter(old.keys()), 'field')}=..."
    )
  return new


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
  """Applies ``key.sub=value`` overrides to ``config`` in place (and returns it).

  Args:
    config: a config from :func:`load_config` or :func:`default_config`.
    overrides: strings ``"key=value"``; a leading ``--config.`` or ``config.`` is
      stripped. Values are parsed as Python literals (``3``, ``0.1``, ``(1, 2)``,
      ``true``, ``none``); anything else is a string.

  Entries of the free-form dicts (:data:`FREE_FORM_KEYS`) may be new: they are passed
  to the method, backbone, domains or optimizer, which reject what they do not accept.

  Raises:
    ConfigError: a malformed override, an unknown key (with close matches) or a value
      of the wrong type.
  """
  for item in overrides:
    text = item
    for prefix in ("--config.", "config."):
      if text.startswith(prefix):
        text = text[len(prefix) :]
    if "=" not in text:
      raise ConfigError(f"override {item!r} must look like --config.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    node: Any = config
    for part in parts[:-1]:
      if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
        raise ConfigError(
          f"unknown config key {key!r}{_close_in(key, config)}; every key "
          "is listed by `dtl-jax train --list-keys`"
        )
      node = node[part]
    leaf = parts[-1]
    free = ".".join(parts[:-1]) in FREE_FORM_KEYS
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or (leaf not in node and not free):
      raise ConfigError(
        f"unknown config key {key!r}{_close_in(key, config)}; every key "
        "is listed by `dtl-jax train --list-keys`"
      )
    value = _parse_value(raw)
    if leaf in node:
      value = _coerce(key, node[leaf], value)
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"config key {key!r}: {str(e).splitlines()[0]}") from e
  return config


def _close_in(key: str, config: Mapping[str, Any]) -> str:
  matches = difflib.get_close_matches(key, _all_keys(config), n=3, cutoff=0.6)
  return f" (did you mean {', '.join(matches)}?)" if matches else ""


def config_to_dict(config: Mapping[str, Any]) -> dict[str, Any]:
  """A plain JSON-able dict of a config (tuples become lists)."""
  cd = (
    config
    if isinstance(config, ml_collections.ConfigDict)
    else ml_collections.ConfigDict(_plain(config))
  )
  return json.loads(cd.to_json_best_effort())


def from_dict(d: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The config saved as ``d`` (e.g. a run's ``config.json``), with the schema's types.

  JSON turns tuples into lists; this restores the schema's tuples so that a re-loaded
  config equals the one that was saved.
  """
  d = json.loads(json.dumps(_plain(d)))  # a deep, plain copy
  for key in SCHEMA:
    if isinstance(key.default, tuple):
      *groups, leaf = key.name.split(".")
      node: Any = d
      for g in groups:
        node = node.get(g) if isinstance(node, dict) else None
      if isinstance(node, dict) and isinstance(node.get(leaf), list):
        node[leaf] = tuple(node[leaf])
  return ml_collections.ConfigDict(d)


def diff_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
  """Dotted keys whose values differ between two configs (plain or ConfigDict)."""
  fa, fb = flatten(config_to_dict(a)), flatten(config_to_dict(b))
  return sorted(k for k in set(fa) | set(fb) if fa.get(k, "<missing>") != fb.get(k, "<missing>"))
