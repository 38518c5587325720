"""Training engine: TrainState, one step body for jit / pmap / shard_map, the loop.

* :func:`create_train_state` / :func:`make_train_step` -- the pure step
  ``(state, batch) -> (state, metrics)``; drivers :func:`jit_step`, :func:`pmap_step`,
  :func:`shard_map_step`.
* :func:`fit` -- the loop over a ``ml_collections.ConfigDict`` (:func:`default_config`),
  with checkpoints, resume and label-free model selection (:mod:`.selection`).
"""

from dtl_jax.train.checkpoint import (Checkpointer, restore_checkpoint, restore_into,
                                      save_checkpoint)
from dtl_jax.train.loop import TrainingDiverged, build_model, default_config, fit, load_domains
from dtl_jax.train.optim import (FROZEN, default_rules, label_params, make_optimizer,
                                 tllib_schedule)
from dtl_jax.train.state import (TrainState, apply_model, create_train_state, extra_specs,
                                 init_model_variables, init_train_state, replace_extra,
                                 with_optimizer)
from dtl_jax.train.step import (accuracy_report, jit_step, make_eval_step, make_train_step,
                                place_batch, pmap_step, predict, replicate, shard_batch_for_pmap,
                                shard_map_step, unreplicate)

__all__ = [
    "Checkpointer", "save_checkpoint", "restore_checkpoint", "restore_into",
    "fit", "default_config", "build_model", "load_domains", "TrainingDiverged",
    "TrainState", "create_train_state", "extra_specs", "apply_model", "init_model_variables",
    "init_train_state", "replace_extra", "with_optimizer", "make_train_step",
    "make_eval_step", "jit_step", "pmap_step", "shard_map_step", "replicate", "unreplicate",
    "shard_batch_for_pmap", "place_batch", "predict", "accuracy_report", "make_optimizer",
    "tllib_schedule", "label_params", "default_rules", "FROZEN",
]
