"""The training state pytree and model-apply adapter."""

from __future__ import annotations

from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dtl_jax.methods.base import Extra, Method


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree.

  Attributes:
    step: int32 scalar, number of optimizer updates done.
    params: ``{"model": model_params, "extra": {name: extra_params}}``.
    batch_stats: same layout as ``params`` for BatchNorm statistics (empty dicts
      where a module has none).
    opt_state: the optax state for ``params``.
    rng: the base PRNG key; step ``i`` uses ``fold_in(rng, i)`` so a resumed run
      draws exactly the same random numbers.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def apply_model(model: Any, variables: Mapping[str, Any], x: jax.Array, *, train: bool,
                rngs: Mapping[str, jax.Array] | None = None) -> tuple[dict, Any]:
  """Calls a model per the DESIGN contract: ``(outputs_dict, new_batch_stats)``.

  ``model`` is either a Flax Linen module whose ``__call__(x, *, train)`` returns a
  dict of named outputs (or a bare logits array), or a callable
  ``apply_fn(variables, x, *, train, rngs=None) -> (outputs, new_model_state)``.
  """
  if isinstance(model, nn.Module):
    variables = {k: v for k, v in variables.items() if v or k == "params"}
    if train and "batch_stats" in variables:
      out, mutated = model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
      new_stats = mutated.get("batch_stats", variables["batch_stats"])
    else:
      out = model.apply(variables, x, train=train, rngs=rngs)
      new_stats = variables.get("batch_stats", {})
  else:
    out, new_state = model(variables, x, train=train, rngs=rngs)
    if isinstance(new_state, Mapping) and "batch_stats" in new_state:
      new_stats = new_state["batch_stats"]
    elif new_state:
      new_stats = new_state
    else:
      new_stats = variables.get("batch_stats", {})
  if not isinstance(out, Mapping):
    out = {"logits": out}
  return dict(out), new_stats


def init_model_variables(model: Any, key: jax.Array, x: jax.Array) -> dict:
  """Initializes ``{"params", "batch_stats"}`` of a Linen model on example ``x``."""
  if hasattr(model, "init") and isinstance(model, nn.Module):
    pkey, dkey = jax.random.split(key)
    variables = model.init({"params": pkey, "dropout": dkey}, x, train=False)
  elif hasattr(model, "init"):
    variables = model.init(key, x)
  else:
    raise ValueError("model must be a flax.linen.Module or have an `init(key, x)` method")
  variables = flax.core.unfreeze(variables)
  return {"params": variables.get("params", {}), "batch_stats": variables.get("batch_stats", {})}


def init_train_state(model: Any, method: Method, tx: optax.GradientTransformation | None,
                     *, key: jax.Array, example_x: jax.Array,
                     model_variables: Mapping[str, Any] | None = None) -> TrainState:
  """Builds the initial :class:`TrainState` for ``model`` + ``method``'s extra modules.

  Args:
    model: the main model (see :func:`apply_model`).
    method: the transfer method; its :meth:`~dtl_jax.methods.Method.extra_modules`
      are initialized here.
    tx: the optimizer; ``None`` gives ``opt_state=None`` (call
      :func:`with_optimizer` later, e.g. once parameter labels are known).
    key: PRNG key (init and the run's base rng are derived from it).
    example_x: an input batch ``[n, ...]`` (only its shape/dtype matter).
    model_variables: optional pre-built ``{"params", "batch_stats"}`` for the model
      (e.g. pretrained weights), used instead of a fresh init.
  """
  init_key, extra_key, run_key = jax.random.split(key, 3)
  example_x = jnp.asarray(example_x)[:1]
  variables = (dict(model_variables) if model_variables is not None
               else init_model_variables(model, init_key, example_x))
  variables.setdefault("batch_stats", {})
  outputs, _ = apply_model(model, variables, example_x, train=False)
  example = {"x": example_x, **outputs}
  extras = method.extra_modules(example)
  extra_params, extra_stats = {}, {}
  for i, (name, extra) in enumerate(sorted(extras.items())):
    ev = init_model_variables(extra.module, jax.random.fold_in(extra_key, i),
                              jnp.asarray(extra.init_input))
    extra_params[name] = ev["params"]
    extra_stats[name] = ev["batch_stats"]
  params = {"model": variables["params"], "extra": extra_params}
  batch_stats = {"model": variables["batch_stats"], "extra": extra_stats}
  opt_state = tx.init(params) if tx is not None else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=opt_state, rng=run_key)


def with_optimizer(state: TrainState, tx: optax.GradientTransformation) -> TrainState:
  """Returns ``state`` with a fresh optimizer state for ``tx``."""
  return state.replace(opt_state=tx.init(state.params))


def replace_extra(state: TrainState, name: str, variables: Mapping[str, Any]) -> TrainState:
  """Sets the variables (``{"params", "batch_stats"}``) of extra module ``name``.

  E.g. the teacher of :class:`~dtl_jax.methods.Distill` or ADDA's frozen source model.
  Call before the optimizer state is created (or re-create it).
  """
  params = dict(state.params)
  params["extra"] = {**params["extra"], name: variables["params"]}
  stats = dict(state.batch_stats)
  stats["extra"] = {**stats["extra"], name: variables.get("batch_stats", {})}
  return state.replace(params=params, batch_stats=stats)


def extra_specs(model: Any, method: Method, example_x: jax.Array,
                params: Mapping[str, Any], batch_stats: Mapping[str, Any]) -> dict[str, Extra]:
  """Re-declares ``method``'s extra modules (same call as at init)."""
  outputs, _ = apply_model(model, {"params": params["model"],
                                   "batch_stats": batch_stats["model"]},
                           jnp.asarray(example_x)[:1], train=False)
  return method.extra_modules({"x": jnp.asarray(example_x)[:1], **outputs})


def create_train_state(model: Any, method: Method, *, key: jax.Array, example_x: jax.Array,
                       freeze: tuple[str, ...] = (), backbone_lr_mult: float = 1.0,
                       model_variables: Mapping[str, Any] | None = None,
                       **optimizer_kwargs: Any) -> tuple[TrainState, optax.GradientTransformation]:
  """One call: init the state, label the parameters and build the optimizer.

  Parameters are labelled with :func:`dtl_jax.train.default_rules` (``"backbone"``
  with ``backbone_lr_mult``, ``"head"``, ``"extra/<name>"`` per extra module,
  ``"frozen"`` for ``freeze`` regexes, the method's own
  :meth:`~dtl_jax.methods.Method.freeze_patterns` and frozen extra modules) and the
  optimizer is :func:`dtl_jax.train.make_optimizer` with ``optimizer_kwargs``
  (``kind``, ``learning_rate``, ``momentum``, ``weight_decay``, ``lr_gamma``, ...).

  Returns:
    ``(state, tx)``: pass ``tx`` to :func:`dtl_jax.train.make_train_step`.
  """
  from dtl_jax.train import optim  # pylint: disable=g-import-not-at-top
  state = init_train_state(model, method, None, key=key, example_x=example_x,
                           model_variables=model_variables)
  extras = extra_specs(model, method, example_x, state.params, state.batch_stats)
  rules, mults = optim.default_rules(backbone_lr_mult=backbone_lr_mult,
                                     freeze=tuple(freeze) + tuple(method.freeze_patterns()),
                                     extras=extras, model_frozen=method.model_frozen())
  tx = optim.make_optimizer(optim.label_params(state.params, rules), mults, **optimizer_kwargs)
  return with_optimizer(state, tx), tx
