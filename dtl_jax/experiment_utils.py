"""Configs, command-line overrides, work directories and run metadata.

The plumbing shared by the ``dtl-jax`` command (:mod:`dtl_jax.cli`) and the study
scripts in ``experiments/``. Nothing here trains anything.

* Configs are Python files with a ``get_config(arg=None)`` function returning an
  :class:`ml_collections.ConfigDict` (the big_vision convention). ``path.py:arg`` passes
  ``arg`` to ``get_config``.
* Overrides are ``key.sub=value`` strings (the part after ``--config.``). The key must
  exist in the config and the value must have the field's type: a typo or a wrong type
  is a one-line :class:`ConfigError`, never a silently ignored setting.
* A work directory remembers the config it was made for (``config.json``). Reusing it
  for a different config, or starting again over an existing run without
  ``overwrite=True``, is a :class:`WorkdirError`; nothing is deleted unless asked.
"""

from __future__ import annotations

import ast
import datetime
import functools
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

CONFIG_FILE = "config.json"


class ConfigError(ValueError):
  """A config file, key or value that cannot be used (message is one line)."""


class WorkdirError(ValueError):
  """A work directory that cannot be used as asked (message is one line)."""


# --------------------------------------------------------------------------- configs


def load_config(spec: str | os.PathLike) -> ml_collections.ConfigDict:
  """Loads ``get_config()`` from a Python config file.

  Args:
    spec: ``path/to/config.py`` or ``path/to/config.py:arg``; ``arg`` is passed as
      the single string argument of ``get_config`` (e.g. a method name).

  Returns:
    The config, unlocked (overrides may still be applied).

  Raises:
    ConfigError: missing file, no ``get_config`` function, or a ``get_config`` that
      does not return a ``ConfigDict``.
  """
  spec = str(spec)
  arg = None
  path_str = spec
  if ".py:" in spec and not os.path.exists(spec):
    path_str, arg = spec.split(".py:", 1)
    path_str += ".py"
  path = Path(path_str)
  if not path.is_file():
    raise ConfigError(
        f"config file {str(path)!r} does not exist; pass --config "
        "experiments/configs/<name>.py (see experiments/configs/)")
  module_name = f"_dtl_jax_config_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # the user's file: report in one line.
    raise ConfigError(f"config file {str(path)!r} failed to load: "
                      f"{type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {str(path)!r} has no get_config() function")
  try:
    config = module.get_config(arg) if arg is not None else module.get_config()
  except (ValueError, KeyError) as e:
    raise ConfigError(f"config {spec!r}: {e}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() in {str(path)!r} returned "
                      f"{type(config).__name__}, expected ml_collections.ConfigDict")
  return config


