"""The composite transfer model and the DESIGN.md apply contract.

``TransferModel(backbone, bottleneck, head)`` computes

    features = backbone(x), bottleneck = bottleneck(features), logits = head(bottleneck)

and returns them as a dict. :func:`make_apply_fn` wraps any such model into the
contract every method and train step uses::

    apply_fn(variables, x, *, train, rngs=None) -> (outputs, new_model_state)

``outputs`` holds ``"features"``, ``"bottleneck"``, ``"logits"`` plus any intermediate
module output asked for by path (``layers=("backbone/layer3",)``, JMMD-style);
``new_model_state`` is ``{"batch_stats": ...}`` (updated when ``train=True``,
unchanged otherwise; ``{}`` for a model without BatchNorm).

Frozen BatchNorm: ``TransferModel(..., frozen_bn=(regex, ...))`` keeps every
BatchNorm whose path (e.g. ``"backbone/layer1/0/bn1"``) or variable path
(``".../scale"``) fullmatches a regex in inference mode, so its statistics never change
(see :mod:`dtl_jax.models.layers`; :func:`dtl_jax.params.frozen_bn_from_labels`
derives the regexes from parameter labels). ``bn_axis_name`` averages batch statistics
over a ``pmap`` / ``shard_map`` axis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax

from dtl_jax import xla_options

ApplyFn = Callable[..., tuple[dict[str, jax.Array], dict[str, Any]]]


class TransferModel(nn.Module):
  """Backbone -> (bottleneck) -> (head), returning named outputs.

  ``x: [n, ...] -> {"features": [n, d], "bottleneck": [n, b], "logits": [n, c]}``.
  Without a bottleneck, ``"bottleneck"`` is the features; without a head there are no
  ``"logits"``. Sub-modules are called as ``module(x, train=train)``. A backbone may
  return a dict (a :class:`~dtl_jax.models.VisionTransformer`): its ``"features"`` feed
  the bottleneck, and its per-block outputs ``"block_<i>"`` (asked for with
  ``return_blocks``) are passed on as ``"backbone/block_<i>"`` for methods that align
  intermediate layers (e.g. ``feature_key="backbone/block_5"``).

  Attributes:
    backbone: feature extractor (e.g. :class:`~dtl_jax.models.ResNet`).
    bottleneck: optional :class:`~dtl_jax.models.Bottleneck`.
    head: optional :class:`~dtl_jax.models.Classifier`.
    frozen_bn: regexes of BatchNorm layers to keep in inference mode.
    bn_axis_name: named axis for cross-device BatchNorm statistics.
  """

  backbone: nn.Module
  bottleneck: nn.Module | None = None
  head: nn.Module | None = None
  frozen_bn: tuple[str, ...] = ()
  bn_axis_name: str | None = None

  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    backbone_out = self.backbone(x, train=train)
    extra: dict[str, jax.Array] = {}
    if isinstance(backbone_out, Mapping):  # e.g. a ViT: {"features", "block_<i>", ...}
      features = backbone_out["features"]
      extra = {f"backbone/{k}": v for k, v in backbone_out.items() if k.startswith("block_")}
    else:
      features = backbone_out
    if features.ndim != 2:
      raise ValueError(f"backbone must return [n, d] features, got shape {features.shape}")
    bottleneck = features if self.bottleneck is None else self.bottleneck(features, train=train)
    out = {"features": features, "bottleneck": bottleneck, **extra}
    if self.head is not None:
      out["logits"] = self.head(bottleneck, train=train)
    return out


def init_variables(model: nn.Module, key: jax.Array, x: jax.Array) -> dict[str, Any]:
  """``{"params": ..., "batch_stats": ...}`` of ``model`` on example input ``x``.

  Initializes in inference mode (no dropout key needed, statistics untouched).
  ``batch_stats`` is ``{}`` for a model without BatchNorm.

  Start-up cost: the initialization runs as ONE jitted computation compiled with XLA's
  backend optimizations off (:func:`dtl_jax.xla_options.run_once`). Op by op, a small model's
  initializers and forward pass cost dozens of separate compilations, and the random
  initializers (threefry bits, truncated normals) are slow to optimize: for the DANN
  MNIST network the optimized compile took ~6x longer than this one, for a computation
  that runs once (the values differ by at most a few float32 ulps). A model whose
  initialization needs concrete values falls back to eager execution.
  """

  def init(key: jax.Array, x: jax.Array) -> Any:
    pkey, dkey = jax.random.split(key)
    return model.init({"params": pkey, "dropout": dkey}, x, train=False)

  variables = xla_options.run_once(init, key, x)
  variables = flax.core.unfreeze(variables)
  variables.setdefault("batch_stats", {})
  return variables


def _lookup(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
  for name in path:
    if not isinstance(tree, Mapping) or name not in tree:
      return None
    tree = tree[name]
  return tree


def _module_paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
  out = []
  for k, v in tree.items():
    if k == "__call__":
      out.append("/".join(prefix))
    elif isinstance(v, Mapping):
      out.extend(_module_paths(v, prefix + (k,)))
  return out


def make_apply_fn(model: nn.Module, *, layers: Sequence[str] = ()) -> ApplyFn:
  """Wraps ``model`` into ``apply_fn(variables, x, *, train, rngs=None)``.

  Args:
    model: a module whose ``__call__(x, *, train)`` returns a dict (``TransferModel``)
      or an array (then returned as ``{"logits": ...}``).
    layers: module paths whose outputs are added to ``outputs`` under the same name,
      e.g. ``("backbone/layer3", "bottleneck/fc")``.

  Returns:
    ``apply_fn(variables, x, *, train, rngs=None) -> (outputs, new_model_state)``;
    ``rngs`` needs ``{"dropout": key}`` when ``train=True`` and the model has dropout.

  Raises:
    ValueError (when called): a requested layer does not exist; the message lists the
      module paths that do.
  """
  wanted = tuple(layers)
  wanted_set = set(wanted)

  def capture(mdl: nn.Module, method_name: str) -> bool:
    return method_name == "__call__" and "/".join(mdl.path) in wanted_set

  def apply_fn(
    variables: Mapping[str, Any],
    x: jax.Array,
    *,
    train: bool,
    rngs: Mapping[str, jax.Array] | None = None,
  ):
    variables = dict(variables)
    if not variables.get("batch_stats"):
      variables.pop("batch_stats", None)
    mutable = ["batch_stats"] if (train and "batch_stats" in variables) else []
    if wanted:
      mutable.append("intermediates")
    result = model.apply(
      variables,
      x,
      train=train,
      rngs=None if rngs is None else dict(rngs),
      mutable=mutable or False,
      capture_intermediates=capture if wanted else False,
    )
    out, state = result if mutable else (result, {})
    state = dict(state)
    inter = state.pop("intermediates", {})
    outputs = dict(out) if isinstance(out, Mapping) else {"logits": out}
    for name in wanted:
      found = _lookup(inter, name.split("/") + ["__call__"])
      if found is None:
        everything = jax.eval_shape(
          lambda v, x: model.apply(
            v, x, train=False, capture_intermediates=True, mutable=["intermediates"]
          )[1]["intermediates"],
          {k: v for k, v in variables.items()},
          x,
        )
        raise ValueError(
          f"layers: no module {name!r}; module paths are "
          f"{sorted(p for p in _module_paths(everything) if p)}"
        )
      outputs[name] = found[-1]
    if train and "batch_stats" in variables:
      new_state = {"batch_stats": state["batch_stats"]}
    else:
      new_state = {k: v for k, v in variables.items() if k != "params"}
    return outputs, new_state

  return apply_fn
