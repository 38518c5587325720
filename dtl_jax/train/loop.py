"""The training loop: ``fit(config, workdir)``.

``config`` is the run config of :mod:`dtl_jax.config` (start from
:func:`dtl_jax.config.default_config`; every key is documented there). ``fit`` reads
it top to bottom in the style of flax's ``examples/imagenet/train.py``:

1. validate the whole config and the run directory rules; open the data; build the
   model, the method (and what it declares it needs), the train state and the step --
   nothing is written before all of this succeeded;
2. write ``config.json``, restore the latest checkpoint when resuming;
3. loop over steps: batch -> step -> metrics; evaluate with the label-free selection
   criteria, checkpoint, stop on request (Ctrl-C, ``train.stop_at_step``);
4. write ``result.json`` and return it.

The policies live in the modules that own them: devices in :mod:`.drivers`,
checkpoints and the selected-checkpoint policy in :mod:`.checkpoint`, the run
directory in :mod:`.workdir`, metric files in :mod:`.writer`, evaluation in
:mod:`.evaluation`. The loop never asks which method it runs: a method declares what it
needs in :meth:`dtl_jax.methods.Method.setup`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import flax.errors
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dtl_jax import config as config_lib
from dtl_jax import data, methods, models, xla_options
from dtl_jax.data import pipeline, streaming
from dtl_jax.train import drivers
from dtl_jax.train import selection as selection_lib
from dtl_jax.train import workdir as workdir_lib
from dtl_jax.train.checkpoint import Checkpointer, SelectedCheckpoints
from dtl_jax.train.evaluation import Evaluator, flat_record
from dtl_jax.train.interrupt import StopRequest
from dtl_jax.train.state import TrainState, create_train_state
from dtl_jax.train.step import make_train_step
from dtl_jax.train.timing import PhaseClock
from dtl_jax.train.writer import MetricWriter


class TrainingDiverged(RuntimeError):
  """The loss or the parameters became NaN / Inf (the message names the step)."""


def fit(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Any]:
  """Trains ``config.method`` as ``config`` says and selects checkpoints without target labels.

  Args:
    config: a run config (:func:`dtl_jax.config.default_config`, changed as needed);
      used as given, after :func:`dtl_jax.config.validate`.
    workdir: the run directory (:mod:`dtl_jax.train.workdir` for its rules); with
      ``config.train.resume`` an earlier run there continues from its latest checkpoint.
    overwrite: delete an earlier run of another config in ``workdir`` first.

  Returns:
    A dict, also written to ``workdir/result.json``::

      {"method", "steps", "interrupted", "steps_per_second", "warnings",
       "last": {"step", "target_acc", "source_acc"},
       "selected": {criterion: {"step", "score", "target_acc", "checkpoint"}},
       "history": [evaluation records],
       "timings": {"data_s", "build_s", "first_step_s", "steps_s", "eval_s",
                   "checkpoint_s", "finish_s", "total_s"}}

    (``timings``: wall-clock seconds of each phase, see :mod:`dtl_jax.train.timing`;
    ``first_step_s`` includes tracing and compiling the step, ``eval_s`` compiling
    the evaluation step.)

    plus ``"state"``, the final :class:`TrainState` (not written). ``target_acc``
    values are oracle numbers (target test labels), reported next to each label-free
    choice and never used to make it.

  Raises:
    dtl_jax.config.ConfigError: a config key that cannot be used (named).
    dtl_jax.train.workdir.WorkdirError: ``workdir`` holds another run.
    TrainingDiverged: the loss or the parameters became NaN / Inf.
  """
  clock = PhaseClock()
  config_lib.validate(config)
  tc = config.train
  if tc.multihost:
    _init_distributed(tc)
  is_main = jax.process_index() == 0
  workdir = Path(workdir)
  workdir_lib.check(workdir, config, resume=tc.resume, overwrite=overwrite)

  # Everything is built before anything is written: a bad config leaves no trace.
  # The domains are seen through the augmentation protocol's test transform; images of
  # folder: / tfds: domains stay on disk until a batch needs them (data.pipeline).
  source, target = load_domains(config)
  source_train, source_val = split_source_val(source, config.data.source_val_fraction, config.seed)
  clock.lap("data")
  train_transform, _ = pipeline.augmentation(config.data.augment, image_size=config.data.image_size)
  example_x = np.asarray(source_train.x_train[:2])
  axis = drivers.driver_axis_name(tc.driver)
  _check_batch_sizes(config)
  model = _keyed(
    "model", models.build, config.model, num_classes=source.num_classes, bn_axis_name=axis
  )
  eval_model = models.build(config.model, num_classes=source.num_classes)
  method = _keyed("method_kwargs", methods.build, config.method, **dict(config.method_kwargs))
  if not getattr(method, "uses_source", True):
    raise config_lib.ConfigError(
      f"method {config.method!r} adapts a trained model with target "
      "data only: run it with `dtl-jax adapt` (dtl_jax.train.adapt)"
    )
  key = jax.random.key(config.seed)
  variables = initial_variables(config, eval_model, key, example_x[:1])
  setup = method.setup(
    methods.SetupContext(
      model=eval_model,
      model_variables=variables,
      init_from=config.init_from,
      source_inputs=source_train.x_train,
      target_inputs=target.x_train,
      seed=config.seed,
      load_run=_load_run_model,
    )
  )
  state, tx = _keyed(
    "optim",
    create_train_state,
    eval_model,
    method,
    key=key,
    example_x=example_x,
    model_variables=variables,
    extra_variables=setup.extra_variables,
    freeze=tuple(config.model.freeze),
    **dict(config.optim),
  )
  driver = drivers.make_driver(
    tc.driver, make_train_step(model, method, tx, axis_name=axis, total_steps=tc.num_steps)
  )
  batches = _train_batches(config, source_train, target, train_transform, setup.source_weights)
  evaluator = _evaluator(config, eval_model, source, source_val, target)

  # The run directory: config.json (the one writer), then resume from a checkpoint.
  if is_main:
    workdir_lib.prepare(workdir, config, resume=tc.resume, overwrite=overwrite)
  _sync("prepared workdir")
  ckpt = Checkpointer(workdir / workdir_lib.CHECKPOINTS, max_to_keep=tc.keep_checkpoints)
  start = 0
  if tc.resume and ckpt.latest_step() is not None:
    state = ckpt.restore(state)
    start = int(state.step)
  history = workdir_lib.read_history(workdir, upto=start) if start else []
  writer = MetricWriter(workdir, start_step=start, enabled=is_main, tensorboard=tc.tensorboard)
  selected = (
    SelectedCheckpoints(workdir / workdir_lib.SELECTED, tc.selection) if tc.keep_selected else None
  )
  warnings: list[str] = []

  @clock.timed("eval")
  def evaluate(dev_state: Any, step: int) -> Any:
    """Records the evaluation of ``step``; returns the host state it evaluated."""
    host_state = driver.to_host(dev_state)
    record = evaluator(host_state, step)
    history.append(record)
    writer.write(flat_record(record))
    if is_main:
      workdir_lib.write_json(workdir / workdir_lib.HISTORY_FILE, history, indent=None)
    if (
      tc.chance_check
      and not warnings
      and step >= tc.chance_check * tc.num_steps
      and (message := evaluator.chance_warning(record))
    ):
      warnings.append(message)
      if is_main:
        print(f"dtl-jax: warning: {message}", file=sys.stderr, flush=True)
    return host_state

  @clock.timed("checkpoint")
  def keep_selected(host_state: Any, step: int) -> None:
    # After evaluate (history first: a run killed in between resumes with every record)
    # and after the regular checkpoint of this step, which a pick links instead of
    # writing the state a second time.
    if selected is not None:
      saved_at = ckpt.step_directory(step)  # None when this step has no regular checkpoint
      selected.update(history, host_state, saved_at=saved_at)

  @clock.timed("checkpoint")
  def save(dev_state: Any, step: int) -> None:
    host_state = driver.to_host(dev_state)
    _check_finite(host_state, step, ckpt.latest_step(), ckpt.directory)
    ckpt.save(step, host_state, force=True)

  dev_state = driver.put_state(state)
  step, window, interrupted = start, [], False
  stream = batches.stream(
    start,
    tc.num_steps,
    threads=config.data.threads,
    prefetch=config.data.prefetch,
    workers=config.data.workers,
  )
  clock.lap("build")
  t0 = time.perf_counter()
  with (
    StopRequest() as stop,
    _progress_bar(tc, start, method.name, is_main) as bar,
    contextlib.closing(stream),
  ):
    while step < tc.num_steps:
      batch = next(stream)
      dev_state, metrics = driver.step(dev_state, driver.put_batch(batch))
      step += 1
      window.append(metrics)
      if step == start + 1:  # tracing + compilation + the first step
        clock.lap("first_step", wait=metrics)
      if step % tc.log_every == 0 or step == tc.num_steps:
        record = train_record(
          window,
          step,
          steps_per_second=(step - start) / (time.perf_counter() - t0),
          last_checkpoint=ckpt.latest_step(),
          checkpoints=ckpt.directory,
        )
        window = []
        writer.write(record)
        bar.set_postfix(
          loss=f"{record['loss']:.3f}",
          acc=f"{record.get('source_acc', math.nan):.3f}",
          sps=f"{record['steps_per_second']:.1f}",
        )
      bar.update(1)
      evaluated = step % tc.eval_every == 0 or step == tc.num_steps
      host_state = evaluate(dev_state, step) if evaluated else None
      if step % tc.checkpoint_every == 0 or step == tc.num_steps:
        save(dev_state, step)
      if host_state is not None:
        keep_selected(host_state, step)
      if stop.requested or step == tc.stop_at_step:
        interrupted = True
        if ckpt.latest_step() != step:
          save(dev_state, step)
        bar.write(f"interrupted: checkpoint saved at step {step} in {workdir}")
        break
  clock.lap("steps", wait=dev_state)
  elapsed = time.perf_counter() - t0
  if not history or history[-1]["step"] != step:
    keep_selected(evaluate(dev_state, step), step)
  ckpt.close()
  if selected is not None:
    selected.close()
  result = _result(
    method.name,
    history,
    tc.selection,
    step=step,
    interrupted=interrupted,
    steps_per_second=(step - start) / elapsed if elapsed > 0 else math.nan,
    warnings=warnings,
    workdir=workdir,
    kept_selected=selected is not None,
  )
  clock.lap("finish")
  result["timings"] = clock.summary()
  if is_main:
    workdir_lib.write_json(workdir / workdir_lib.RESULT_FILE, result)
  writer.close()
  result["state"] = driver.to_host(dev_state)
  return result


def _train_batches(
  config: ml_collections.ConfigDict,
  source_train: Any,
  target: Any,
  transform: Any,
  source_weights: np.ndarray | None,
) -> pipeline.TrainBatches:
  """The run's training batches: this process's rows of step ``k``, a pure function of
  ``(config.seed, k)`` (:class:`dtl_jax.data.pipeline.TrainBatches`)."""
  return pipeline.TrainBatches(
    source_train.x_train,
    source_train.y_train,
    target.x_train,
    batch_size=config.data.batch_size,
    target_batch_size=config.data.target_batch_size or config.data.batch_size,
    seed=config.seed,
    transform=transform,
    source_weights=source_weights,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    target_sampling=config.data.target_sampling,
  )


def _evaluator(
  config: ml_collections.ConfigDict, eval_model: Any, source: Any, source_val: Any, target: Any
) -> Evaluator:
  """The run's evaluation: accuracies and the ``train.selection`` criteria."""
  return Evaluator(
    eval_model,
    source_val=source_val,
    source_test=(source.x_test, source.y_test),
    target_train=target.x_train,
    target_test=(target.x_test, target.y_test),
    batch_size=config.data.eval_batch_size,
    seed=config.seed,
    criteria=tuple(config.train.selection),
    threads=config.data.threads,
    prefetch=config.data.prefetch,
  )


