"""Checkpoints with orbax: save / restore a whole training state, load into new models.

* :class:`Checkpointer` wraps ``orbax.checkpoint.CheckpointManager``: save any pytree
  of arrays (a ``TrainState`` with params, batch statistics, optimizer state, step and
  RNG key), keep the last ``max_to_keep`` steps, restore bit-identically into the
  structure of a target state. Typed PRNG keys (``jax.random.key``) are stored as
  their key data and re-wrapped on restore.
* :func:`restore_into` loads the variables of a checkpoint (or of a converted state
  dict) into a freshly initialized model whose head differs, and reports which leaves
  were loaded and which were left at their initialization
  (:class:`~dtl_jax.models.convert.MergeReport`).

Example::

  ckpt = Checkpointer("/tmp/run1", max_to_keep=3)
  ckpt.save(step, state)                      # every few steps
  state = Checkpointer("/tmp/run1").restore(state_template)   # after a restart
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dtl_jax.models.convert import MergeReport, merge_variables


def _is_key(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_data(x: Any) -> Any:
  if isinstance(x, jax.ShapeDtypeStruct):
    return jax.eval_shape(jax.random.key_data, x)
  return jax.random.key_data(x)


def _keys_to_data(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda x: _key_data(x) if _is_key(x) else x, tree)


class Checkpointer:
  """Saves and restores training states in ``directory``, keeping the last k steps.

  Args:
    directory: checkpoint root (created if missing); one sub-directory per step.
    max_to_keep: number of most recent checkpoints kept (older ones are deleted).
    save_interval_steps: :meth:`save` only writes when ``step`` is a multiple of this
      (unless ``force=True``).
    async_save: write in a background thread (call :meth:`wait` before reading).
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    max_to_keep: int = 3,
    save_interval_steps: int = 1,
    async_save: bool = False,
  ):
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
    if save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      save_interval_steps=save_interval_steps,
      enable_async_checkpointing=async_save,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  @property
  def manager(self) -> ocp.CheckpointManager:
    """The underlying ``orbax.checkpoint.CheckpointManager``."""
    return self._manager

  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Saves ``state`` (any pytree of arrays) as ``step``; returns whether it was written.

    In a multi-process run every process must call this with its host-local copy of
    a replicated state (``pmap``); the copies are assembled into global arrays first.
    """
    state = _keys_to_data(state)
    if jax.process_count() > 1:
      state = _to_global(state)
    saved = self._manager.save(int(step), args=ocp.args.StandardSave(state), force=force)
    return bool(saved)

  def delete(self, step: int) -> None:
    """Deletes the checkpoint of ``step``."""
    self._manager.delete(int(step))

  def restore(self, target: Any = None, *, step: int | None = None) -> Any:
    """Restores ``step`` (default: the latest).

    Args:
      target: a state with the saved structure (e.g. a freshly initialized
        ``TrainState``; arrays or ``jax.ShapeDtypeStruct``); the result has its
        structure, dtypes, shardings and PRNG-key leaves. ``None`` returns the raw
        nested dicts.
      step: the step to restore.

    Raises:
      ValueError: no checkpoint in the directory, or ``step`` is not one of them.
    """
    self._manager.wait_until_finished()
    steps = self.all_steps()
    if not steps:
      raise ValueError(f"no checkpoint in {self.directory!r}")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise ValueError(f"step {step} not in {self.directory!r}; available steps: {steps}")
    if target is None:
      return self._manager.restore(step, args=ocp.args.StandardRestore())
    abstract = _keys_to_data(target)
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return jax.tree_util.tree_map(
      lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
      target,
      restored,
    )

  def latest_step(self) -> int | None:
    """The most recent saved step, ``None`` when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Saved steps, ascending."""
    return sorted(self._manager.all_steps())

  def step_directory(self, step: int) -> str | None:
    """The directory of the finished checkpoint of ``step``; ``None`` when there is none
    (or an asynchronous save of it is still being written)."""
    if self._manager.is_saving_in_progress() or int(step) not in self._manager.all_steps():
      return None
    path = os.path.join(self.directory, str(int(step)))
    return path if os.path.isdir(path) else None

  def add_copy(self, step: int, source: str) -> None:
    """Adds ``source`` (a finished checkpoint directory, e.g. another
    :class:`Checkpointer`'s :meth:`step_directory`) as this manager's ``step``, by hard
    links where the file system allows (no data written), else by copying; the copy is
    assembled under a temporary name and renamed into place, so an interrupted copy
    never looks like a checkpoint. One process only (``jax.process_count() == 1``)."""
    if jax.process_count() != 1:
      raise ValueError("add_copy: one process only; save the state in a multi-process run")
    step = int(step)
    if step in self._manager.all_steps():
      raise ValueError(f"add_copy: step {step} already exists in {self.directory}")
    tmp = os.path.join(self.directory, f".tmp-copy-{step}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
      shutil.copytree(source, tmp, copy_function=os.link)
    except OSError:  # another file system, or links not supported: copy the bytes
      shutil.rmtree(tmp, ignore_errors=True)
      shutil.copytree(source, tmp)
    os.rename(tmp, os.path.join(self.directory, str(step)))
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _to_global(state: Any) -> Any:
  """Host-local replicated arrays (from ``pmap``) -> global arrays orbax can save."""
  from orbax.checkpoint import utils as ocp_utils

  local = jax.sharding.NamedSharding(
    jax.sharding.Mesh(np.asarray(jax.local_devices()), ("local",)), jax.sharding.PartitionSpec()
  )
  return jax.tree_util.tree_map(
    lambda x: ocp_utils.fully_replicated_host_local_array_to_global_array(
      jax.device_put(jnp.asarray(x), local)
    ),
    state,
  )


class SelectedCheckpoints:
  """Keeps the checkpoints that label-free selection criteria pick, and only those.

  ``directory/<step>`` holds the state of every step that some criterion currently
  picks (:func:`dtl_jax.train.selection.select`); when a later evaluation changes a
  pick, the checkpoint no criterion picks any more is deleted.

  Args:
    directory: where the picked checkpoints live (``workdir/selected``).
    criteria: the selection criteria (``config.train.selection``).
  """

  def __init__(self, directory: str | os.PathLike, criteria: Sequence[str]):
    self.criteria = tuple(criteria)
    self._ckpt = Checkpointer(directory, max_to_keep=1_000_000)

  @property
  def directory(self) -> str:
    return self._ckpt.directory

  def update(
    self, history: Sequence[Mapping[str, Any]], state: Any, *, saved_at: str | None = None
  ) -> dict[str, Any]:
    """Saves ``state`` (of the last record in ``history``) if a criterion picks it,
    drops checkpoints nobody picks; returns the current picks.

    ``saved_at``: a finished checkpoint directory of this very state (``fit``'s regular
    checkpoint of the same step), added by hard links instead of writing the state a
    second time (one process only; otherwise ``state`` is saved)."""
    from dtl_jax.train.selection import select

    picks = select(history, self.criteria)
    needed = {v["step"] for k, v in picks.items() if k != "last"}
    step = int(history[-1]["step"])
    saved = set(self._ckpt.all_steps())
    if step in needed and step not in saved:
      if saved_at is not None and jax.process_count() == 1:
        self._ckpt.add_copy(step, saved_at)
      else:
        self._ckpt.save(step, state, force=True)
    for s in saved - needed:
      self._ckpt.delete(s)
    return picks

  def steps(self) -> list[int]:
    """The steps kept."""
    return self._ckpt.all_steps()

  def close(self) -> None:
    self._ckpt.close()


def save_checkpoint(
  directory: str | os.PathLike, step: int, state: Any, *, max_to_keep: int = 3
) -> None:
  """One-shot :meth:`Checkpointer.save` (keeps the last ``max_to_keep``)."""
  with Checkpointer(directory, max_to_keep=max_to_keep) as ckpt:
    ckpt.save(step, state, force=True)


def restore_checkpoint(
  directory: str | os.PathLike, target: Any = None, *, step: int | None = None
) -> Any:
  """One-shot :meth:`Checkpointer.restore`."""
  with Checkpointer(directory) as ckpt:
    return ckpt.restore(target, step=step)


def _get(tree: Any, name: str) -> Any:
  if isinstance(tree, Mapping):
    return tree.get(name)
  return getattr(tree, name, None)


def restore_into(
  source: str | os.PathLike | Checkpointer | Mapping[str, Any],
  new_variables: Mapping[str, Any],
  *,
  collections: Sequence[str] = ("params", "batch_stats"),
  subtree: str | None = None,
  at: str | None = None,
  include: str | None = None,
  step: int | None = None,
) -> tuple[dict[str, Any], MergeReport]:
  """Loads saved variables into a new model (e.g. same backbone, new head).

  Every leaf of ``new_variables`` whose path and shape exist in the source takes the
  saved value; the others (a new head, a resized classifier) keep their fresh
  initialization and are listed in the report.

  Args:
    source: a checkpoint directory or :class:`Checkpointer` (the saved state must have
      ``params`` / ``batch_stats`` entries, as a ``TrainState``), or variables already
      in memory (e.g. from :func:`dtl_jax.models.load_torchvision_resnet`).
    new_variables: ``{"params": ..., "batch_stats": ...}`` of the new model.
    collections: which collections to take from the source.
    subtree: inside each collection of the source, take this sub-path first (the train
      engine stores the model under ``"model"``).
    at: place the loaded variables under this path of the new model (``"backbone"``
      for a bare converted backbone).
    include: regex (fullmatch on ``"collection/a/b/c"``) of leaves allowed to load, e.g.
      ``"(params|batch_stats)/backbone/.*"`` to take only the backbone.
    step: checkpoint step (default latest).

  Returns:
    ``(variables, report)``.
  """
  if isinstance(source, Checkpointer):
    raw = source.restore(step=step)
  elif isinstance(source, (str, os.PathLike)):
    raw = restore_checkpoint(source, step=step)
  else:
    raw = source
  loaded = {}
  for c in collections:
    tree = _get(raw, c)
    if tree is None:
      continue
    if subtree:
      for name in subtree.strip("/").split("/"):
        tree = _get(tree, name)
        if tree is None:
          raise ValueError(f"subtree: {subtree!r} not found in the source's {c!r}")
    loaded[c] = jax.tree_util.tree_map(np.asarray, tree)
  if not loaded:
    raise ValueError(f"source has none of the collections {tuple(collections)}")
  return merge_variables(dict(new_variables), loaded, at=at, include=include)
