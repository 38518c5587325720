"""The training loop: ``fit(config, workdir=...)``.

``config`` is an ``ml_collections.ConfigDict``; :func:`default_config` returns one with
every key documented below (a Python-file config overrides what it needs, and the
CLI's ``--config.key=value`` sets single keys).

Config keys
-----------
* ``seed`` (int, 0): model init, data order, dropout and method randomness.
* ``method`` (str, ``"source_only"``): a name of :data:`dtl_jax.methods.METHODS`.
* ``method_kwargs`` (dict): keyword hyperparameters of the method
  (``trade_off``, ``schedule``, ``margin``, ...). ``adda`` takes ``stage`` (1 or 2);
  stage 2 needs ``init_from``; ``distill`` needs ``teacher_workdir``.
* ``init_from`` (str, ``""``): a workdir whose latest checkpoint initializes the
  model (ADDA stage 2, the teacher of ``distill`` when ``teacher_workdir`` is empty,
  fine-tuning from a previous run).
* ``teacher_workdir`` (str, ``""``): ``distill`` only: the teacher's workdir (its
  config.json gives the teacher architecture).
* ``data.source`` / ``data.target`` (str): bundled domain names
  (:func:`dtl_jax.data.available_domains`), e.g. ``"digits"`` -> ``"digits_m"``.
* ``data.domain_kwargs`` (dict): domain options (``size``, ``channels``, ...), passed
  through :func:`dtl_jax.data.load_pair`: two digits domains draw from disjoint halves
  of scikit-learn's digits (about 900 images each) and share a channel count (3 when
  either is colour).
* ``data.batch_size`` (int, 32): global source batch; ``data.target_batch_size``
  (int, 0 = same).
* ``data.source_val_fraction`` (float, 0.1): source train examples held out for the
  label-free selection criteria (stratified by seed).
* ``data.eval_batch_size`` (int, 500).
* ``model.backbone`` (str, ``"lenet"``): ``"lenet"``, ``"dann_mnist"``, ``"dtn"``,
  ``"mlp"``, ``"resnet18"`` ... ``"resnet101"``; ``model.backbone_kwargs`` (dict).
* ``model.bottleneck_dim`` (int, 256; 0 = no bottleneck), ``model.bottleneck_dropout``
  (float, 0.5), ``model.bottleneck_batch_norm`` (bool, True).
* ``model.head_hidden`` (tuple, ()): hidden widths of the classifier head.
* ``model.pretrained`` (str, ``""``): a torchvision/timm ResNet state dict
  (``.safetensors`` / ``.npz`` / ``.pth``) loaded into a ``resnet*`` backbone
  (:func:`dtl_jax.models.load_torchvision_resnet`); the bottleneck and head keep their
  initialization. Use with ``optim.backbone_lr_mult = 0.1`` (TLlib) and
  ``optim.freeze`` for the ``finetune`` method.
* ``optim.kind`` (``"sgd"`` | ``"adam"``), ``optim.learning_rate`` (0.01),
  ``optim.momentum`` (0.9), ``optim.nesterov`` (True), ``optim.weight_decay`` (1e-3),
  ``optim.lr_gamma`` (1e-3), ``optim.lr_decay`` (0.75): TLlib's
  ``lr * (1 + gamma * step) ** -decay`` (``lr_gamma = 0``: constant);
  ``optim.b1`` (0.9), ``optim.b2`` (0.999): Adam's moment decays;
  ``optim.backbone_lr_mult`` (1.0; 0.1 for a
  pretrained backbone); ``optim.freeze`` (tuple of regexes on model parameter paths,
  e.g. ``("backbone/conv1/.*",)``); ``optim.grad_clip`` (0 = off).
* ``train.num_steps`` (int, 1000); ``train.driver`` (``"jit"`` | ``"pmap"`` |
  ``"shard_map"``); ``train.log_every`` (50); ``train.eval_every`` (250; also the
  selection points; the last step is always evaluated); ``train.checkpoint_every``
  (250); ``train.keep_checkpoints`` (3); ``train.resume`` (bool): continue from the
  latest checkpoint in ``workdir`` (bit-identical to an uninterrupted run);
  ``train.progress`` (bool, True): tqdm bar; ``train.multihost`` (bool): call
  ``jax.distributed.initialize()`` first (pmap driver only; each process then reads its
  slice of every global batch, all processes take part in orbax checkpoints, process 0
  writes metrics and results); ``train.coordinator_address`` / ``num_processes`` /
  ``process_id`` are passed to ``initialize`` when the address is set (otherwise it
  auto-detects, e.g. on TPU VMs and SLURM); ``train.selection`` (tuple of criteria, all of
  :data:`~dtl_jax.train.selection.CRITERIA`); ``train.stop_at_step`` (int, 0 = off):
  behave as if Ctrl-C was pressed after this step (checkpoint, return with
  ``interrupted=True``; simulates preemption).

Outputs in ``workdir``: ``config.json``, ``metrics.jsonl`` (one JSON object per log /
eval event), ``checkpoints/`` (orbax), ``result.json`` (what :func:`fit` returns), and
TensorBoard events when ``tensorboardX`` or ``tensorboard`` is installed.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dtl_jax import methods as methods_lib
from dtl_jax.train import optim as optim_lib
from dtl_jax.train import selection as selection_lib
from dtl_jax.train import state as state_lib
from dtl_jax.train import step as step_lib

AXIS = "batch"


class TrainingDiverged(RuntimeError):
  """Raised when the loss becomes NaN or Inf."""


def default_config() -> ml_collections.ConfigDict:
  """The default config (digits -> digits_m, LeNet + 256 bottleneck, TLlib SGD)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = "source_only"
  c.method_kwargs = ml_collections.ConfigDict()
  c.init_from = ""
  c.teacher_workdir = ""
  c.data = ml_collections.ConfigDict(dict(
      source="digits", target="digits_m", domain_kwargs=ml_collections.ConfigDict(),
      batch_size=32, target_batch_size=0, source_val_fraction=0.1, eval_batch_size=500))
  c.model = ml_collections.ConfigDict(dict(
      backbone="lenet", backbone_kwargs=ml_collections.ConfigDict(), bottleneck_dim=256,
      bottleneck_dropout=0.5, bottleneck_batch_norm=True, head_hidden=(), pretrained=""))
  c.optim = ml_collections.ConfigDict(dict(
      kind="sgd", learning_rate=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3,
      lr_gamma=1e-3, lr_decay=0.75, b1=0.9, b2=0.999, backbone_lr_mult=1.0, freeze=(),
      grad_clip=0.0))
  c.train = ml_collections.ConfigDict(dict(
      num_steps=1000, driver="jit", log_every=50, eval_every=250, checkpoint_every=250,
      keep_checkpoints=3, resume=False, progress=True, multihost=False, stop_at_step=0,
      coordinator_address="", num_processes=0, process_id=-1, keep_selected=True,
      selection=selection_lib.CRITERIA))
  return c


