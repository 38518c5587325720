"""One train-step body, three drivers: ``jax.jit``, ``jax.pmap`` and ``jax.shard_map``.

The body (:func:`make_train_step`) is written once with an optional ``axis_name``:

1. the model runs once on ``[x_s; x_t]`` (local per-device batch), or on ``x_s`` alone
   for a method with ``uses_target = False`` (its ``inputs.target`` raises when read);
2. its outputs are split per domain and, with an ``axis_name``, ``all_gather``-ed
   (``tiled=True``) so that the method builds kernels / discriminator losses on the
   **global** batch (MMD is not decomposable over devices);
3. every device then computes the same global loss; the transpose of ``all_gather``
   (a reduce-scatter) sends each device ``N`` times its examples' share of the
   gradient, and ``pmean`` over the axis turns that into the exact global gradient;
4. BatchNorm statistics are synchronized by the model's own BatchNorm ``axis_name``
   (build the model with the same axis name as the step, see
   :func:`dtl_jax.models` / ``flax.linen.BatchNorm(axis_name=...)``).

So one ``pmap`` or ``shard_map`` step on ``N`` devices gives the same loss, parameters
and batch statistics as one ``jit`` step on the concatenated batch. Extra modules
(discriminators) run on the gathered batch, redundantly on every device: their
BatchNorm layers need no axis name.

Batches are dicts: ``{"x_s": [n_s, ...], "y_s": [n_s], "x_t": [n_t, ...]}`` and
optionally ``"w_s": [n_s]`` (source instance weights) and ``"pl_t": [n_t]`` (target
pseudo-labels a source-free method asked for); a source-free step has ``n_s = 0``.
For ``pmap`` each leaf has a leading device axis ``[N, n_s/N, ...]``; for ``shard_map``
the global batch is split along axis 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dtl_jax import xla_options
from dtl_jax.methods.base import Method, MethodInputs
from dtl_jax.train.state import TrainState, apply_model

StepFn = Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict]]


def _check_batch(batch: Mapping[str, Any]) -> None:
  for k in ("x_s", "y_s", "x_t"):
    if k not in batch:
      raise ValueError(
        f"batch must have keys 'x_s', 'y_s', 'x_t'; missing {k!r} (got {sorted(batch)})"
      )
  if batch["x_s"].shape[1:] != batch["x_t"].shape[1:]:
    raise ValueError(
      f"batch['x_s'] {batch['x_s'].shape} and batch['x_t'] "
      f"{batch['x_t'].shape} must have the same per-example shape"
    )
  if batch["y_s"].shape != batch["x_s"].shape[:1]:
    raise ValueError(
      f"batch['y_s'] must have shape [n_s]={batch['x_s'].shape[:1]}, got {batch['y_s'].shape}"
    )


class _NoTarget(Mapping[str, jax.Array]):
  """``inputs.target`` of a method with ``uses_target = False``: the step did not run the
  model on the target batch, so any read is a bug in the method and raises."""

  def __init__(self, method_name: str):
    self._name = method_name

  @staticmethod
  def message(name: str) -> str:
    return (
      f"method {name!r} declares uses_target = False, so the train step does not run the "
      "model on the target batch; set uses_target = True to read inputs.target"
    )

  def __getitem__(self, key: str) -> jax.Array:
    raise ValueError(self.message(self._name))

  def __iter__(self) -> Any:
    raise ValueError(self.message(self._name))

  def __len__(self) -> int:
    raise ValueError(self.message(self._name))


def make_train_step(
  model: Any,
  method: Method,
  tx: optax.GradientTransformation,
  *,
  axis_name: str | None = None,
  total_steps: int = 10_000,
) -> StepFn:
  """Builds the pure step ``(state, batch) -> (state, metrics)``.

  Args:
    model: Flax Linen module (``__call__(x, *, train)`` returning a dict with
      ``"logits"`` and usually ``"features"`` / ``"bottleneck"``) or an
      ``apply_fn(variables, x, *, train, rngs=None) -> (outputs, new_state)``.
      With ``axis_name``, its BatchNorm layers must use the same ``axis_name``.
    method: a :class:`~dtl_jax.methods.Method`.
    tx: optax transformation over ``state.params`` (see
      :func:`dtl_jax.train.make_optimizer`).
    axis_name: the device axis name for ``pmap`` / ``shard_map``; ``None`` for ``jit``.
    total_steps: the planned number of steps, passed to the method (GRL schedules).

  Returns:
    ``step(state, batch)``; the metrics dict holds ``"loss"`` plus the method's
    metrics, averaged over devices.
  """

  uses_target = bool(getattr(method, "uses_target", True))

  def gather(x):
    if axis_name is None:
      return x
    return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)

  def step(state: TrainState, batch: Mapping[str, jax.Array]):
    _check_batch(batch)
    x_s, y_s, x_t = batch["x_s"], batch["y_s"], batch["x_t"]
    w_s = batch.get("w_s")
    pl_t = batch.get("pl_t")
    n_s = x_s.shape[0]
    step_rng = jax.random.fold_in(state.rng, state.step)
    model_rng, method_rng = jax.random.split(step_rng)
    if axis_name is not None:
      # dropout masks differ per device; method randomness is shared (global loss).
      model_rng = jax.random.fold_in(model_rng, jax.lax.axis_index(axis_name))

    def loss_fn(params):
      variables = {"params": params["model"], "batch_stats": state.batch_stats["model"]}
      # A method that never looks at the target (source-only, fine-tuning) pays for no
      # target forward / backward: the model sees the source batch alone.
      x = jnp.concatenate([x_s, x_t], axis=0) if uses_target else x_s
      train_model = not method.model_frozen()
      outputs, new_model_stats = apply_model(
        model, variables, x, train=train_model, rngs={"dropout": model_rng}
      )
      out_s = {k: gather(v[:n_s]) for k, v in outputs.items()}
      out_t: Mapping[str, jax.Array] = (
        {k: gather(v[n_s:]) for k, v in outputs.items()} if uses_target else _NoTarget(method.name)
      )
      example = {"x": x_s[:1], **{k: v[:1] for k, v in outputs.items()}}
      extras = method.extra_modules(example)
      new_extra_stats = dict(state.batch_stats["extra"])
      counter = [0]

      def apply_extra(name, inp, *, stop_gradient_params=False):
        if name not in extras:
          raise ValueError(
            f"method {method.name!r} declares no extra module {name!r} (declared: {sorted(extras)})"
          )
        spec = extras[name]
        p = params["extra"][name]
        if stop_gradient_params or not spec.trainable:
          p = jax.lax.stop_gradient(p)
        train = spec.trainable and spec.train_mode
        counter[0] += 1
        rng = jax.random.fold_in(method_rng, counter[0])
        out, stats = apply_model(
          spec.module,
          {"params": p, "batch_stats": state.batch_stats["extra"][name]},
          inp,
          train=train,
          rngs={"dropout": rng},
        )
        if train and not stop_gradient_params:
          new_extra_stats[name] = stats
        return out if set(out) != {"logits"} else out["logits"]

      def apply_to_inputs(name, domain):
        if domain not in ("source", "target"):
          raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
        if domain == "target" and not uses_target:
          raise ValueError(_NoTarget.message(method.name))
        local = x_s if domain == "source" else x_t
        out = apply_extra(name, local)
        return jax.tree.map(gather, out)

      inputs = MethodInputs(
        source=out_s,
        target=out_t,
        labels=gather(y_s),
        step=state.step,
        rng=method_rng,
        source_weights=None if w_s is None else gather(w_s),
        total_steps=total_steps,
        target_pseudo_labels=None if pl_t is None else gather(pl_t),
        _apply=apply_extra,
        _apply_to_inputs=apply_to_inputs,
      )
      loss, metrics = method.loss(inputs)
      if not train_model:
        new_model_stats = state.batch_stats["model"]
      return loss, (metrics, new_model_stats, new_extra_stats)

    (loss, (metrics, model_stats, extra_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
    )
    metrics = {"loss": loss, **metrics}
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      metrics = jax.lax.pmean(metrics, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = dataclasses.replace(
      state,
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      batch_stats={"model": model_stats, "extra": extra_stats},
    )
    return new_state, metrics

  return step


# ----------------------------------------------------------------------------- drivers


def jit_step(step_fn: StepFn, *, donate: bool = True) -> StepFn:
  """``jax.jit`` driver (one device); donates the state buffers. Compiled with the
  library's CPU options (:mod:`dtl_jax.xla_options`)."""
  return jax.jit(
    step_fn,
    donate_argnums=(0,) if donate else (),
    compiler_options=xla_options.step_compiler_options(),
  )


