"""A run's directory: what it holds, who may reuse it, and re-opening its model.

A run directory (``workdir``) holds::

  config.json      the run's config (written once, by :func:`prepare`; the only writer)
  checkpoints/     orbax checkpoints of the train state (the latest few)
  selected/<step>  the checkpoints the label-free criteria pick
  metrics.jsonl    one JSON object per training log / evaluation
  tb/              TensorBoard events (tensorboardX)
  history.json     the evaluation records (rewritten at each evaluation)
  result.json      what :func:`dtl_jax.train.fit` returned (at the end)

Rules (:func:`check`), applied before anything is built or written:

* a new or empty directory: used;
* a directory holding a run that never saved a checkpoint (it failed or was stopped
  before): cleared and used (nothing of value is lost, a corrected re-run just works);
* a run of the same config: continued with ``resume``, cleared with ``overwrite``,
  otherwise refused;
* a run of a different config: cleared with ``overwrite``, otherwise refused, naming the
  keys that differ;
* a non-empty directory without ``config.json``: always refused (``overwrite`` never
  deletes files this library did not write).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from dtl_jax import config as config_lib

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
SELECTED = "selected"
METRICS_FILE = "metrics.jsonl"
HISTORY_FILE = "history.json"
RESULT_FILE = "result.json"
TB_DIR = "tb"
#: Keys that may differ between a run and its continuation (``train.resume``), and
#: between the processes of a multi-process run (``process_id``): they change neither
#: the batches nor the updates (the input pipeline's batches do not depend on how many
#: threads or workers decode them).
RESUMABLE_KEYS = (
  "train.resume",
  "train.progress",
  "train.stop_at_step",
  "train.process_id",
  "train.coordinator_address",
  "data.workers",
  "data.threads",
  "data.prefetch",
)
#: The entries a run writes (what ``overwrite`` and a restart remove).
RUN_ENTRIES = (CONFIG_FILE, CHECKPOINTS, SELECTED, METRICS_FILE, HISTORY_FILE, RESULT_FILE, TB_DIR)


class WorkdirError(ValueError):
  """A run directory that cannot be used as asked (the message is one line)."""


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config a run was made with (its ``config.json``)."""
  path = Path(workdir) / CONFIG_FILE
  try:
    return config_lib.from_dict(json.loads(path.read_text()))
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(
      f"{str(workdir)!r} holds no dtl-jax run (no readable {CONFIG_FILE}); "
      "pass the "
      "directory of a `dtl-jax train` run"
    ) from e


def checkpoint_steps(workdir: str | os.PathLike, where: str = CHECKPOINTS) -> list[int]:
  """Steps saved under ``workdir/checkpoints`` (or ``workdir/selected``), ascending."""
  d = Path(workdir) / where
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir())


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
  flat = config_lib.flatten(config_lib.config_to_dict(config))
  return {k: v for k, v in flat.items() if k not in RESUMABLE_KEYS}


def check(
  workdir: str | os.PathLike,
  config: Mapping[str, Any],
  *,
  resume: bool = False,
  overwrite: bool = False,
) -> str:
  """Decides what :func:`prepare` will do with ``workdir``; writes nothing.

  Returns:
    ``"new"`` (empty or missing), ``"restart"`` (an earlier attempt of a run that saved
    no checkpoint, or ``overwrite``: its files will be removed) or ``"resume"``.

  Raises:
    WorkdirError: the rules in the module docstring refuse it (one line, saying what to
      do).
  """
  path = Path(workdir)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"workdir {str(path)!r} is a file; pass a directory")
  if not path.is_dir() or not any(path.iterdir()):
    return "new"
  marker = path / CONFIG_FILE
  if not marker.is_file():
    raise WorkdirError(
      f"workdir {str(path)!r} is not empty and holds no dtl-jax run "
      f"({CONFIG_FILE} missing); choose another workdir (nothing was "
      "deleted)"
    )
  try:
    old = _comparable(json.loads(marker.read_text()))
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(
      f"workdir {str(path)!r} has an unreadable {CONFIG_FILE} ({e}); choose another workdir"
    ) from e
  if overwrite or not checkpoint_steps(path):
    return "restart"
  new = _comparable(config)
  if old != new:
    diff = sorted(
      k for k in set(old) | set(new) if old.get(k, "<missing>") != new.get(k, "<missing>")
    )
    shown = ", ".join(diff[:5]) + (", ..." if len(diff) > 5 else "")
    raise WorkdirError(
      f"workdir {str(path)!r} holds a run of a different config (differs "
      f"in: {shown}); use another workdir, or --overwrite to delete that "
      "run"
    )
  if not resume:
    raise WorkdirError(
      f"workdir {str(path)!r} already holds a run of this config; pass "
      "--resume (train.resume = True) to continue it or --overwrite to "
      "start again"
    )
  return "resume"