# ------------------------------------------------------------------- building blocks


#: A domain as a run sees it: in memory, or streamed from disk.
Domain = data.Domain | streaming.StreamingDomain


def load_domains(config: Mapping[str, Any]) -> tuple[Domain, Domain]:
  """The ``(source, target)`` domains a run of ``config`` trains and evaluates on.

  Built from ``data.source``, ``data.target``, ``seed``, ``data.image_size``,
  ``data.normalize`` and ``data.domain_kwargs`` by :func:`dtl_jax.data.load_pair` (a
  run whose source and target are the same dataset -- plain fine-tuning -- gets that
  one domain twice), and seen as the run's model sees them in evaluation: through the
  test transform of ``data.augment`` (:func:`dtl_jax.data.pipeline.augmentation`).
  Bundled domains without augmentation are in-memory :class:`~dtl_jax.data.Domain`
  arrays; ``folder:`` / ``tfds:`` domains, and any domain seen through a transform, are
  :class:`~dtl_jax.data.streaming.StreamingDomain` views whose rows are decoded when
  read. Everything that re-opens a run (``dtl-jax eval`` / ``measure``) calls this with
  the run's saved config, so it sees exactly the inputs the run used.

  Raises:
    ConfigError: a domain that cannot be loaded with these options (names the key).
  """
  d = config["data"]
  options = dict(d["domain_kwargs"])
  if d["normalize"] != "none":
    options["normalize"] = d["normalize"]
  try:
    if d["source"] != d["target"]:
      source, target = data.load_pair(
        d["source"],
        d["target"],
        seed=int(config["seed"]),
        image_size=int(d["image_size"]) or None,
        **options,
      )
    else:
      if d["image_size"] and "size" in data.domain_options(d["source"]):
        options["size"] = int(d["image_size"])
      source = target = data.load_domain(d["source"], seed=int(config["seed"]), **options)
  except (ValueError, OSError) as e:
    raise config_lib.ConfigError(
      f"data ({d['source']} -> {d['target']}): {str(e).splitlines()[0]}"
    ) from e
  if d["augment"] != "none" and len(source.input_shape) != 3:
    raise config_lib.ConfigError(
      f"data.augment={d['augment']!r} needs image domains; {d['source']!r} has "
      f"{source.input_shape} inputs (use 'none')"
    )
  _, test_transform = pipeline.augmentation(d["augment"], image_size=int(d["image_size"]))
  if source is target:
    source = target = streaming.with_test_transform(source, test_transform)
    return source, target
  return (
    streaming.with_test_transform(source, test_transform),
    streaming.with_test_transform(target, test_transform),
  )