# ----------------------------------------------------------------------------- builders


def _to_dict(x):
  if isinstance(x, ml_collections.ConfigDict):
    return {k: _to_dict(v) for k, v in x.items()}
  if isinstance(x, dict):
    return {k: _to_dict(v) for k, v in x.items()}
  return x


def build_model(model_cfg, num_classes: int, *, bn_axis_name: str | None = None,
                frozen: tuple[str, ...] = ()):
  """Builds a :class:`dtl_jax.models.TransferModel` from ``config.model``.

  ``frozen``: regexes of frozen parameter paths (``config.optim.freeze``); BatchNorm
  layers they match also keep their running statistics.
  """
  from dtl_jax import models  # pylint: disable=g-import-not-at-top
  kw = _to_dict(model_cfg.get("backbone_kwargs", {})) or {}
  name = model_cfg.backbone.lower()
  backbones = {"lenet": models.LeNet, "dann_mnist": models.DANNMNISTNet, "dtn": models.DTN,
               "mlp": models.MLP, "resnet18": models.ResNet18, "resnet34": models.ResNet34,
               "resnet50": models.ResNet50, "resnet101": models.ResNet101}
  if name not in backbones:
    raise ValueError(f"model.backbone must be one of {sorted(backbones)}, got {name!r}")
  if "hidden" in kw:
    kw["hidden"] = tuple(kw["hidden"])
  backbone = backbones[name](**kw)
  bottleneck = None
  if model_cfg.bottleneck_dim:
    bottleneck = models.Bottleneck(features=model_cfg.bottleneck_dim,
                                   dropout=model_cfg.bottleneck_dropout,
                                   batch_norm=model_cfg.bottleneck_batch_norm)
  head = models.Classifier(num_classes, hidden=tuple(model_cfg.get("head_hidden", ())))
  return models.TransferModel(backbone, bottleneck, head, bn_axis_name=bn_axis_name,
                              frozen_bn=tuple(frozen))