def _parse_value(text: str) -> Any:
  """Parses an override value: Python literals, true/false/none, else a string."""
  lowered = text.strip().lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  if lowered in ("none", "null"):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _all_keys(config: Mapping, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    full = f"{prefix}{k}"
    keys.append(full)
    if isinstance(v, (ml_collections.ConfigDict, dict)):
      keys.extend(_all_keys(v, full + "."))
  return keys


def _close_matches(key: str, config: Mapping) -> str:
  import difflib
  matches = difflib.get_close_matches(key, _all_keys(config), n=3, cutoff=0.6)
  return f" (did you mean {', '.join(matches)}?)" if matches else ""


def _coerce(key: str, old: Any, new: Any) -> Any:
  """Type-checks ``new`` against the field's current value ``old``."""
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
    if isinstance(new, str):
      return new
    return str(new)  # e.g. a method name that happens to parse as a number.
  if isinstance(old, (tuple, list)):
    if isinstance(new, (tuple, list)):
      return type(old)(new)
    if isinstance(new, (int, float, str)):
      return type(old)([new])
    raise ConfigError(f"config key {key!r} expects a list, got {new!r}")
  if isinstance(old, (ml_collections.ConfigDict, dict)):
    raise ConfigError(f"config key {key!r} is a group; set its fields, e.g. "
                      f"--config.{key}.{next(iter(old.keys()), 'field')}=...")
  return new


# Free-form option dicts: an override may add a key to them (``--config.method_kwargs.
# trade_off=0.3``); the method / backbone / domain that receives them validates it.
FREE_FORM_KEYS = ("method_kwargs", "data.domain_kwargs", "model.backbone_kwargs")


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Applies ``key.sub=value`` overrides to ``config`` in place (and returns it).

  Args:
    config: the config loaded by :func:`load_config`.
    overrides: strings ``"key=value"``; a leading ``--config.`` or ``config.`` is
      stripped. Values are parsed as Python literals (``3``, ``0.1``, ``(1, 2)``,
      ``true``, ``none``), anything else is a string.

  Keys under the free-form dicts :data:`FREE_FORM_KEYS` may be new (they are passed
  to the method, backbone or domain, which reject what they do not accept).

  Raises:
    ConfigError: malformed override, unknown key (with close matches), or a value of
      the wrong type for the field.
  """
  for item in overrides:
    text = item
    for prefix in ("--config.", "config."):
      if text.startswith(prefix):
        text = text[len(prefix):]
    if "=" not in text:
      raise ConfigError(f"override {item!r} must look like --config.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
      if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
        raise ConfigError(f"unknown config key {key!r}{_close_matches(key, config)}; "
                          "run with --show-config to list the keys")
      node = node[part]
    leaf = parts[-1]
    parent = ".".join(parts[:-1])
    free = parent in FREE_FORM_KEYS and isinstance(node, (ml_collections.ConfigDict, dict))
    if not free and (not isinstance(node, (ml_collections.ConfigDict, dict)) or leaf not in node):
      raise ConfigError(f"unknown config key {key!r}{_close_matches(key, config)}; "
                        "run with --show-config to list the keys")
    value = _parse_value(raw)
    if leaf in node:
      value = _coerce(key, node[leaf], value)
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"config key {key!r}: {str(e).splitlines()[0]}") from e
  return config


def config_to_dict(config: Mapping) -> dict:
  """Plain JSON-able dict of a config (tuples become lists)."""
  return json.loads(ml_collections.ConfigDict(config).to_json_best_effort()
                    if not isinstance(config, ml_collections.ConfigDict)
                    else config.to_json_best_effort())


def config_fingerprint(config: Mapping, *, ignore: Sequence[str] = ()) -> str:
  """A short hash of the config's canonical JSON, without the top-level ``ignore`` keys."""
  d = config_to_dict(config)
  for k in ignore:
    d.pop(k, None)
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out.extend(_diff_keys(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}."))
    return out
  return [] if a == b else [prefix.rstrip(".")]


# Keys that may change between a run and its --resume without making it "another run".
RESUMABLE_KEYS = ("workdir", "resume", "overwrite", "train.resume", "train.progress")


def _drop_keys(d: dict, keys: Sequence[str]) -> dict:
  for k in keys:
    node = d
    parts = k.split(".")
    for p in parts[:-1]:
      node = node.get(p) if isinstance(node, dict) else None
      if node is None:
        break
    if isinstance(node, dict):
      node.pop(parts[-1], None)
  return d


def prepare_workdir(workdir: str | os.PathLike, config: Mapping | None, *,
                    resume: bool = False, overwrite: bool = False,
                    dry_run: bool = False) -> Path:
  """Checks that ``workdir`` may hold a run of ``config``, then records the config.

  Rules:
    * a new or empty directory: created, ``config.json`` written;
    * a directory holding a run of the same config: allowed with ``resume``
      (the run continues), cleared with ``overwrite``, otherwise refused;
    * a directory holding a run of a different config: cleared with ``overwrite``,
      otherwise refused (``resume`` does not change that) with the differing keys;
    * a non-empty directory that is not a dtl-jax work directory: always refused
      (``overwrite`` never deletes files this library did not write).

  Args:
    workdir: the directory.
    config: the run's config, or None to only check that ``workdir`` is usable for
      a fresh output (the demo and study scripts).
    resume: continue an existing run of the same config.
    overwrite: delete an existing dtl-jax run in ``workdir`` first.
    dry_run: only check (raise if refused); create, delete and write nothing.

  Returns:
    The directory as a ``Path``.

  Raises:
    WorkdirError: with a one-line message saying what to do.
  """
  path = Path(workdir)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"workdir {str(path)!r} is a file; pass a directory")
  new = _drop_keys({} if config is None else config_to_dict(config), RESUMABLE_KEYS)
  if path.is_dir() and any(path.iterdir()):
    marker = path / CONFIG_FILE
    if not marker.is_file():
      raise WorkdirError(
          f"workdir {str(path)!r} is not empty and holds no dtl-jax run "
          f"({CONFIG_FILE} missing); choose another --workdir (nothing was deleted)")
    try:
      old = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise WorkdirError(f"workdir {str(path)!r} has an unreadable {CONFIG_FILE} ({e}); "
                         "choose another --workdir") from e
    _drop_keys(old, RESUMABLE_KEYS)
    if overwrite:
      if not dry_run:
        shutil.rmtree(path)
    elif old != new:
      diff = _diff_keys(old, new)
      shown = ", ".join(diff[:5]) + (", ..." if len(diff) > 5 else "")
      raise WorkdirError(
          f"workdir {str(path)!r} holds a run of a different config (differs in: "
          f"{shown}); use another --workdir, or --overwrite to delete that run")
    elif not resume:
      raise WorkdirError(
          f"workdir {str(path)!r} already holds a run of this config; pass --resume "
          "to continue it or --overwrite to start again")
    else:
      return path
  if not dry_run:
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
  return path


# --------------------------------------------------------------------------- metadata


def _git(*args: str) -> str | None:
  try:
    here = Path(__file__).resolve().parent.parent
    out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True,
                         timeout=5, check=False)
    return out.stdout.strip() if out.returncode == 0 else None
  except (OSError, subprocess.SubprocessError):
    return None