def split_source_val(source: Domain, fraction: float, seed: int) -> tuple[Domain, tuple[Any, Any]]:
  """Holds out ``fraction`` of each class of the source training split (by ``seed``).

  Returns:
    ``(source_train, (x_val, y_val))``: the domain with the remaining training
    examples, and the held-out validation examples of the label-free criteria (lazy
    views of a streaming domain stay lazy: nothing is decoded here).
  """
  x, y = source.x_train, np.asarray(source.y_train)
  rng = np.random.default_rng([seed, 7])
  val: list[int] = []
  for c in np.unique(y):
    idx = np.flatnonzero(y == c)
    k = int(round(len(idx) * fraction))
    val.extend(rng.permutation(idx)[:k].tolist())
  val_idx = np.sort(np.asarray(val, np.int64))
  train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
  if len(train_idx) == 0 or len(val_idx) < 2:
    raise config_lib.ConfigError(
      f"data.source_val_fraction={fraction} leaves {len(train_idx)} training and "
      f"{len(val_idx)} validation images of {len(y)}; the source is too small for it"
    )
  train = dataclasses.replace(
    cast(Any, source), x_train=x.take(train_idx, axis=0), y_train=y[train_idx], ids_train=None
  )
  return train, (x.take(val_idx, axis=0), y[val_idx])