def load_domains(config) -> tuple[Any, Any]:
  """The ``(source, target)`` domains a run of ``config`` trains on.

  Built by :func:`dtl_jax.data.load_pair` from ``data.source``, ``data.target``,
  ``seed`` and ``data.domain_kwargs`` (a run whose source and target are the same
  dataset, plain fine-tuning, gets that one domain twice), so evaluation code that
  calls this sees exactly the arrays ``fit`` trained and evaluated on.
  """
  from dtl_jax import data  # pylint: disable=g-import-not-at-top
  kw = _to_dict(config.data.get("domain_kwargs", {})) or {}
  if config.data.source == config.data.target:  # plain fine-tuning: one dataset
    domain = data.load_domain(config.data.source, seed=config.seed, **kw)
    return domain, domain
  return data.load_pair(config.data.source, config.data.target, seed=config.seed, **kw)


def _split_val(x, y, fraction: float, seed: int):
  rng = np.random.default_rng([seed, 7])
  val = []
  for c in np.unique(y):
    idx = np.flatnonzero(y == c)
    k = int(round(len(idx) * fraction))
    val.extend(rng.permutation(idx)[:k].tolist())
  val = np.sort(np.asarray(val, np.int64))
  train = np.setdiff1d(np.arange(len(y)), val)
  return (x[train], y[train]), (x[val], y[val])


def _restore_variables(workdir: str):
  """Loads ``(config, state_dict)`` of the latest checkpoint in ``workdir``."""
  with open(os.path.join(workdir, "config.json")) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  ckpt = _Checkpointer(os.path.join(workdir, "checkpoints"), keep=1)
  step = ckpt.latest_step()
  if step is None:
    raise ValueError(f"no checkpoint in {workdir}/checkpoints")
  raw = ckpt.restore_raw(step)
  ckpt.close()
  return cfg, raw


# ---------------------------------------------------------------------- checkpointing


class _Checkpointer:
  """:class:`dtl_jax.train.checkpoint.Checkpointer` with synchronous, forced saves."""

  def __init__(self, directory: str, *, keep: int):
    from dtl_jax.train.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
    self._ckpt = Checkpointer(directory, max_to_keep=keep)

  def save(self, step: int, state) -> None:
    if jax.process_count() > 1:
      state = _to_global(state)
    self._ckpt.save(step, state, force=True)
    self._ckpt.wait()

  def latest_step(self):
    return self._ckpt.latest_step()

  def restore(self, step: int, template):
    return self._ckpt.restore(template, step=step)

  def restore_raw(self, step: int):
    return self._ckpt.restore(None, step=step)

  def close(self):
    self._ckpt.close()


def _to_global(state):
  """Host-local replicated arrays (from pmap) -> global arrays orbax can save."""
  from orbax.checkpoint import utils as ocp_utils  # pylint: disable=g-import-not-at-top
  state = state.replace(rng=jax.random.key_data(state.rng))

  def conv(x):
    if not isinstance(x, jax.Array):
      x = jnp.asarray(x)
    local = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.local_devices()),
                                                         ("local",)),
                                       jax.sharding.PartitionSpec())
    x = jax.device_put(x, local)
    return ocp_utils.fully_replicated_host_local_array_to_global_array(x)

  return jax.tree.map(conv, state)


# ------------------------------------------------------------------------------ logging


