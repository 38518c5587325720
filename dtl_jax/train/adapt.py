"""Source-free adaptation: adapt a trained source run with unlabelled target data only.

``adapt(config, workdir)`` is the loop of the source-free methods (:attr:`uses_source`
``= False``): AdaBN, Tent and SHOT (:mod:`dtl_jax.methods.source_free`). It starts from
the model of a finished source run (``config.init_from``), sees only the target
domain's training images (never their labels, never a source image), and writes its
own run directory with the guarantees of :func:`dtl_jax.train.fit` (validated config,
nothing written before the data and the model are known to work, resume, no
overwrite). Label-free selection uses the target-only criteria (prediction entropy,
SND); the target test accuracy before and after adaptation is reported.

:func:`adapt_config` makes the config from a source run (``dtl-jax adapt --from RUN``).
:func:`online` evaluates test-time adaptation on a stream of target batches, each
scored before the model updates on it (:func:`dtl_jax.methods.test_time.online_tta`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dtl_jax import config as config_lib
from dtl_jax import data, methods
from dtl_jax.data.streaming import StreamingDomain
from dtl_jax.methods import source_free
from dtl_jax.train import selection as selection_lib
from dtl_jax.train import workdir as workdir_lib
from dtl_jax.train.checkpoint import Checkpointer, SelectedCheckpoints
from dtl_jax.train.evaluation import accuracy_report, make_eval_step, predict
from dtl_jax.train.interrupt import StopRequest
from dtl_jax.train.loop import train_record
from dtl_jax.train.state import create_train_state
from dtl_jax.train.step import jit_step, make_train_step
from dtl_jax.train.writer import MetricWriter

# bundled arrays, or a folder: / tfds: domain decoded on demand (materialized here)
AnyDomain = data.Domain | StreamingDomain

#: Target-only label-free criteria (the source-free setting has no source data).
CRITERIA = ("entropy", "snd")

#: Each method's optimizer and length when ``dtl-jax adapt`` makes the config: Tent as
#: its CIFAR setting (Adam, lr 1e-3, constant), SHOT as its digit code (SGD lr 0.01,
#: Nesterov momentum 0.9, weight decay 1e-3, lr (1 + 10 p)^-0.75 -- ``lr_gamma`` is set
#: to ``10 / num_steps``); batches of 64.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
  "tent": {
    "optim": {"kind": "adam", "learning_rate": 1e-3, "lr_gamma": 0.0, "weight_decay": 0.0},
    "epochs": 10,
  },
  "shot": {
    "optim": {
      "kind": "sgd",
      "learning_rate": 0.01,
      "momentum": 0.9,
      "nesterov": True,
      "weight_decay": 1e-3,
      "lr_decay": 0.75,
    },
    "epochs": 30,
  },
  "adabn": {"optim": {}, "epochs": 1},
}


def adapt_config(
  source_run: str | os.PathLike,
  *,
  target: str,
  method: str = "tent",
  batch_size: int = 64,
  epochs: int | None = None,
) -> ml_collections.ConfigDict:
  """The config that adapts the model of ``source_run`` to ``target`` with ``method``.

  The data settings (image size, channels, seed) are the source run's, so the target
  images have the shape the model was trained on; ``data.source`` stays the source
  run's (only its class list is read, to refuse a target with other classes).
  ``train.num_steps`` is ``epochs`` passes over the target training images.
  """
  if method not in METHOD_DEFAULTS:
    raise config_lib.ConfigError(
      f"--method must be one of {', '.join(METHOD_DEFAULTS)}, got {method!r}"
    )
  c = workdir_lib.read_config(source_run)
  c.init_from = str(source_run)
  c.method = method
  c.method_kwargs = ml_collections.ConfigDict()
  c.data.target = target
  c.data.batch_size = c.data.target_batch_size = int(batch_size)
  c.optim.update(METHOD_DEFAULTS[method]["optim"])
  c.model.freeze = ()
  c.train.selection = CRITERIA
  c.train.resume = False
  n = len(_target_domain(c)[1].x_train)
  steps = max(1, (epochs or METHOD_DEFAULTS[method]["epochs"]) * max(1, n // batch_size))
  c.train.num_steps = steps
  c.train.eval_every = max(1, steps // 10)
  c.train.checkpoint_every = c.train.eval_every
  c.train.log_every = max(1, min(50, steps))
  if method == "shot":
    c.optim.lr_gamma = 10.0 / steps
  return c


def _target_domain(config: Mapping[str, Any]) -> tuple[AnyDomain, AnyDomain]:
  """``(source, target)`` of an adaptation config: both as the source run
  (``init_from``) sees them (its image size, channels and seed; a digits target from
  the half of the raw images its source never used); a target with other classes is
  refused."""
  from dtl_jax.runs import run_domain

  source_config = workdir_lib.read_config(config["init_from"])
  try:
    source = run_domain(source_config, source_config.data.source)
    target = run_domain(source_config, config["data"]["target"])
  except ValueError as e:
    raise config_lib.ConfigError(f"data.target: {str(e).splitlines()[0]}") from e
  if source.class_names != target.class_names:
    raise config_lib.ConfigError(
      f"data.target {config['data']['target']!r} has the classes "
      f"{list(target.class_names)[:10]}, the source model was trained on "
      f"{list(source.class_names)[:10]}; source-free adaptation needs the same classes "
      "in the same order"
    )
  return source, target


def adapt(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Any]:
  """Adapts the model of ``config.init_from`` to ``config.data.target``, target data only.

  Returns:
    ``{"method", "steps", "interrupted", "before": {"target_acc"}, "last":
    {"step", "target_acc"}, "selected": {criterion: ...}, "history": [...]}``, also
    written to ``workdir/result.json`` (``"state"`` is added, not written).
  """
  config_lib.validate(config)
  tc = config.train
  method = methods.build(config.method, **dict(config.method_kwargs))
  if getattr(method, "uses_source", True):
    raise config_lib.ConfigError(
      f"method {config.method!r} trains with source data: use `dtl-jax train`; `adapt` "
      f"runs the source-free methods {', '.join(METHOD_DEFAULTS)}"
    )
  if not config.init_from:
    raise config_lib.ConfigError(
      "init_from: source-free adaptation starts from a trained "
      "source run (dtl-jax adapt --from RUN)"
    )
  if set(tc.selection) - set(CRITERIA):
    raise config_lib.ConfigError(
      f"train.selection: source-free runs select with the target-only criteria {CRITERIA}"
    )
  workdir = Path(workdir)
  workdir_lib.check(workdir, config, resume=tc.resume, overwrite=overwrite)

  # Everything is built before anything is written.
  _, target = _target_domain(config)
  _, model, variables, _ = workdir_lib.restore_model(config.init_from)
  eval_step = make_eval_step(model)
  before = _target_accuracy(eval_step, variables, target, config.data.eval_batch_size)
  x_t = np.asarray(target.x_train)
  n_t = len(x_t)
  bs = config.data.target_batch_size or config.data.batch_size
  if n_t < bs:
    raise config_lib.ConfigError(
      f"data.batch_size={bs} is larger than the {n_t} target training images"
    )
  sampler = data.PairSampler((x_t, np.zeros(n_t, np.int32)), None, batch_size=bs, seed=config.seed)
  if isinstance(method, source_free.Tent) and method.bn_modules is None:
    method = source_free.Tent(bn_modules=source_free.bn_modules(variables["batch_stats"]))
  train_model = source_free.tent_apply_fn(model) if getattr(method, "dropout_off", False) else model
  key = jax.random.key(config.seed)
  optim = dict(config.optim)
  if not getattr(method, "takes_gradient_steps", True):
    optim.update(kind="sgd", learning_rate=1.0, momentum=0.0, weight_decay=0.0)
  state, tx = create_train_state(
    model, method, key=key, example_x=jnp.asarray(x_t[:2]), model_variables=variables, **optim
  )
  step_fn = jit_step(make_train_step(train_model, method, tx, total_steps=tc.num_steps))
  needs_pseudo = getattr(method, "needs_pseudo_labels", False)

  workdir_lib.prepare(workdir, config, resume=tc.resume, overwrite=overwrite)
  ckpt = Checkpointer(workdir / workdir_lib.CHECKPOINTS, max_to_keep=tc.keep_checkpoints)
  pseudo = np.zeros(n_t, np.int32)
  start = 0
  if tc.resume and ckpt.latest_step() is not None:
    restored = ckpt.restore({"state": state, "pseudo": pseudo})
    state, pseudo = restored["state"], np.asarray(restored["pseudo"])
    start = int(state.step)
  history = workdir_lib.read_history(workdir, upto=start) if start else []
  writer = MetricWriter(workdir, start_step=start, tensorboard=tc.tensorboard)
  selected = (
    SelectedCheckpoints(workdir / workdir_lib.SELECTED, tc.selection) if tc.keep_selected else None
  )

  def evaluate(st: Any, step: int) -> None:
    record = _evaluate(eval_step, _variables(st), target, step, config)
    history.append(record)
    writer.write(
      {
        "kind": "eval",
        "step": step,
        "oracle_target_acc": record["oracle_target_acc"],
        **{f"select_{k}": v for k, v in record["scores"].items()},
      }
    )
    workdir_lib.write_json(workdir / workdir_lib.HISTORY_FILE, history, indent=None)
    if selected is not None:
      selected.update(history, {"state": st, "pseudo": pseudo})

  def save(st: Any, step: int) -> None:
    ckpt.save(step, {"state": st, "pseudo": pseudo}, force=True)

  t0 = time.perf_counter()
  step, interrupted = start, False
  if not getattr(method, "takes_gradient_steps", True):  # AdaBN: one statistics pass, no step
    assert isinstance(method, source_free.AdaBN)
    adapted = method.adapt(model, variables, _input_batches(x_t, config.data.eval_batch_size))
    state = dataclasses.replace(
      state,
      step=jnp.asarray(tc.num_steps, jnp.int32),
      batch_stats={**state.batch_stats, "model": adapted["batch_stats"]},
    )
    step = tc.num_steps
    evaluate(state, step)
    save(state, step)
  else:
    epoch = max(1, n_t // bs)
    with StopRequest() as stop:
      window: list[dict] = []
      while step < tc.num_steps:
        if needs_pseudo and step % epoch == 0:  # a resumed run keeps its epoch's labels
          pseudo = _pseudo_labels(method, eval_step, state, x_t, config)
        b = sampler.batch(step)
        idx = sampler.source_indices(step)
        batch = {"x_s": x_t[:0], "y_s": np.zeros(0, np.int32), "x_t": b.x_source}
        if needs_pseudo:
          batch["pl_t"] = pseudo[idx]
        state, metrics = step_fn(state, batch)
        step += 1
        window.append(metrics)
        if step % tc.log_every == 0 or step == tc.num_steps:
          writer.write(
            train_record(
              window, step, last_checkpoint=ckpt.latest_step(), checkpoints=ckpt.directory
            )
          )
          window = []
        if step % tc.eval_every == 0 or step == tc.num_steps:
          evaluate(state, step)
        if step % tc.checkpoint_every == 0 or step == tc.num_steps:
          save(state, step)
        if stop.requested or step == tc.stop_at_step:
          interrupted = True
          if ckpt.latest_step() != step:
            save(state, step)
          break
  ckpt.close()
  if not history or history[-1]["step"] != step:
    evaluate(state, step)
  if selected is not None:
    selected.close()
  picks = selection_lib.select(history, tuple(tc.selection))
  last = history[-1]
  result = {
    "method": method.name,
    "steps": step,
    "interrupted": interrupted,
    "seconds": time.perf_counter() - t0,
    "source_run": str(config.init_from),
    "target": config.data.target,
    "before": {"target_acc": before},
    "last": {"step": last["step"], "target_acc": last["oracle_target_acc"]},
    "selected": picks,
    "history": history,
  }
  workdir_lib.write_json(workdir / workdir_lib.RESULT_FILE, result)
  writer.close()
  result["state"] = state
  return result


def _variables(state: Any) -> dict[str, Any]:
  return {"params": state.params["model"], "batch_stats": state.batch_stats["model"]}


def _input_batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
  return [x[i : i + batch_size] for i in range(0, len(x), batch_size)]


def _outputs(
  eval_step: Any,
  variables: Mapping[str, Any],
  x: np.ndarray,
  batch_size: int,
  keys: tuple[str, ...],
) -> dict[str, np.ndarray]:
  from dtl_jax.train.state import TrainState

  st = TrainState(
    step=jnp.zeros((), jnp.int32),
    params={"model": variables["params"]},
    batch_stats={"model": variables["batch_stats"]},
    opt_state=None,
    rng=jax.random.key(0),
  )
  return predict(eval_step, st, x, batch_size=batch_size, keys=keys)


def _target_accuracy(
  eval_step: Any, variables: Mapping[str, Any], target: AnyDomain, batch_size: int
) -> float:
  logits = _outputs(eval_step, variables, np.asarray(target.x_test), batch_size, ("logits",))[
    "logits"
  ]
  return accuracy_report(logits, np.asarray(target.y_test))["accuracy"]


def _evaluate(
  eval_step: Any,
  variables: Mapping[str, Any],
  target: AnyDomain,
  step: int,
  config: Mapping[str, Any],
) -> dict[str, Any]:
  bs = config["data"]["eval_batch_size"]
  probs = _outputs(eval_step, variables, np.asarray(target.x_train), bs, ("probs",))["probs"]
  scores = {"entropy": -selection_lib.prediction_entropy(probs), "snd": selection_lib.snd(probs)}
  acc = accuracy_report(
    _outputs(eval_step, variables, np.asarray(target.x_test), bs, ("logits",))["logits"],
    np.asarray(target.y_test),
  )
  return {
    "step": int(step),
    "scores": scores,
    "oracle_target_acc": acc["accuracy"],
    "oracle_target_per_class": acc["per_class"],
  }


def _pseudo_labels(
  method: Any, eval_step: Any, state: Any, x_t: np.ndarray, config: Mapping[str, Any]
) -> np.ndarray:
  """SHOT's pseudo-labels of the whole target set from the current model."""
  out = _outputs(
    eval_step,
    _variables(state),
    x_t,
    config["data"]["eval_batch_size"],
    (method.feature_key, "logits"),
  )
  return np.asarray(method.refresh(out[method.feature_key], out["logits"]), np.int32)