def _commit_now() -> str | None:
  """``HEAD``'s short hash, with ``+dirty`` when tracked Python files differ from it."""
  head = _git("rev-parse", "--short", "HEAD")
  if head and _git("status", "--porcelain", "--untracked-files=no", "--", "*.py"):
    head += "+dirty"
  return head


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
  """Short hash of the commit this process's code came from (``+dirty`` if tracked
  ``.py`` files differed); ``None`` outside git.

  Pinned when the library is imported: a long study that runs while the repository
  moves on still records the commit its code was loaded from, not the one at the time
  it writes its report.
  """
  return _commit_now()


git_commit()  # pin it when the library is imported


def versions() -> dict[str, str]:
  """Versions of Python and the numerical packages a result depends on."""
  import importlib.metadata as md
  out = {"python": platform.python_version()}
  for dist in ("dtl-jax", "jax", "jaxlib", "flax", "optax", "numpy",
               "orbax-checkpoint", "ml-collections"):
    try:
      out[dist] = md.version(dist)
    except md.PackageNotFoundError:
      pass
  return out


def machine() -> dict[str, Any]:
  """The machine a result was produced on: OS, CPU, core count, JAX devices."""
  info: dict[str, Any] = {
      "platform": platform.platform(),
      "processor": platform.processor() or platform.machine(),
      "cpu_count": os.cpu_count(),
  }
  if hasattr(os, "sched_getaffinity"):  # cores this process may run on (taskset, cgroups)
    info["cpu_affinity_count"] = len(os.sched_getaffinity(0))
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          info["cpu_model"] = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  if "jax" in sys.modules:
    import jax
    devices = jax.devices()
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = f"{len(devices)} x {devices[0].device_kind}"
  return info


def run_metadata(*, config: Mapping | None = None, seeds: Sequence[int] | None = None,
                 command: str | None = None) -> dict[str, Any]:
  """Everything needed to say where a result came from."""
  meta: dict[str, Any] = {
      "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
      "command": command if command is not None else " ".join(
          [Path(sys.argv[0]).name] + sys.argv[1:]),
      "git_commit": git_commit(),
      "versions": versions(),
      "machine": machine(),
  }
  if seeds is not None:
    meta["seeds"] = [int(s) for s in seeds]
  if config is not None:
    meta["config"] = config_to_dict(config)
  return meta


OUTPUT_MARKER = "dtl_jax_output.json"


def prepare_output_dir(out: str | os.PathLike, *, overwrite: bool = False,
                       what: str = "results") -> Path:
  """Makes ``out`` ready for fresh result files of the demo or a study script.

  An existing non-empty ``out`` is refused unless ``overwrite`` is given AND it holds
  results written by dtl-jax (the marker file ``dtl_jax_output.json``); then only the
  files listed in that marker are removed. Files this library did not write are never
  deleted.

  Raises:
    WorkdirError: with a one-line message (pass --overwrite or another --out).
  """
  path = Path(out)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"output {str(path)!r} is a file; pass a directory with --out")
  if path.is_dir() and any(path.iterdir()):
    marker = path / OUTPUT_MARKER
    if not overwrite:
      raise WorkdirError(f"{str(path)!r} already holds {what}; pass --overwrite to replace "
                         "them or --out DIR for a new directory")
    if not marker.is_file():
      raise WorkdirError(f"{str(path)!r} is not empty and was not written by dtl-jax; "
                         "choose another --out (nothing was deleted)")
    try:
      info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
      info = {"in_progress": True}
    # A run that did not finish wrote everything in the directory (it was empty or
    # ours when it started); a finished one lists its entries.
    names = ([p.name for p in path.iterdir()] if info.get("in_progress")
             else info.get("files", []))
    for name in names:
      f = path / name
      if f.resolve().parent != path.resolve() or name == OUTPUT_MARKER:
        continue
      if f.is_dir() and not f.is_symlink():
        shutil.rmtree(f)
      elif f.exists() or f.is_symlink():
        f.unlink()
    marker.unlink()
  path.mkdir(parents=True, exist_ok=True)
  (path / OUTPUT_MARKER).write_text(json.dumps({"what": what, "in_progress": True}) + "\n")
  return path


def finish_output_dir(out: str | os.PathLike, *, what: str) -> Path:
  """Writes the marker listing every file now in ``out`` (see :func:`prepare_output_dir`)."""
  path = Path(out)
  files = sorted(p.name for p in path.iterdir() if p.name != OUTPUT_MARKER)
  (path / OUTPUT_MARKER).write_text(json.dumps({"what": what, "in_progress": False,
                                                "files": files}, indent=2) + "\n")
  return path


# ------------------------------------------------------------------ training runs

