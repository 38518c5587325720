"""The training state pytree and model-apply adapter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dtl_jax import params as params_lib
from dtl_jax import peft, xla_options
from dtl_jax.methods.base import Method
from dtl_jax.models import init_variables


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


def apply_model(
  model: Any,
  variables: Mapping[str, Any],
  x: jax.Array,
  *,
  train: bool,
  rngs: Mapping[str, jax.Array] | None = None,
) -> tuple[dict, Any]:
  """Calls a model per the DESIGN contract: ``(outputs_dict, new_batch_stats)``.

  ``model`` is either a Flax Linen module whose ``__call__(x, *, train)`` returns a
  dict of named outputs (or a bare logits array), or a callable
  ``apply_fn(variables, x, *, train, rngs=None) -> (outputs, new_model_state)``.
  """
  rngs_dict = None if rngs is None else dict(rngs)
  if isinstance(model, nn.Module):
    variables = {k: v for k, v in variables.items() if v or k == "params"}
    if train and "batch_stats" in variables:
      out, mutated = model.apply(variables, x, train=True, rngs=rngs_dict, mutable=["batch_stats"])
      new_stats = mutated.get("batch_stats", variables["batch_stats"])
    else:
      out = model.apply(variables, x, train=train, rngs=rngs_dict)
      new_stats = variables.get("batch_stats", {})
  else:
    out, new_state = model(variables, x, train=train, rngs=rngs_dict)
    if isinstance(new_state, Mapping) and "batch_stats" in new_state:
      new_stats = new_state["batch_stats"]
    elif new_state:
      new_stats = new_state
    else:
      new_stats = variables.get("batch_stats", {})
  if not isinstance(out, Mapping):
    out = {"logits": out}
  return dict(out), new_stats


def _init_variables(module: Any, key: jax.Array, x: jax.Array) -> dict:
  if isinstance(module, nn.Module):
    return init_variables(module, key, x)
  raise ValueError(
    f"cannot initialize {type(module).__name__}: pass model_variables= for a "
    "model that is not a flax.linen.Module"
  )


def create_train_state(
  model: Any,
  method: Method,
  *,
  key: jax.Array,
  example_x: jax.Array,
  model_variables: Mapping[str, Any] | None = None,
  extra_variables: Mapping[str, Mapping[str, Any]] | None = None,
  freeze: Sequence[str] = (),
  **optimizer_kwargs: Any,
) -> tuple[TrainState, optax.GradientTransformation]:
  """The one way to build a :class:`TrainState` and its optimizer.

  1. The model's variables: ``model_variables`` (pretrained or restored weights) or a
     fresh initialization on ``example_x``;
  2. the method's extra modules (:meth:`~dtl_jax.methods.Method.extra_modules`,
     declared from the model's outputs on ``example_x``): ``extra_variables[name]`` or
     a fresh initialization;
  3. parameter labels from :func:`dtl_jax.params.train_rules` (``"backbone"``,
     ``"head"``, ``"extra/<name>"``, ``"frozen"`` for ``freeze`` regexes, the method's
     :meth:`~dtl_jax.methods.Method.freeze_patterns`, a frozen model and frozen extra
     modules; per-layer labels for ``layer_decay < 1`` and adapters-only training of a
     LoRA backbone, :func:`dtl_jax.peft.engine_rules`) and the optimizer
     :func:`dtl_jax.params.make_optimizer` with ``optimizer_kwargs`` (a config's
     ``optim`` group: every key but ``layer_decay`` goes to the optimizer).

  ``key`` is split into (model init, extra-module init, the run's base rng); the
  ``i``-th extra module (by sorted name) is initialized with ``fold_in(key_extra, i)``.

  Returns:
    ``(state, tx)``: pass ``tx`` to :func:`dtl_jax.train.make_train_step`.

  Raises:
    ValueError: a learning-rate multiplier for a parameter group that does not exist.
  """
  init_key, extra_key, run_key = xla_options.split_keys(key, 3)
  example_x = jnp.asarray(example_x[:1])
  variables = (
    dict(model_variables)
    if model_variables is not None
    else _init_variables(model, init_key, example_x)
  )
  variables.setdefault("batch_stats", {})
  # The extra modules are sized from the SHAPES of the model's outputs: eval_shape, not a
  # compiled forward pass (start-up time); the example outputs are zeros of those shapes.
  shapes, _ = jax.eval_shape(
    lambda v, x: apply_model(model, v, x, train=False), variables, example_x
  )
  outputs = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  extras = method.extra_modules({"x": example_x, **outputs})
  given = dict(extra_variables or {})
  unknown = sorted(set(given) - set(extras))
  if unknown:
    raise ValueError(
      f"extra_variables for {unknown}, but method {method.name!r} declares "
      f"the extra modules {sorted(extras)}"
    )
  extra_params, extra_stats = {}, {}
  for i, (name, extra) in enumerate(sorted(extras.items())):
    ev = given.get(name)
    if ev is None:
      ev = _init_variables(
        extra.module,
        xla_options.run_once(jax.random.fold_in, extra_key, i),
        jnp.asarray(extra.init_input),
      )
    extra_params[name] = ev["params"]
    extra_stats[name] = ev.get("batch_stats", {})
  params = {"model": variables["params"], "extra": extra_params}
  batch_stats = {"model": variables["batch_stats"], "extra": extra_stats}
  groups = {"backbone", "head", *(f"extra/{n}" for n in extras)}
  asked = dict(optimizer_kwargs.pop("multipliers", None) or {})
  unknown = sorted(set(asked) - groups)
  if unknown:
    raise ValueError(
      f"optim.multipliers: no parameter group {unknown}; the groups are {sorted(groups)}"
    )
  backbone_rules, layer_mults = peft.engine_rules(
    getattr(model, "backbone", None),
    layer_decay=float(optimizer_kwargs.pop("layer_decay", 1.0)),
    backbone_multiplier=float(asked.get("backbone", 1.0)),
  )
  rules, extra_mults = params_lib.train_rules(
    freeze=tuple(freeze) + tuple(method.freeze_patterns()),
    extras=extras,
    model_frozen=method.model_frozen(),
    backbone_rules=backbone_rules,
  )
  labels = params_lib.label_params(params, rules, allow_unused=True)
  present = set(jax.tree.leaves(labels))
  multipliers = {
    k: float(v) for k, v in {**extra_mults, **layer_mults, **asked}.items() if k in present
  }
  tx = params_lib.make_optimizer(labels, multipliers=multipliers, **optimizer_kwargs)
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=xla_options.run_once(tx.init, params),
    rng=run_key,
  )
  return state, tx