class _Writer:

  def __init__(self, workdir: str, enabled: bool):
    self.enabled = enabled
    self._f = open(os.path.join(workdir, "metrics.jsonl"), "a") if enabled else None
    self._tb = None
    if enabled:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:
        try:
          from torch.utils.tensorboard import SummaryWriter  # pylint: disable=g-import-not-at-top
          self._tb = SummaryWriter(os.path.join(workdir, "tb"))
        except Exception:  # pylint: disable=broad-except
          self._tb = None

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    self._f.write(json.dumps(record, default=_json_default) + "\n")
    self._f.flush()
    if self._tb is not None:
      for k, v in record.items():
        if isinstance(v, (int, float)) and k != "step":
          self._tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record["step"])

  def close(self):
    if self._f:
      self._f.close()
    if self._tb is not None:
      self._tb.close()


def _json_default(o):
  if isinstance(o, (np.floating, np.integer)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


# ---------------------------------------------------------------------------------- fit


def fit(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains ``config.method`` per ``config`` and selects checkpoints without target labels.

  Args:
    config: see the module docstring (start from :func:`default_config`).
    workdir: output folder (created); with ``config.train.resume`` the run continues
      from its latest checkpoint.

  Returns:
    A dict (also written to ``workdir/result.json``)::

      {"method": str, "steps": int, "last": {"step", "target_acc", "source_acc"},
       "selected": {criterion: {"step", "score", "target_acc"}},
       "history": [eval records], "steps_per_second": float,
       "interrupted": bool}

    ``target_acc`` values are oracle numbers (target test labels), reported next to
    each label-free choice and never used to make it.

  Raises:
    TrainingDiverged: the loss became NaN / Inf (the message names the step and the
      last good checkpoint).
  """
  cfg = default_config()
  cfg.update_from_flattened_dict(_flatten(config))
  config = cfg
  tc = config.train
  if tc.multihost:
    if tc.driver != "pmap":
      raise ValueError("train.multihost needs train.driver='pmap' (the multi-process "
                       f"shard_map / jit paths are not implemented), got {tc.driver!r}")
    if not jax.distributed.is_initialized():
      kw = {}
      if tc.coordinator_address:
        kw = dict(coordinator_address=tc.coordinator_address,
                  num_processes=tc.num_processes, process_id=tc.process_id)
      jax.distributed.initialize(**kw)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(_to_dict(config), f, indent=2, default=_json_default)
  driver = tc.driver
  if driver not in ("jit", "pmap", "shard_map"):
    raise ValueError(f"train.driver must be 'jit', 'pmap' or 'shard_map', got {driver!r}")
  axis = None if driver == "jit" else AXIS

  # --- data
  source, target = load_domains(config)
  (xs_tr, ys_tr), (xs_val, ys_val) = _split_val(
      np.asarray(source.x_train), np.asarray(source.y_train), config.data.source_val_fraction,
      config.seed)
  num_classes = source.num_classes

  # --- model, method, state
  frozen = tuple(config.optim.freeze)
  model = build_model(config.model, num_classes, bn_axis_name=axis, frozen=frozen)
  eval_model = build_model(config.model, num_classes, frozen=frozen)
  method = _build_method(config, eval_model)
  key = jax.random.key(config.seed)
  state = state_lib.init_train_state(model if axis is None else eval_model, method, None,
                                     key=key, example_x=xs_tr[:2])
  state = _load_pretrained(config, eval_model, state)
  state = _init_from_checkpoints(config, method, state)
  example_x = jnp.asarray(xs_tr[:1])
  extras = state_lib.extra_specs(eval_model, method, example_x, state.params, state.batch_stats)
  rules, mults = optim_lib.default_rules(
      backbone_lr_mult=config.optim.backbone_lr_mult,
      freeze=tuple(config.optim.freeze) + tuple(method.freeze_patterns()),
      extras=extras, model_frozen=method.model_frozen())
  labels = optim_lib.label_params(state.params, rules)
  o = config.optim
  tx = optim_lib.make_optimizer(
      labels, mults, kind=o.kind, learning_rate=o.learning_rate, momentum=o.momentum,
      nesterov=o.nesterov, weight_decay=o.weight_decay, lr_gamma=o.lr_gamma,
      lr_decay=o.lr_decay, b1=o.b1, b2=o.b2, grad_clip=o.grad_clip or None)
  state = state_lib.with_optimizer(state, tx)

  ckpt = _Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints)
  start_step = 0
  if tc.resume and ckpt.latest_step() is not None:
    state = ckpt.restore(ckpt.latest_step(), state)
    start_step = int(state.step)
  history = _load_history(workdir, start_step) if start_step else []

  # --- step function and sampler
  step_body = step_lib.make_train_step(model, method, tx, axis_name=axis,
                                       total_steps=tc.num_steps)
  from dtl_jax.data import PairSampler  # pylint: disable=g-import-not-at-top
  tb = config.data.target_batch_size or config.data.batch_size
  import dataclasses  # pylint: disable=g-import-not-at-top
  source_train = dataclasses.replace(source, x_train=xs_tr, y_train=ys_tr, ids_train=None)
  sampler = PairSampler(source_train, target,
                        batch_size=config.data.batch_size, target_batch_size=tb,
                        seed=config.seed, start_step=start_step)
  n_dev = jax.local_device_count()
  if driver == "jit":
    train_step = step_lib.jit_step(step_body)
    put = lambda b: b  # noqa: E731
    dev_state = state
  elif driver == "pmap":
    train_step = step_lib.pmap_step(step_body, axis_name=AXIS)
    put = lambda b: step_lib.shard_batch_for_pmap(b, n_dev)  # noqa: E731
    dev_state = step_lib.replicate(state)
  else:
    from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
    mesh = Mesh(np.asarray(jax.devices()), (AXIS,))
    train_step = step_lib.shard_map_step(step_body, mesh, axis_name=AXIS)
    put = lambda b: step_lib.place_batch(b, mesh, AXIS)  # noqa: E731
    dev_state = jax.device_put(state, jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
  host_state = lambda s: step_lib.unreplicate(s) if driver == "pmap" else s  # noqa: E731
  eval_step = step_lib.make_eval_step(eval_model)
  writer = _Writer(workdir, is_main)
  sel_ckpt = (_Checkpointer(os.path.join(workdir, "selected"), keep=1_000_000)
              if tc.keep_selected else None)

  def evaluate(st, step):
    rec = _evaluate(eval_step, st, step, source=source, target=target,
                    val=(xs_val, ys_val), config=config)
    history.append(rec)
    writer.write({"kind": "eval", **_flat_eval(rec)})
    if is_main:
      with open(os.path.join(workdir, "history.partial.json"), "w") as f:
        json.dump(history, f, default=_json_default)
    if tc.keep_selected:
      _keep_selected(sel_ckpt, history, tuple(tc.selection), st)
    return rec

  interrupted = False

  def on_sigint(signum, frame):  # noqa: ARG001
    nonlocal interrupted
    interrupted = True

  old_handler = signal.signal(signal.SIGINT, on_sigint)
  bar = None
  if tc.progress and is_main:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=tc.num_steps, initial=start_step, desc=method.name, dynamic_ncols=True)
  t0 = time.perf_counter()
  steps_done = 0
  last_good = ckpt.latest_step()
  window = []
  step = start_step
  try:
    while step < tc.num_steps:
      b = sampler.batch(step)
      batch = put(_process_slice({"x_s": b.x_source, "y_s": b.y_source, "x_t": b.x_target}))
      dev_state, metrics = train_step(dev_state, batch)
      step += 1
      steps_done += 1
      window.append(metrics)
      if step % tc.log_every == 0 or step == tc.num_steps:
        ms = _mean_metrics(window)
        if not all(math.isfinite(v) for v in ms.values()):
          first = next((i for i, m in enumerate(window)
                        if not all(np.all(np.isfinite(np.asarray(v))) for v in m.values())),
                       len(window) - 1)
          bad_step = step - len(window) + first + 1
          raise TrainingDiverged(
              f"loss is NaN/Inf at step {bad_step} (metrics over steps "
              f"{step - len(window) + 1}-{step}: {ms}); last good checkpoint: "
              f"{'step ' + str(last_good) if last_good is not None else 'none'} in "
              f"{os.path.join(workdir, 'checkpoints')}")
        window = []
        sps = steps_done / (time.perf_counter() - t0)
        writer.write({"kind": "train", "step": step, "steps_per_second": sps, **ms})
        if bar is not None:
          bar.set_postfix(loss=f"{ms['loss']:.3f}",
                          acc=f"{ms.get('source_acc', float('nan')):.3f}", sps=f"{sps:.1f}")
      if bar is not None:
        bar.update(1)
      if step % tc.eval_every == 0 or step == tc.num_steps:
        evaluate(host_state(dev_state), step)
      if step % tc.checkpoint_every == 0 or step == tc.num_steps:
        _check_finite(host_state(dev_state), step, last_good, workdir)
        ckpt.save(step, host_state(dev_state))
        last_good = step
      if tc.stop_at_step and step >= tc.stop_at_step:
        interrupted = True
      if interrupted:
        if last_good != step:
          ckpt.save(step, host_state(dev_state))
          last_good = step
        if bar is not None:
          bar.write(f"interrupted: checkpoint saved at step {step} in {workdir}")
        break
  finally:
    signal.signal(signal.SIGINT, old_handler)
    if bar is not None:
      bar.close()
  elapsed = time.perf_counter() - t0
  ckpt.close()
  if not history or history[-1]["step"] != step:
    evaluate(host_state(dev_state), step)
  selected = selection_lib.select(history, tuple(tc.selection))
  if sel_ckpt is not None:
    sel_ckpt.close()
    for c, pick in selected.items():
      if c != "last":
        pick["checkpoint"] = os.path.join(workdir, "selected", str(pick["step"]))
    selected["last"]["checkpoint"] = os.path.join(workdir, "checkpoints", str(step))
  last = history[-1]
  result = {
      "method": method.name, "steps": step, "interrupted": interrupted,
      "steps_per_second": steps_done / elapsed if elapsed > 0 else float("nan"),
      "last": {"step": last["step"], "target_acc": last["oracle_target_acc"],
               "source_acc": last["source_test_acc"]},
      "selected": selected, "history": history,
  }
  if is_main:
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f, indent=1, default=_json_default)
    with open(os.path.join(workdir, "history.json"), "w") as f:
      json.dump(history, f, default=_json_default)
  writer.close()
  result["state"] = host_state(dev_state)
  return result


def _keep_selected(ckpt, history, criteria, state):
  """Saves ``state`` if some criterion now picks its step; drops unreferenced ones."""
  sel = selection_lib.select(history, criteria)
  needed = {v["step"] for k, v in sel.items() if k != "last"}
  step = history[-1]["step"]
  saved = set(ckpt._ckpt.all_steps())  # pylint: disable=protected-access
  if step in needed and step not in saved:
    ckpt.save(step, state)
  for s in saved - needed:
    ckpt._ckpt.manager.delete(s)  # pylint: disable=protected-access


def _process_slice(batch: dict) -> dict:
  """This process's rows of a global batch (rows ``[p B/P, (p+1) B/P)``)."""
  p, n = jax.process_index(), jax.process_count()
  if n == 1:
    return batch
  out = {}
  for k, v in batch.items():
    if v.shape[0] % n:
      raise ValueError(f"global batch {k} of {v.shape[0]} rows is not divisible by "
                       f"{n} processes")
    m = v.shape[0] // n
    out[k] = v[p * m:(p + 1) * m]
  return out


def _flatten(config) -> dict:
  out = {}

  def rec(prefix, c):
    for k, v in c.items():
      name = f"{prefix}{k}"
      if isinstance(v, (ml_collections.ConfigDict, dict)) and k not in (
          "method_kwargs", "domain_kwargs", "backbone_kwargs"):
        rec(name + ".", v)
      else:
        out[name] = v
  rec("", config)
  return out


def _build_method(config, eval_model):
  kw = _to_dict(config.method_kwargs) or {}
  name = config.method
  if name == "adda" and kw.get("stage", 1) == 2:
    kw.setdefault("source_model", eval_model)
  if name == "distill":
    if not (config.teacher_workdir or config.init_from):
      raise ValueError("method 'distill' needs config.teacher_workdir (a trained run)")
    tcfg, _ = _restore_variables(config.teacher_workdir or config.init_from)
    kw.setdefault("teacher", build_model(tcfg.model, eval_model.head.num_classes))
  return methods_lib.get_method(name, **kw)


def _load_pretrained(config, eval_model, state):
  path = config.model.get("pretrained", "")
  if not path:
    return state
  from dtl_jax import models  # pylint: disable=g-import-not-at-top
  if not isinstance(eval_model.backbone, models.ResNet):
    raise ValueError(f"model.pretrained needs a resnet* backbone, got {config.model.backbone!r}")
  if not os.path.exists(path):
    raise ValueError(f"model.pretrained: no file {path!r}")
  loaded = models.load_torchvision_resnet(path, eval_model.backbone)
  merged, _ = models.merge_variables(
      {"params": state.params["model"], "batch_stats": state.batch_stats["model"]},
      loaded, at="backbone")
  return state.replace(params={**state.params, "model": merged["params"]},
                       batch_stats={**state.batch_stats, "model": merged["batch_stats"]})


def _init_from_checkpoints(config, method, state):
  if config.method == "distill":
    _, raw = _restore_variables(config.teacher_workdir or config.init_from)
    state = state_lib.replace_extra(state, "teacher", {
        "params": raw["params"]["model"], "batch_stats": raw["batch_stats"]["model"]})
  if config.init_from and config.method != "distill":
    _, raw = _restore_variables(config.init_from)
    params = dict(state.params)
    params["model"] = raw["params"]["model"]
    stats = dict(state.batch_stats)
    stats["model"] = raw["batch_stats"]["model"]
    state = state.replace(params=params, batch_stats=stats)
    if config.method == "adda" and "source_model" in state.params["extra"]:
      state = state_lib.replace_extra(state, "source_model", jax.tree.map(
          lambda x: np.array(x, copy=True),   # own buffers: the state is donated
          {"params": raw["params"]["model"], "batch_stats": raw["batch_stats"]["model"]}))
  elif config.method == "adda" and getattr(method, "stage", 1) == 2:
    raise ValueError("adda stage 2 needs config.init_from = the stage-1 workdir")
  return jax.tree.map(jnp.asarray, state)


def _check_finite(state, step, last_good, workdir):
  ok = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state.params))
  if not ok:
    raise TrainingDiverged(
        f"parameters are NaN/Inf at step {step}; last good checkpoint: "
        f"{'step ' + str(last_good) if last_good is not None else 'none'} in "
        f"{os.path.join(workdir, 'checkpoints')}")