# The label-free criterion whose choice fills the "selected" column of the tables
# (all criteria are kept in the JSON files). DEV (You et al., ICML 2019) was designed
# for domain adaptation: importance-weighted source-validation risk with a control
# variate.
DEFAULT_SELECTION = "dev"


def base_config() -> ml_collections.ConfigDict:
  """The training engine's default config (every key ``dtl_jax.train`` knows)."""
  from dtl_jax.train.loop import default_config
  return default_config()


# Per-method hyperparameters for the digits protocol (TLlib defaults where they exist).
DIGITS_METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "source_only": {},
    "ddc": {},
    "dan": {},
    "jan": {},
    "deep_coral": {},
    "dann": {},
    "cdan": {},
    "cdan_e": {},
    "mdd": {},
    # WDGRL's default trade_off 1.0 wipes out the source classifier here: with a constant
    # reversal the source accuracy fell to chance within 100 steps on every shift; with
    # the warm start still on digits_m→digits (seed 0: source 21%). 0.1 trains.
    "wdgrl": {"trade_off": 0.1},
    "domain_confusion": {},
}


def digits_config(method: str = "source_only", *, source: str = "digits",
                  target: str = "digits_m", seed: int = 0, steps: int = 500,
                  eval_every: int = 100, image_size: int = 16) -> ml_collections.ConfigDict:
  """The bundled-digits protocol used by ``dtl-jax demo`` and the digits benchmark.

  The two domains are disjoint halves of scikit-learn's 8x8 digits, upsampled to
  ``image_size`` (16: larger sizes add compute, not information; LeNet also takes the
  TLlib size 28). LeNet (TLlib digits version) + 256-d bottleneck + linear head, TLlib
  SGD (lr 0.01, Nesterov momentum 0.9, weight decay 1e-3, lr decay
  ``(1 + 1e-3 i)^-0.75``), 32 source + 32 target images per step, evaluation (and
  label-free selection) every ``eval_every`` steps, one checkpoint kept.
  """
  c = base_config()
  c.seed = seed
  c.method = method
  c.method_kwargs = ml_collections.ConfigDict(DIGITS_METHOD_KWARGS.get(method, {}))
  c.data.source = source
  c.data.target = target
  c.data.domain_kwargs = ml_collections.ConfigDict({"size": int(image_size)})
  c.data.batch_size = 32
  c.model.backbone = "lenet"
  c.model.bottleneck_dim = 256
  c.optim.kind = "sgd"
  c.optim.learning_rate = 0.01
  c.train.num_steps = steps
  c.train.eval_every = eval_every
  c.train.log_every = min(50, steps)
  c.train.checkpoint_every = steps
  c.train.keep_checkpoints = 1
  return c


# Backbones with a ``dropout`` attribute (``model.backbone_kwargs.dropout``).
_DROPOUT_BACKBONES = ("lenet", "mlp")


# ADDA stage 2's optimizer: Adam at lr 2e-4 with beta1 = 0.5, constant, no weight decay
# (the GAN-style settings of the ADDA paper's adversarial stage).
ADDA_STAGE2_OPTIM = {"kind": "adam", "learning_rate": 2e-4, "b1": 0.5, "b2": 0.999,
                     "lr_gamma": 0.0, "weight_decay": 0.0}


def adda_stage2(config: ml_collections.ConfigDict, init_from: str) -> ml_collections.ConfigDict:
  """Turns a ``source_only`` config into ADDA's stage 2 starting from ``init_from``.

  Sets ``method="adda"``, ``method_kwargs.stage=2`` and ``init_from``, and:

  * switches dropout off in the (target) encoder: the frozen stage-1 source model runs
    in inference mode, so dropout on the target branch alone lets the discriminator
    tell the domains apart by the noise, and the encoder then destroys its features
    trying to hide it (measured on digits: target accuracy fell to chance within 100
    steps with dropout);
  * trains the target encoder and the discriminator with :data:`ADDA_STAGE2_OPTIM`
    (Adam, lr 2e-4, beta1 0.5, constant, no weight decay) instead of the SGD protocol
    of stage 1. Stage 2 has no classification loss to anchor the encoder; with TLlib's
    SGD (lr 0.01, momentum 0.9) the encoder lost the discriminator game and its
    features on every digits shift (digits_m→digits, seed 0: 87.7% source-only, 9.5%
    after stage 2; with these settings 84.9%, and above source-only on the two harder
    shifts).
  """
  config.method = "adda"
  config.method_kwargs = ml_collections.ConfigDict({"stage": 2})
  config.init_from = str(init_from)
  config.model.bottleneck_dropout = 0.0
  if config.model.backbone in _DROPOUT_BACKBONES:
    config.model.backbone_kwargs.dropout = 0.0
  config.optim.update(ADDA_STAGE2_OPTIM)
  return config


