"""Metric records of a run: ``metrics.jsonl`` and TensorBoard events (tensorboardX).

Each record is a flat dict with a ``"kind"`` (``"train"`` or ``"eval"``) and a ``"step"``.
A resumed run first drops what was written after the checkpoint it continues from, so
that every step appears once: lines of ``metrics.jsonl`` with a later step are removed,
and TensorBoard events of later steps are purged (tensorboardX's ``purge_step``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from dtl_jax.train import workdir as workdir_lib


class MetricWriter:
  """Appends records to ``workdir/metrics.jsonl`` and ``workdir/tb``.

  Args:
    workdir: the run directory.
    start_step: the step the run (re)starts from; records of later steps written by an
      earlier attempt are removed.
    enabled: write anything at all (False on processes other than 0).
    tensorboard: also write TensorBoard events.
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    start_step: int = 0,
    enabled: bool = True,
    tensorboard: bool = True,
  ):
    self.enabled = enabled
    self._file = None
    self._tb = None
    if not enabled:
      return
    path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    workdir_lib.truncate_jsonl(path, upto=start_step)
    self._file = open(path, "a")
    if tensorboard:
      SummaryWriter = _summary_writer_class()
      self._tb = SummaryWriter(
        os.path.join(workdir, workdir_lib.TB_DIR), purge_step=start_step + 1 if start_step else None
      )

  def write(self, record: Mapping[str, Any]) -> None:
    """Writes one record (numbers become TensorBoard scalars ``<kind>/<name>``)."""
    if not self.enabled or self._file is None:
      return
    self._file.write(json.dumps(dict(record), default=workdir_lib.json_default) + "\n")
    self._file.flush()
    if self._tb is not None:
      kind = record.get("kind", "train")
      for k, v in record.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
          self._tb.add_scalar(f"{kind}/{k}", v, record["step"])

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _summary_writer_class() -> Any:
  """tensorboardX's ``SummaryWriter``, imported without importing PyTorch.

  ``tensorboardX.writer`` runs ``try: import torch`` when it is imported (to accept torch
  tensors). With PyTorch installed that one import took as long as importing JAX itself
  (issue 15: ~3.7 s of a JAX run's start-up on the loaded development machine), for
  tensors a JAX run never passes. Unless PyTorch is already loaded, ``import torch`` is
  made to fail during that import only (``sys.modules["torch"] = None``, the documented
  way to block an import) and unblocked right after; a later ``import torch`` works.
  """
  block = "torch" not in sys.modules
  if block:
    sys.modules["torch"] = None  # type: ignore[assignment]
  try:
    from tensorboardX import SummaryWriter
  finally:
    if block and "torch" in sys.modules and sys.modules["torch"] is None:
      del sys.modules["torch"]
  return SummaryWriter
