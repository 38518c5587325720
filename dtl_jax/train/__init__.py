"""Training engine: TrainState, one step body for jit / pmap / shard_map, the loop."""

from dtl_jax.train.checkpoint import (Checkpointer, restore_checkpoint, restore_into,
                                      save_checkpoint)
from dtl_jax.train.loop import TrainingDiverged, build_model, default_config, fit
from dtl_jax.train.optim import (FROZEN, default_rules, label_params, make_optimizer,
                                 tllib_schedule)
from dtl_jax.train.state import (TrainState, apply_model, init_model_variables,
                                 init_train_state, replace_extra, with_optimizer)
from dtl_jax.train.step import (accuracy_report, jit_step, make_eval_step, make_train_step,
                                place_batch, pmap_step, predict, replicate, shard_batch_for_pmap,
                                shard_map_step, unreplicate)

__all__ = [
    "Checkpointer", "save_checkpoint", "restore_checkpoint", "restore_into",
    "fit", "default_config", "build_model", "TrainingDiverged",
    "TrainState", "apply_model", "init_model_variables", "init_train_state", "replace_extra",
    "with_optimizer", "make_train_step", "make_eval_step", "jit_step", "pmap_step",
    "shard_map_step", "replicate", "unreplicate", "shard_batch_for_pmap", "place_batch",
    "predict", "accuracy_report", "make_optimizer", "tllib_schedule", "label_params",
    "default_rules", "FROZEN",
]