def check_run_config(config: Mapping) -> None:
  """Validates names a run needs before anything is written (one-line ValueErrors).

  Checks the method name, the bundled domain names (or that an image folder exists)
  and the backbone name.
  """
  from dtl_jax import methods
  method = config.get("method")
  if method is not None and method not in methods.METHODS:
    raise ConfigError(f"unknown method {method!r}; choose one of "
                      f"{', '.join(sorted(methods.METHODS))} (config key 'method')")
  pretrained = config.get("pretrained")
  if pretrained and not Path(str(pretrained)).expanduser().is_file():
    raise ConfigError(f"pretrained weights {str(pretrained)!r} do not exist; convert or "
                      "download a torchvision ResNet state dict there (.safetensors, .npz "
                      "or .pth), or set --config.pretrained=''")
  data = config.get("data")
  if data is not None:
    from dtl_jax.data import available_domains
    known = available_domains()
    for role in ("source", "target"):
      name = data.get(role)
      if name is None:
        continue
      if name in known or str(name).startswith(TFDS_PREFIX):
        continue
      if str(name).startswith(FOLDER_PREFIX):
        root = str(name)[len(FOLDER_PREFIX):]
        if not Path(root).expanduser().is_dir():
          raise ConfigError(f"data folder {root!r} (data.{role}) does not exist; place "
                            "the images as <folder>/<class_name>/*.jpg (see the README's "
                            "'Real datasets' section)")
        continue
      raise ConfigError(f"unknown dataset {name!r} (data.{role}); bundled: "
                        f"{', '.join(sorted(known))}; or folder:<path> / tfds:<name>")


# Top-level config keys read by dtl-jax itself (not by the training engine):
#   pretrained        -- torchvision ResNet state dict (.safetensors / .npz / .pth) for the
#                        backbone, converted at start (write_pretrained_init);
#   image_size        -- resize of folder:/tfds: domains (default 224);
#   normalize_imagenet -- ImageNet mean/std normalization of folder:/tfds: images.
RUNNER_KEYS = ("pretrained", "image_size", "normalize_imagenet")


def _split_runner_keys(config: ml_collections.ConfigDict
                       ) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  d = config_to_dict(config)
  extras = {k: d.pop(k) for k in RUNNER_KEYS if k in d}
  return ml_collections.ConfigDict(d), extras


def register_config_domains(config: Mapping) -> None:
  """Registers the ``folder:`` / ``tfds:`` domains a config names (no-op for bundled)."""
  size = int(config.get("image_size", 224) or 224)
  norm = bool(config.get("normalize_imagenet", False))
  for role in ("source", "target"):
    name = str(config["data"][role])
    if name.startswith((FOLDER_PREFIX, TFDS_PREFIX)):
      register_external_domain(name, size=size, normalize_imagenet=norm)


def train_config(config: ml_collections.ConfigDict, *, workdir: str | os.PathLike,
                 resume: bool = False, progress: bool = True) -> dict[str, Any]:
  """Runs :func:`dtl_jax.train.fit` on ``config`` in ``workdir``; returns its result.

  Handles the dtl-jax-level keys first (:data:`RUNNER_KEYS`): registers ``folder:`` /
  ``tfds:`` domains and converts a ``pretrained`` ResNet state dict into an
  ``init_from`` run (``workdir/pretrained_init``).
  """
  from dtl_jax.train.loop import fit
  full = ml_collections.ConfigDict(config)
  register_config_domains(full)
  engine_cfg, extras = _split_runner_keys(full)
  engine_cfg.train.resume = bool(resume)
  engine_cfg.train.progress = bool(progress)
  workdir = Path(workdir)
  if extras.get("pretrained") and not resume:
    src = load_run_domain(engine_cfg, engine_cfg.data.source)
    init = write_pretrained_init(extras["pretrained"], engine_cfg, workdir / "pretrained_init",
                                 num_classes=src.num_classes, example_shape=src.input_shape)
    engine_cfg.init_from = str(init)
  result = fit(engine_cfg, str(workdir))
  # fit records the engine's keys; keep dtl-jax's own keys too (eval and --resume).
  saved = json.loads((workdir / CONFIG_FILE).read_text())
  saved.update(extras)
  if extras.get("pretrained"):
    saved["init_from"] = config_to_dict(full).get("init_from", "")
  (workdir / CONFIG_FILE).write_text(json.dumps(saved, indent=2) + "\n")
  return result


def result_summary(result: Mapping[str, Any], *, selection: str = DEFAULT_SELECTION
                   ) -> dict[str, Any]:
  """Target accuracies (%) of one run: label-free selected, last step, oracle.

  Returns:
    ``{"selected": acc at the checkpoint ``selection`` picks, "selected_step",
    "last": acc at the last step, "oracle": best target acc over all evaluations
    (uses target labels: an upper bound, never a selection rule), "by_criterion":
    {criterion: acc}, "source_acc": source test acc at the last step}``.
  """
  sel = result["selected"]
  if selection not in sel:
    raise ValueError(f"selection criterion {selection!r} not in the run's criteria "
                     f"{sorted(k for k in sel if k != 'last')}")
  hist = result.get("history") or []
  oracle = max((h["oracle_target_acc"] for h in hist), default=None)
  return {
      "selected": 100 * sel[selection]["target_acc"],
      "selected_step": sel[selection]["step"],
      "last": 100 * result["last"]["target_acc"],
      "oracle": None if oracle is None else 100 * oracle,
      "by_criterion": {k: 100 * v["target_acc"] for k, v in sel.items() if k != "last"},
      "source_acc": 100 * result["last"]["source_acc"],
      "steps": result["steps"],
  }