def _mean_metrics(window):
  keys = window[0].keys()
  return {k: float(np.mean([np.mean(np.asarray(m[k])) for m in window])) for k in keys}


def _evaluate(eval_step, state, step, *, source, target, val, config):
  bs = config.data.eval_batch_size
  keys = ("logits", "probs", "bottleneck")
  out_val = step_lib.predict(eval_step, state, val[0], batch_size=bs, keys=keys)
  out_tt = step_lib.predict(eval_step, state, np.asarray(target.x_train), batch_size=bs,
                            keys=keys)
  out_ste = step_lib.predict(eval_step, state, np.asarray(source.x_test), batch_size=bs,
                             keys=("logits",))
  out_tte = step_lib.predict(eval_step, state, np.asarray(target.x_test), batch_size=bs,
                             keys=("logits",))
  src = step_lib.accuracy_report(out_ste["logits"], np.asarray(source.y_test))
  tgt = step_lib.accuracy_report(out_tte["logits"], np.asarray(target.y_test))
  scores = selection_lib.criteria_scores(
      source_val_logits=out_val["logits"], source_val_labels=val[1],
      source_val_features=out_val["bottleneck"], target_probs=out_tt["probs"],
      target_features=out_tt["bottleneck"], seed=config.seed)
  return {"step": int(step), "scores": scores, "source_test_acc": src["accuracy"],
          "source_test_per_class": src["per_class"], "oracle_target_acc": tgt["accuracy"],
          "oracle_target_per_class": tgt["per_class"]}


def _flat_eval(rec):
  out = {"step": rec["step"], "source_test_acc": rec["source_test_acc"],
         "oracle_target_acc": rec["oracle_target_acc"]}
  out.update({f"select_{k}": v for k, v in rec["scores"].items()})
  return out


def _load_history(workdir, upto: int):
  p = os.path.join(workdir, "history.partial.json")
  if not os.path.exists(p):
    return []
  with open(p) as f:
    return [r for r in json.load(f) if r["step"] <= upto]