def initial_variables(
  config: Mapping[str, Any], model: Any, key: jax.Array, example_x: np.ndarray
) -> dict[str, Any]:
  """The model's variables before training: a fresh initialization, then
  ``model.pretrained`` (the backbone) and ``init_from`` (every leaf of that run's model
  whose path and shape match) loaded over it."""
  init_key = xla_options.split_keys(key, 3)[0]  # as create_train_state splits it
  x = np.asarray(example_x)[:1]
  try:
    variables = models.init_variables(model, init_key, jnp.asarray(x))
  except (ValueError, TypeError, ArithmeticError, flax.errors.FlaxError) as e:
    raise config_lib.ConfigError(
      f"model: backbone {config['model']['backbone']!r} cannot take inputs of shape "
      f"{tuple(x.shape[1:])} (data.image_size={config['data']['image_size']}): "
      f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    ) from e
  if config["model"]["pretrained"]:
    loaded = _keyed(
      "model.pretrained",
      models.load_pretrained,
      config["model"],
      model.backbone,
      config["model"]["pretrained"],
    )
    variables, _ = models.merge_variables(variables, loaded, at="backbone")
  if config["init_from"]:
    _, _, restored, _ = workdir_lib.restore_model(config["init_from"])
    variables, report = models.merge_variables(variables, restored)
    if not report.loaded:
      raise config_lib.ConfigError(
        f"init_from: no parameter of {config['init_from']!r} fits this model"
      )
  return variables


def _load_run_model(run: str) -> tuple[Any, dict[str, Any]]:
  _, model, variables, _ = workdir_lib.restore_model(run)
  return model, variables