def summarize_result(result: Mapping[str, Any], config: Mapping | None = None) -> str:
  """A short human-readable summary of a ``fit`` result."""
  s = result_summary(result)
  lines = [f"method {result['method']}: {s['steps']} steps, "
           f"{result.get('steps_per_second', float('nan')):.1f} steps/s",
           f"  target acc. at the label-free selected checkpoint ({DEFAULT_SELECTION}, step "
           f"{s['selected_step']}): {s['selected']:.2f}%",
           f"  target acc. at the last step: {s['last']:.2f}%",
           f"  oracle (best target acc. over evaluations; uses target labels): "
           f"{s['oracle']:.2f}%",
           "  by criterion: " + ", ".join(f"{k} {v:.2f}%" for k, v in s["by_criterion"].items())]
  return "\n".join(lines)


# ------------------------------------------------------------------ eval and measure


def load_run(workdir: str | os.PathLike, *, step: int | None = None):
  """Restores a trained run: ``(config, model, variables, step)``.

  ``variables`` are the model's ``{"params", "batch_stats"}`` at checkpoint ``step``
  (default: the latest); ``model`` is built from the run's ``config.json``.
  """
  from dtl_jax.train import loop
  workdir = Path(workdir)
  try:
    config = ml_collections.ConfigDict(json.loads((workdir / CONFIG_FILE).read_text()))
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f"{str(workdir)!r} holds no readable {CONFIG_FILE}; pass the "
                       "--workdir of a `dtl-jax train` run") from e
  ckpt_dir = workdir / "checkpoints"
  if not ckpt_dir.is_dir():
    raise WorkdirError(f"{str(workdir)!r} has no checkpoints/ (did the run start?)")
  from dtl_jax.train.checkpoint import Checkpointer
  ckpt = Checkpointer(str(ckpt_dir), max_to_keep=10**6)
  try:
    steps = sorted(ckpt.all_steps())
    if not steps:
      raise WorkdirError(f"{str(workdir)!r} has no checkpoint yet")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise WorkdirError(f"no checkpoint at step {step} in {str(workdir)!r}; "
                         f"available: {steps}")
    raw = ckpt.restore(None, step=step)
  finally:
    ckpt.close()
  source = load_run_domain(config, config.data.source)
  model = loop.build_model(config.model, source.num_classes)
  variables = {"params": raw["params"]["model"], "batch_stats": raw["batch_stats"]["model"]}
  return config, model, variables, int(step)


def load_run_domain(config: Mapping, name: str):
  """Loads domain ``name`` with the options a run of ``config`` used.

  The run's own source and target come from :func:`dtl_jax.train.load_domains` (the
  arrays ``fit`` used). Any other digits domain is drawn from the target's half of the
  raw images (pool ``"b"``, disjoint from the source's training images) with the
  source's channel count.
  """
  from dtl_jax.data import available_domains, load_domain
  from dtl_jax.data.digits import DIGITS_DOMAINS
  from dtl_jax.train.loop import load_domains
  if str(name).startswith((FOLDER_PREFIX, TFDS_PREFIX)):
    register_external_domain(str(name), size=int(config.get("image_size", 224) or 224),
                             normalize_imagenet=bool(config.get("normalize_imagenet", False)))
  if name not in available_domains():
    raise ConfigError(f"unknown dataset {name!r}; bundled: "
                      f"{', '.join(sorted(available_domains()))}")
  src_name, tgt_name = config.data.source, config.data.get("target") or ""
  if tgt_name:
    register_config_domains(config)
    source, target = load_domains(config)
    if name in (src_name, tgt_name):
      return source if name == src_name else target
  else:
    source = load_domain(src_name, seed=int(config.seed))
  kw = dict(config.data.get("domain_kwargs", {}) or {})
  if name in DIGITS_DOMAINS and src_name in DIGITS_DOMAINS:
    kw.setdefault("pool", "b")
    kw.setdefault("channels", int(source.input_shape[-1]))
  return load_domain(name, seed=int(config.seed), **kw)