def online(
  source_run: str | os.PathLike,
  shifts: Sequence[str],
  *,
  mode: str = "tent",
  reset: str = "shift",
  batch_size: int = 64,
  learning_rate: float = 1e-3,
  seed: int | None = None,
) -> dict[str, Any]:
  """Online test-time adaptation of a source run on a stream of target shifts.

  Each shift's test images are streamed in batches (shuffled by ``seed``); every batch
  is predicted -- and scored -- before the model adapts on it (Tent), as the
  test-time adaptation papers evaluate. ``reset="shift"`` restores the source model at
  every shift; ``"never"`` adapts continually. Returns per-batch and per-shift
  accuracy (%), and the source model's accuracy on the same stream.
  """
  from dtl_jax.methods import test_time

  config, model, variables, _ = workdir_lib.restore_model(source_run)
  seed = int(config.seed if seed is None else seed)
  streams = {}
  for name in shifts:
    c = config_lib.from_dict(config_lib.config_to_dict(config))
    c.init_from, c.data.target = str(source_run), name
    _, dom = _target_domain(c)
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(len(dom.x_test))
    x, y = np.asarray(dom.x_test)[order], np.asarray(dom.y_test)[order]
    streams[name] = [
      (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
    ]
  out = {}
  for m in ("source", mode):
    r = test_time.online_tta(
      model, variables, streams, mode=m, reset=reset, learning_rate=learning_rate
    )
    out[m] = {
      "per_shift": {k: 100 * float(v) for k, v in r.per_shift.items()},
      "overall": 100 * float(r.accuracy),
      "per_batch": {k: [100 * float(a) for a in v] for k, v in r.per_batch.items()},
    }
  return {
    "source_run": str(source_run),
    "shifts": list(shifts),
    "mode": mode,
    "reset": reset,
    "batch_size": batch_size,
    "seed": seed,
    **out,
  }
