"""Training engine: the train state, one step body for every driver, the loop.

* :func:`create_train_state` / :func:`make_train_step` -- the pure step
  ``(state, batch) -> (state, metrics)``; drivers (:mod:`.drivers`): ``jit``,
  ``pmap``, ``shard_map`` and ``sharded`` (jit over a Mesh with NamedSharding).
* :func:`fit` -- the loop over a run config (:mod:`dtl_jax.config`), with checkpoints,
  resume and label-free model selection (:mod:`.selection`).
"""

from dtl_jax.train.checkpoint import (
  Checkpointer,
  SelectedCheckpoints,
  restore_checkpoint,
  restore_into,
  save_checkpoint,
)
from dtl_jax.train.drivers import DRIVERS, Driver, driver_axis_name, make_driver
from dtl_jax.train.evaluation import Evaluator, accuracy_report, make_eval_step, predict
from dtl_jax.train.loop import TrainingDiverged, fit, load_domains, split_source_val
from dtl_jax.train.state import TrainState, apply_model, create_train_state
from dtl_jax.train.step import (
  jit_step,
  make_train_step,
  place_batch,
  pmap_step,
  replicate,
  shard_batch_for_pmap,
  shard_map_step,
  unreplicate,
)
from dtl_jax.train.workdir import WorkdirError, read_config, restore_model

__all__ = [
  "Checkpointer",
  "SelectedCheckpoints",
  "save_checkpoint",
  "restore_checkpoint",
  "restore_into",
  "DRIVERS",
  "Driver",
  "driver_axis_name",
  "make_driver",
  "Evaluator",
  "accuracy_report",
  "make_eval_step",
  "predict",
  "TrainingDiverged",
  "fit",
  "load_domains",
  "split_source_val",
  "TrainState",
  "apply_model",
  "create_train_state",
  "jit_step",
  "make_train_step",
  "place_batch",
  "pmap_step",
  "replicate",
  "shard_batch_for_pmap",
  "shard_map_step",
  "unreplicate",
  "WorkdirError",
  "read_config",
  "restore_model",
]