def model_outputs(model, variables, x: np.ndarray, *, batch_size: int = 500,
                  keys: Sequence[str] = ("logits", "probs", "features")) -> dict:
  """Inference outputs of a restored model over ``x`` (numpy, batched)."""
  import jax
  from dtl_jax.train.state import apply_model

  @jax.jit
  def fwd(v, xb):
    out, _ = apply_model(model, v, xb, train=False)
    out = dict(out)
    out["probs"] = jax.nn.softmax(out["logits"], -1)
    return {k: out[k] for k in keys if k in out}

  res: dict[str, list] = {}
  for i in range(0, len(x), batch_size):
    xb = np.asarray(x[i:i + batch_size])
    for k, v in fwd(variables, xb).items():
      res.setdefault(k, []).append(np.asarray(v))
  return {k: np.concatenate(v) for k, v in res.items()}


def evaluate_workdir(workdir: str | os.PathLike, *, domain: str | None = None,
                     step: int | None = None, split: str = "test") -> dict[str, Any]:
  """Accuracy (and per-class accuracy) of a trained run on a domain's split."""
  if split not in ("train", "test"):
    raise ConfigError(f"--split must be 'train' or 'test', got {split!r}")
  config, model, variables, step = load_run(workdir, step=step)
  name = domain or config.data.target
  dom = load_run_domain(config, name)
  if dom.input_shape != load_run_domain(config, config.data.source).input_shape:
    raise ConfigError(f"domain {name!r} has inputs {dom.input_shape}, the run was trained "
                      "on a different shape")
  x, y = dom.split(split)
  logits = model_outputs(model, variables, x, keys=("logits",))["logits"]
  pred = logits.argmax(-1)
  per_class = {dom.class_names[c]: float(np.mean(pred[y == c] == c) * 100)
               for c in range(dom.num_classes) if np.any(y == c)}
  return {"workdir": str(workdir), "method": config.method, "step": step, "domain": name,
          "split": split, "num_examples": int(len(y)),
          "accuracy": float(np.mean(pred == y) * 100), "per_class_accuracy": per_class}


def measure(*, source: str, target: str, seed: int = 0, workdir: str | None = None,
            candidates: Sequence[str] = (), num_labeled: int = 100,
            num_permutations: int = 500, out: str | None = None,
            overwrite: bool = False) -> dict[str, Any]:
  """``dtl-jax measure``: discrepancy of a domain pair and transferability of candidates.

  Features: the ``features`` output of the run in ``workdir`` if given, else raw pixels.
  Candidates: trained runs (workdirs) scored by LogME, H-score and LEEP on
  ``num_labeled`` labeled target training examples (see
  :func:`dtl_jax.stats.measure_report`).
  """
  import jax
  from dtl_jax import stats
  if out is not None:
    prepare_output_dir(out, overwrite=overwrite, what="a measure report")
  cfg = base_config()
  cfg.seed = seed
  cfg.data.source = source
  cfg.data.target = target
  check_run_config(ml_collections.ConfigDict({"data": {"source": source, "target": target}}))
  src = load_run_domain(cfg, source)
  tgt = load_run_domain(cfg, target)
  if workdir:
    _, model, variables, _ = load_run(workdir)
    fs = model_outputs(model, variables, src.x_train, keys=("features",))["features"]
    ft = model_outputs(model, variables, tgt.x_train, keys=("features",))["features"]
    what = f"features of {workdir}"
  else:
    fs = src.x_train.reshape(len(src.x_train), -1)
    ft = tgt.x_train.reshape(len(tgt.x_train), -1)
    what = "raw inputs"
  n_l = min(num_labeled, len(tgt.x_train))
  feats, probs = {}, {}
  for w in candidates:
    _, model, variables, _ = load_run(w)
    o = model_outputs(model, variables, tgt.x_train[:n_l], keys=("features", "probs"))
    feats[str(w)] = o["features"]
    probs[str(w)] = o["probs"]
  rep = stats.measure_report(
      np.asarray(fs, np.float32), np.asarray(ft, np.float32), key=jax.random.key(seed),
      target_labels=tgt.y_train[:n_l] if candidates else None,
      candidates=feats or None, candidate_source_probs=probs or None,
      num_classes=tgt.num_classes, num_permutations=num_permutations)
  text = f"{source} -> {target} ({what}, seed {seed})\n" + rep.format()
  print(text)
  payload = {"source": source, "target": target, "features": what, "seed": seed,
             "report": rep.to_dict()}
  if out is not None:
    from dtl_jax import report as report_lib
    meta = run_metadata(seeds=[seed])
    (Path(out) / "measure.json").write_text(json.dumps(
        report_lib._jsonable({**payload, "metadata": meta}), indent=2) + "\n")  # pylint: disable=protected-access
    (Path(out) / "measure.md").write_text(
        f"# dtl-jax measure\n\n```\n{text}\n```\n\n" + report_lib._metadata_markdown(meta) + "\n")  # pylint: disable=protected-access
    finish_output_dir(out, what="measure report")
  return payload


# ------------------------------------------------- real datasets and pretrained weights

FOLDER_PREFIX = "folder:"
TFDS_PREFIX = "tfds:"