def prepare(
  workdir: str | os.PathLike,
  config: Mapping[str, Any],
  *,
  resume: bool = False,
  overwrite: bool = False,
) -> str:
  """Applies :func:`check`'s decision: removes a previous attempt's files when
  restarting, creates the directory and writes ``config.json``. Returns the decision."""
  decision = check(workdir, config, resume=resume, overwrite=overwrite)
  path = Path(workdir)
  if decision == "restart":
    for name in RUN_ENTRIES:
      p = path / name
      if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
      elif p.exists() or p.is_symlink():
        p.unlink()
  path.mkdir(parents=True, exist_ok=True)
  if decision != "resume":
    write_json(path / CONFIG_FILE, config_lib.config_to_dict(config))
  return decision


def write_json(path: str | os.PathLike, payload: Any, *, indent: int | None = 1) -> None:
  """Writes JSON atomically (a temporary file renamed over ``path``)."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(payload, indent=indent, default=json_default) + "\n")
  os.replace(tmp, path)


def json_default(o: Any) -> Any:
  """JSON for NumPy scalars and arrays."""
  if isinstance(o, (np.floating, np.integer, np.bool_)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


def read_history(workdir: str | os.PathLike, *, upto: int) -> list[dict[str, Any]]:
  """The evaluation records of steps ``<= upto`` (a resumed run continues them)."""
  p = Path(workdir) / HISTORY_FILE
  if not p.is_file():
    return []
  return [r for r in json.loads(p.read_text()) if r["step"] <= upto]


def restore_model(
  workdir: str | os.PathLike, *, step: int | None = None, selected: str | None = None
) -> tuple[ml_collections.ConfigDict, Any, dict[str, Any], int]:
  """Re-opens a run's model: ``(config, model, variables, step)``.

  The model is rebuilt from the run's ``config.json`` (its class count read from the
  checkpoint's head), ``variables`` are its ``{"params", "batch_stats"}`` at

  * ``step``: a step under ``checkpoints/`` or ``selected/``;
  * ``selected``: the step a label-free criterion picked (``"dev"``, ``"snd"``, ...,
    from ``result.json``), kept under ``selected/``;
  * neither: the latest checkpoint.

  Raises:
    WorkdirError: no run, no such step or criterion (the message lists what exists).
  """
  from dtl_jax import models
  from dtl_jax.train.checkpoint import Checkpointer

  path = Path(workdir)
  config = read_config(path)
  where = CHECKPOINTS
  if selected is not None:
    if step is not None:
      raise WorkdirError("give a step or a selection criterion, not both")
    step = selected_step(path, selected)
    where = SELECTED
  saved, picked = checkpoint_steps(path), checkpoint_steps(path, SELECTED)
  if step is None:
    if not saved:
      raise WorkdirError(f"{str(path)!r} has no checkpoint yet (did the run start?)")
    step = saved[-1]
  elif where == CHECKPOINTS and step not in saved:
    if step not in picked:
      raise WorkdirError(
        f"no checkpoint at step {step} in {str(path)!r}; available: "
        f"{sorted(set(saved) | set(picked))}"
      )
    where = SELECTED
  if step not in checkpoint_steps(path, where):
    raise WorkdirError(f"the checkpoint of step {step} is not in {str(path / where)!r}")
  with Checkpointer(path / where, max_to_keep=1_000_000) as ckpt:
    raw = ckpt.restore(None, step=step)
  variables = {
    "params": raw["params"]["model"],
    "batch_stats": raw.get("batch_stats", {}).get("model", {}),
  }
  num_classes = int(np.shape(variables["params"]["head"]["fc"]["bias"])[0])
  model = models.build(config.model, num_classes=num_classes)
  return config, model, variables, int(step)


def selected_step(workdir: str | os.PathLike, criterion: str) -> int:
  """The step criterion ``criterion`` picked in a finished run (its ``result.json``)."""
  p = Path(workdir) / RESULT_FILE
  try:
    picks = json.loads(p.read_text())["selected"]
  except (OSError, json.JSONDecodeError, KeyError) as e:
    raise WorkdirError(
      f"{str(workdir)!r} has no {RESULT_FILE} with selections (has the run finished?)"
    ) from e
  choices = sorted(k for k in picks if k != "last")
  if criterion not in picks or criterion == "last":
    raise WorkdirError(
      f"no selection {criterion!r} in {str(workdir)!r}; choose one of "
      f"{', '.join(choices)} (or --step N)"
    )
  return int(picks[criterion]["step"])


def truncate_jsonl(path: str | os.PathLike, *, upto: int) -> None:
  """Keeps the records of steps ``<= upto`` in a JSON-lines file (resume)."""
  p = Path(path)
  if not p.is_file():
    return
  keep: Sequence[str] = [
    line
    for line in p.read_text().splitlines()
    if line.strip() and json.loads(line).get("step", 0) <= upto
  ]
  tmp = p.with_name(p.name + ".tmp")
  tmp.write_text("".join(line + "\n" for line in keep))
  os.replace(tmp, p)
