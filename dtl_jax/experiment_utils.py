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
  if ":" in spec and not os.path.exists(spec):
    path_str, arg = spec.rsplit(":", 1)
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


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Applies ``key.sub=value`` overrides to ``config`` in place (and returns it).

  Args:
    config: the config loaded by :func:`load_config`.
    overrides: strings ``"key=value"``; a leading ``--config.`` or ``config.`` is
      stripped. Values are parsed as Python literals (``3``, ``0.1``, ``(1, 2)``,
      ``true``, ``none``), anything else is a string.

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
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or leaf not in node:
      raise ConfigError(f"unknown config key {key!r}{_close_matches(key, config)}; "
                        "run with --show-config to list the keys")
    value = _coerce(key, node[leaf], _parse_value(raw))
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
RESUMABLE_KEYS = ("workdir", "resume", "overwrite")


def prepare_workdir(workdir: str | os.PathLike, config: Mapping | None, *,
                    resume: bool = False, overwrite: bool = False) -> Path:
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

  Returns:
    The directory as a ``Path``.

  Raises:
    WorkdirError: with a one-line message saying what to do.
  """
  path = Path(workdir)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"workdir {str(path)!r} is a file; pass a directory")
  new = {} if config is None else config_to_dict(config)
  for k in RESUMABLE_KEYS:
    new.pop(k, None)
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
    for k in RESUMABLE_KEYS:
      old.pop(k, None)
    if overwrite:
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
  path.mkdir(parents=True, exist_ok=True)
  (path / CONFIG_FILE).write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
  return path


# --------------------------------------------------------------------------- metadata


def _git_commit() -> str | None:
  try:
    here = Path(__file__).resolve().parent.parent
    out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, timeout=5, check=False)
    return out.stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


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
      "git_commit": _git_commit(),
      "versions": versions(),
      "machine": machine(),
  }
  if seeds is not None:
    meta["seeds"] = [int(s) for s in seeds]
  if config is not None:
    meta["config"] = config_to_dict(config)
  return meta