def _keyed(config_key: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
  """``fn(*args, **kwargs)``, its ``ValueError`` re-raised naming the config key."""
  try:
    return fn(*args, **kwargs)
  except config_lib.ConfigError:
    raise
  except ValueError as e:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise config_lib.ConfigError(
      message if message.startswith(config_key) else f"{config_key}: {message}"
    ) from e


def _check_batch_sizes(config: Mapping[str, Any]) -> None:
  driver = config["train"]["driver"]
  if driver == "jit":
    return
  devices = jax.device_count()
  for key in ("batch_size", "target_batch_size"):
    b = config["data"][key] or config["data"]["batch_size"]
    if b % devices:
      raise config_lib.ConfigError(
        f"data.{key}={b} must be divisible by the {devices} devices of the {driver!r} driver"
      )


def _init_distributed(tc: Mapping[str, Any]) -> None:
  if jax.distributed.is_initialized():
    return
  kwargs = {}
  if tc["coordinator_address"]:
    kwargs = dict(
      coordinator_address=tc["coordinator_address"],
      num_processes=tc["num_processes"],
      process_id=tc["process_id"],
    )
  jax.distributed.initialize(**kwargs)


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def train_record(
  window: list[dict],
  step: int,
  *,
  last_checkpoint: int | None,
  checkpoints: str,
  steps_per_second: float | None = None,
) -> dict[str, Any]:
  """The training record of ``step``: the mean metrics of the steps in ``window``.

  Raises:
    TrainingDiverged: a metric is NaN / Inf (names the first bad step and the last
      good checkpoint).
  """
  means = {k: float(np.mean([np.mean(np.asarray(m[k])) for m in window])) for k in window[0]}
  if not all(math.isfinite(v) for v in means.values()):
    first = next(
      (
        i
        for i, m in enumerate(window)
        if not all(np.all(np.isfinite(np.asarray(v))) for v in m.values())
      ),
      len(window) - 1,
    )
    raise TrainingDiverged(
      f"loss is NaN/Inf at step {step - len(window) + first + 1} (mean metrics of steps "
      f"{step - len(window) + 1}-{step}: {means}); last good checkpoint: "
      f"{'step ' + str(last_checkpoint) if last_checkpoint is not None else 'none'} in "
      f"{checkpoints}"
    )
  record: dict[str, Any] = {"kind": "train", "step": step}
  if steps_per_second is not None:
    record["steps_per_second"] = steps_per_second
  return {**record, **means}


def _check_finite(state: TrainState, step: int, last_good: int | None, checkpoints: str) -> None:
  if not all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(state.params)):
    raise TrainingDiverged(
      f"parameters are NaN/Inf at step {step}; last good checkpoint: "
      f"{'step ' + str(last_good) if last_good is not None else 'none'} in {checkpoints}"
    )


class _NoBar:
  def update(self, n: int) -> None: ...

  def set_postfix(self, **kwargs: Any) -> None: ...

  def write(self, text: str) -> None:
    print(text, file=sys.stderr)

  def __enter__(self) -> _NoBar:
    return self

  def __exit__(self, *exc: Any) -> None: ...


def _progress_bar(tc: Mapping[str, Any], start: int, desc: str, is_main: bool) -> Any:
  if not (tc["progress"] and is_main):
    return _NoBar()
  from tqdm.auto import tqdm

  return tqdm(total=tc["num_steps"], initial=start, desc=desc, dynamic_ncols=True)


def _result(
  method: str,
  history: list[dict[str, Any]],
  criteria: Any,
  *,
  step: int,
  interrupted: bool,
  steps_per_second: float,
  warnings: list[str],
  workdir: Path,
  kept_selected: bool,
) -> dict[str, Any]:
  picks = selection_lib.select(history, tuple(criteria))
  for criterion, pick in picks.items():
    if criterion == "last":
      pick["checkpoint"] = str(workdir / workdir_lib.CHECKPOINTS / str(step))
    elif kept_selected:
      pick["checkpoint"] = str(workdir / workdir_lib.SELECTED / str(pick["step"]))
  last = history[-1]
  return {
    "method": method,
    "steps": step,
    "interrupted": interrupted,
    "steps_per_second": steps_per_second,
    "warnings": list(warnings),
    "last": {
      "step": last["step"],
      "target_acc": last["oracle_target_acc"],
      "source_acc": last["source_test_acc"],
    },
    "selected": picks,
    "history": history,
  }