def pmap_step(
  step_fn: StepFn, *, axis_name: str = "batch", donate: bool = True, devices=None
) -> StepFn:
  """``jax.pmap`` driver: state replicated (see :func:`replicate`), batch leaves
  shaped ``[num_devices, per_device, ...]`` (see :func:`shard_batch_for_pmap`)."""
  return jax.pmap(
    step_fn, axis_name=axis_name, donate_argnums=(0,) if donate else (), devices=devices
  )


def shard_map_step(
  step_fn: StepFn, mesh: Mesh, *, axis_name: str = "batch", donate: bool = True
) -> StepFn:
  """``jax.shard_map`` driver over ``mesh``: the state is replicated (``P()``), batch
  leaves are split along axis 0 over ``axis_name``. Same body as the pmap driver
  (``check_vma=False``: the body reduces gradients itself with ``pmean``)."""
  mapped = jax.shard_map(
    step_fn, mesh=mesh, in_specs=(P(), P(axis_name)), out_specs=(P(), P()), check_vma=False
  )
  return jax.jit(
    mapped,
    donate_argnums=(0,) if donate else (),
    compiler_options=xla_options.step_compiler_options(),
  )


def replicate(tree: Any, devices=None) -> Any:
  """Copies ``tree`` to every local device (leading device axis) for ``pmap``."""
  devices = devices or jax.local_devices()
  n = len(devices)
  return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x)[None], (n,) + jnp.shape(x)), tree)


def unreplicate(tree: Any) -> Any:
  """Takes device 0's copy of a replicated tree."""
  return jax.tree.map(lambda x: x[0], tree)


def shard_batch_for_pmap(batch: Mapping[str, Any], num_devices: int | None = None) -> dict:
  """Reshapes global batch leaves ``[n, ...]`` to ``[num_devices, n // num_devices, ...]``."""
  num_devices = num_devices or jax.local_device_count()
  out = {}
  for k, v in batch.items():
    v = np.asarray(v) if not isinstance(v, jax.Array) else v
    if v.shape[0] % num_devices:
      raise ValueError(
        f"batch[{k!r}] has {v.shape[0]} examples, not divisible by {num_devices} devices"
      )
    out[k] = v.reshape((num_devices, v.shape[0] // num_devices) + v.shape[1:])
  return out


def place_batch(batch: Mapping[str, Any], mesh: Mesh, axis_name: str = "batch") -> dict:
  """Puts global batch leaves on ``mesh`` split along axis 0 (``NamedSharding``)."""
  sharding = NamedSharding(mesh, P(axis_name))
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}