def register_external_domain(name: str, *, size: int, normalize_imagenet: bool = False,
                             data_dir: str | None = None) -> str:
  """Makes ``folder:<root>`` or ``tfds:<name>`` loadable by ``load_domain`` (and ``fit``).

  * ``folder:<root>``: ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` (the
    PyTorch "ants and bees" layout) give the train / test splits; a root with class
    folders directly (Office-31 ``amazon/images``, Office-Home ``Art``) is used whole
    for both splits, the TLlib protocol for unsupervised DA (the target is trained on
    without labels and tested on all its images).
  * ``tfds:<name>``: a prepared TFDS dataset under ``data_dir`` (``$TFDS_DATA_DIR``).

  Images are decoded once into memory, resized to ``size`` x ``size`` (plus ImageNet
  normalization if asked). The registry name is ``name`` itself.

  Raises:
    ConfigError: a missing folder (one line, saying where to place the data).
  """
  from dtl_jax.data import domain as domain_lib
  if name in domain_lib.available_domains():
    return name
  if name.startswith(FOLDER_PREFIX):
    root = Path(name[len(FOLDER_PREFIX):]).expanduser()
    if not root.is_dir():
      raise ConfigError(f"data folder {str(root)!r} does not exist; place the images as "
                        f"{root}/<class_name>/*.jpg (or {root}/train/... and {root}/val/...)"
                        ", see the README's 'Real datasets' section")

    def build(*, seed: int = 0) -> Any:
      del seed  # the split is given by the folder layout
      from dtl_jax.data import folder, transforms
      tf = transforms.resize_transform(size, normalize_imagenet=normalize_imagenet)
      splits = [root / "train", root / "val"] if (root / "train").is_dir() else [root, root]
      arrays, classes = [], None
      for d in splits:
        src = folder.ImageFolder(str(d), classes=classes, transform=tf)
        classes = src.classes
        x = src.get(np.arange(len(src))) if len(src) else np.zeros((0, size, size, 3))
        arrays.append((np.asarray(x, np.float32), src.labels))
      return domain_lib.Domain(
          name=name, x_train=arrays[0][0], y_train=arrays[0][1], x_test=arrays[1][0],
          y_test=arrays[1][1], num_classes=len(classes), class_names=tuple(classes),
          description=f"image folder {root}")
  elif name.startswith(TFDS_PREFIX):
    tfds_name = name[len(TFDS_PREFIX):]

    def build(*, seed: int = 0) -> Any:
      del seed
      from dtl_jax.data import load_tfds
      return load_tfds(tfds_name, data_dir=data_dir, size=size, channels=3)
  else:
    raise ConfigError(f"unknown dataset {name!r}; use a bundled name, "
                      f"'{FOLDER_PREFIX}<path>' or '{TFDS_PREFIX}<name>'")
  domain_lib.register_domain(name, f"external: {name}")(build)
  return name


def write_pretrained_init(state_dict: str | os.PathLike, config: ml_collections.ConfigDict,
                          workdir: str | os.PathLike, *, num_classes: int,
                          example_shape: Sequence[int]) -> Path:
  """Converts a torchvision ResNet state dict into a run ``fit`` can ``init_from``.

  The backbone gets the converted weights (``dtl_jax.models.load_torchvision_resnet``);
  bottleneck and head keep their fresh initialization (reported on stdout). Writes
  ``workdir/config.json`` and a step-0 checkpoint; set ``config.init_from = workdir``.
  """
  import jax
  import jax.numpy as jnp
  from dtl_jax import models
  from dtl_jax.train import loop, state as state_lib
  model = loop.build_model(config.model, num_classes)
  variables = state_lib.init_model_variables(model, jax.random.key(int(config.seed)),
                                             jnp.zeros((2, *example_shape), jnp.float32))
  depth = int(str(config.model.backbone).lower().replace("resnet", ""))
  loaded = models.load_torchvision_resnet(
      state_dict, models.ResNet(depth=depth, num_classes=None))
  for col in ("params", "batch_stats"):
    if "backbone" not in variables[col]:
      raise ConfigError("model.backbone must be a ResNet to load a torchvision state dict")
    variables[col]["backbone"] = jax.tree.map(jnp.asarray, loaded[col])
  workdir = Path(workdir)
  if workdir.exists():
    shutil.rmtree(workdir)
  workdir.mkdir(parents=True)
  (workdir / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
  st = state_lib.TrainState(step=jnp.zeros((), jnp.int32),
                            params={"model": variables["params"], "extra": {}},
                            batch_stats={"model": variables["batch_stats"], "extra": {}},
                            opt_state={}, rng=jax.random.key(0))
  from dtl_jax.train.checkpoint import Checkpointer
  ckpt = Checkpointer(str(workdir / "checkpoints"), max_to_keep=1)
  ckpt.save(0, st, force=True)
  ckpt.wait()
  ckpt.close()
  print(f"pretrained backbone loaded from {state_dict}; bottleneck and head freshly "
        "initialized")
  return workdir
