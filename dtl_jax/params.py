"""Frozen and trainable parameter groups as optax partitions (network-based transfer).

Every parameter leaf gets a **label** from ordered regex rules on its ``/``-joined path
(``"backbone/layer1/0/conv1/kernel"``; the first rule whose regex *fullmatches* wins).
Labels map to optimizers with :func:`optax.partition`: labels in ``frozen`` get
:func:`optax.set_to_zero` (no update, no optimizer state), the others the base optimizer
with an optional learning-rate multiplier and weight decay. Recipes cover the usual
experiments: freezing the first k stages (Yosinski et al., "How transferable are
features in deep neural networks?", NeurIPS 2014), linear probing, and full
fine-tuning with a 0.1 backbone multiplier (TLlib). :func:`l2_sp` is the L2-SP
regularizer of Li, Grandvalet & Davoine (ICML 2018) as a loss term;
:func:`add_start_point_decay` (``make_optimizer(..., l2_sp=alpha)``, config
``optim.l2_sp``) is its gradient inside the optimizer, with the start point kept in the
optimizer state.

Frozen BatchNorm statistics are the model's job: pass
``frozen_bn=frozen_bn_from_labels(labels)`` (or a recipe's ``frozen_bn``) to
:class:`~dtl_jax.models.TransferModel` so frozen BN layers run in inference mode.

This module owns parameter labels and optimizers: :func:`make_optimizer` takes the
keys of a config's ``optim`` group, and :func:`train_rules` gives the training engine's
labels (``backbone``, ``head``, ``extra/<name>``, ``frozen``).

Example::

  rules = [("backbone/(conv1|bn1|layer1)/.*", "frozen"), ("backbone/.*", "backbone"),
           (".*", "head")]
  labels = label_params(params, rules)
  tx = make_optimizer(labels, learning_rate=0.01, momentum=0.9,
                      multipliers={"backbone": 0.1})
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Rules = Sequence[tuple[str, str]]

FROZEN = "frozen"


def path_str(path: Sequence[Any]) -> str:
  """``"a/b/c"`` from a JAX key path (dict keys, attribute names, sequence indices)."""
  out = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      out.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      out.append(k.name)
    elif isinstance(k, jax.tree_util.SequenceKey):
      out.append(str(k.idx))
    elif isinstance(k, jax.tree_util.FlattenedIndexKey):
      out.append(str(k.key))
    else:
      out.append(str(k))
  return "/".join(out)


def _check_rules(rules: Rules) -> list[tuple[re.Pattern, str]]:
  if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence) or not rules:
    raise ValueError(f"rules must be a non-empty sequence of (regex, label) pairs, got {rules!r}")
  compiled = []
  for i, rule in enumerate(rules):
    if not (
      isinstance(rule, (tuple, list))
      and len(rule) == 2
      and isinstance(rule[0], str)
      and isinstance(rule[1], str)
    ):
      raise ValueError(f"rules[{i}] must be a (regex, label) pair of strings, got {rule!r}")
    try:
      compiled.append((re.compile(rule[0]), rule[1]))
    except re.error as e:
      raise ValueError(f"rules[{i}]: invalid regex {rule[0]!r}: {e}") from e
  return compiled


def label_params(params: Any, rules: Rules, *, allow_unused: bool = False) -> Any:
  """Labels every leaf of ``params`` by the first rule whose regex fullmatches its path.

  Args:
    params: a pytree (usually the ``params`` collection).
    rules: ordered ``(regex, label)`` pairs, e.g.
      ``[("backbone/layer1/.*", "frozen"), ("backbone/.*", "backbone"), (".*", "head")]``.
    allow_unused: do not complain about a regex that matches no path at all.

  Returns:
    A pytree of label strings with the structure of ``params``.

  Raises:
    ValueError: a leaf matches no rule (the unlabeled paths are listed), or a rule's
      regex matches no path (a typo; the available paths are sampled in the message).
  """
  compiled = _check_rules(rules)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  if not flat:
    raise ValueError("params has no leaves to label")
  paths = [path_str(p) for p, _ in flat]
  labels: list[str | None] = []
  unlabeled: list[str] = []
  for path in paths:
    for rx, label in compiled:
      if rx.fullmatch(path):
        labels.append(label)
        break
    else:
      unlabeled.append(path)
      labels.append(None)
  if unlabeled:
    shown = "\n  ".join(unlabeled[:20])
    more = f"\n  ... and {len(unlabeled) - 20} more" if len(unlabeled) > 20 else ""
    raise ValueError(
      f"rules leave {len(unlabeled)} parameter(s) unlabeled (add a catch-all "
      f"rule such as ('.*', 'head')):\n  {shown}{more}"
    )
  if not allow_unused:
    for i, (rx, label) in enumerate(compiled):
      if not any(rx.fullmatch(p) for p in paths):
        sample = ", ".join(paths[:8])
        raise ValueError(
          f"rules[{i}] = ({rx.pattern!r}, {label!r}) matches no parameter "
          f"path (paths look like: {sample}, ...)"
        )
  return jax.tree_util.tree_unflatten(treedef, labels)


def _label_set(labels_or_rules: Any) -> tuple[set[str], Callable[[Any], Any] | Any]:
  if (
    isinstance(labels_or_rules, Sequence)
    and not isinstance(labels_or_rules, str)
    and labels_or_rules
    and all(
      isinstance(r, (tuple, list)) and len(r) == 2 and all(isinstance(s, str) for s in r)
      for r in labels_or_rules
    )
  ):
    _check_rules(labels_or_rules)
    rules = list(labels_or_rules)
    return {label for _, label in rules}, lambda params: label_params(params, rules)
  leaves = jax.tree_util.tree_leaves(labels_or_rules)
  if not leaves or not all(isinstance(leaf, str) for leaf in leaves):
    raise ValueError(
      "labels_or_rules must be a pytree of label strings or a sequence of (regex, label) rules"
    )
  return set(leaves), labels_or_rules


def tllib_schedule(
  learning_rate: float, *, gamma: float = 1e-3, decay: float = 0.75
) -> optax.Schedule:
  """``step -> learning_rate * (1 + gamma * step) ** (-decay)`` (Ganin & Lempitsky 2015;
  TLlib's ``LambdaLR``); ``gamma = 0`` is a constant learning rate."""
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  if gamma < 0:
    raise ValueError(f"lr_gamma must be >= 0, got {gamma}")

  def schedule(step):
    return learning_rate * (1.0 + gamma * step) ** (-decay)

  return schedule


def make_optimizer(
  labels_or_rules: Any,
  *,
  kind: str = "sgd",
  learning_rate: float | optax.Schedule | None = None,
  momentum: float = 0.0,
  nesterov: bool = False,
  weight_decay: float | Mapping[str, float] = 0.0,
  lr_gamma: float = 0.0,
  lr_decay: float = 0.75,
  b1: float = 0.9,
  b2: float = 0.999,
  grad_clip: float = 0.0,
  multipliers: Mapping[str, float] | None = None,
  frozen: Sequence[str] = (FROZEN,),
  base_tx: optax.GradientTransformation | None = None,
  l2_sp: float = 0.0,
) -> optax.GradientTransformation:
  """The optimizer of a labelled parameter tree: frozen groups, lr multipliers, decay.

  For a label ``g``: frozen -> ``optax.set_to_zero()`` (no update, no optimizer
  state, the parameters stay bit-identical); otherwise
  ``u_g = mult_g * base_g(grad)`` where ``base_g`` is

  * ``kind="sgd"``: PyTorch's SGD as TLlib uses it, coupled weight decay
    ``grad + wd_g * w``, then momentum (optionally Nesterov) and the learning rate;
  * ``kind="adam"``: AdamW (``b1``, ``b2``) with decoupled weight decay ``wd_g``;

  with the learning rate ``learning_rate * (1 + lr_gamma * step) ** -lr_decay``
  (:func:`tllib_schedule`; ``lr_gamma = 0`` is constant, a schedule function is used
  as given). Scaling the final update is exactly ``lr * mult`` for SGD (with momentum)
  and Adam(W): TLlib's per-group learning rate. ``grad_clip > 0`` clips the global
  gradient norm first. Every key of a config's ``optim`` group is an argument here::

    tx = make_optimizer(labels, **config.optim)

  Args:
    labels_or_rules: a label pytree (:func:`label_params`) or the rules themselves
      (the labels are then computed from the params at ``init``).
    kind: ``"sgd"`` or ``"adam"``.
    learning_rate: float or ``optax`` schedule (required unless ``base_tx``).
    momentum, nesterov: SGD momentum (0 = none).
    weight_decay: one value for every trainable label, or ``{label: wd}``.
    lr_gamma, lr_decay: TLlib's schedule (for a float ``learning_rate``).
    b1, b2: Adam's moment decays, in [0, 1).
    grad_clip: global-norm clipping threshold; 0 = off.
    multipliers: ``{label: mult}``, default 1 (TLlib: ``{"backbone": 0.1}``).
    frozen: labels that receive no update.
    base_tx: a ready transformation instead of ``kind`` / ``learning_rate`` / ...
      (weight decay and multipliers still apply).
    l2_sp: L2-SP's ``alpha`` (Li et al., ICML 2018) on the ``"backbone"`` labels (and
      ``"backbone/..."``, the per-layer labels of layer-wise decay): their gradient gets
      ``alpha (w - w0)``, ``w0`` = their values at ``init`` (the pretrained weights),
      before the optimizer (:func:`add_start_point_decay`); 0 = off. Plain
      ``weight_decay`` still applies to the other groups (the paper's ``beta``).

  Returns:
    An ``optax.GradientTransformation`` (an ``optax.partition``).

  Raises:
    ValueError: no learning rate, an unknown ``kind``, a multiplier or weight decay for
      an unknown or frozen label, a negative multiplier / decay, betas outside [0, 1).
  """
  label_set, param_labels = _label_set(labels_or_rules)
  if kind not in ("sgd", "adam"):
    raise ValueError(f"kind must be 'sgd' or 'adam', got {kind!r}")
  for name, beta in (("b1", b1), ("b2", b2)):
    if not 0.0 <= beta < 1.0:
      raise ValueError(f"{name} must be in [0, 1), got {beta}")
  if base_tx is None and learning_rate is None:
    raise ValueError("give learning_rate (or a ready base_tx)")
  frozen_labels = set(frozen)
  trainable = sorted(label_set - frozen_labels)
  if isinstance(weight_decay, Mapping):
    decay = dict(weight_decay)
  else:
    if weight_decay < 0:
      raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decay = {label: float(weight_decay) for label in trainable} if weight_decay else {}
  multipliers = dict(multipliers or {})
  for name, table in (("multipliers", multipliers), ("weight_decay", decay)):
    for label, value in table.items():
      if label not in label_set:
        raise ValueError(f"{name}: unknown label {label!r}; labels are {sorted(label_set)}")
      if label in frozen_labels:
        raise ValueError(f"{name}: label {label!r} is frozen, it gets no update")
      if value < 0:
        raise ValueError(f"{name}[{label!r}] must be >= 0, got {value}")
  if l2_sp < 0:
    raise ValueError(f"l2_sp must be >= 0, got {l2_sp}")
  schedule = learning_rate
  if isinstance(learning_rate, (int, float)):
    schedule = tllib_schedule(float(learning_rate), gamma=lr_gamma, decay=lr_decay)

  def base(wd: float) -> list[optax.GradientTransformation]:
    if base_tx is not None:
      return ([optax.add_decayed_weights(wd)] if wd else []) + [base_tx]
    if kind == "adam":
      return [optax.adamw(schedule, b1=b1, b2=b2, weight_decay=wd)]
    sgd = optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov)
    return ([optax.add_decayed_weights(wd)] if wd else []) + [sgd]

  transforms = {}
  for label in sorted(label_set):
    if label in frozen_labels:
      transforms[label] = optax.set_to_zero()
      continue
    parts = base(decay.get(label, 0.0))
    if l2_sp and (label == "backbone" or label.startswith("backbone/")):
      parts.insert(0, add_start_point_decay(l2_sp))
    if multipliers.get(label, 1.0) != 1.0:
      parts.append(optax.scale(multipliers[label]))
    transforms[label] = parts[0] if len(parts) == 1 else optax.chain(*parts)
  tx = optax.partition(transforms, param_labels)
  if grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip), tx)
  return tx


class StartPointState(NamedTuple):
  """State of :func:`add_start_point_decay`: the parameters at ``init``."""

  start: Any


def add_start_point_decay(alpha: float) -> optax.GradientTransformation:
  r"""Adds the gradient of L2-SP's start-point term, ``alpha (w - w0)``, to the updates.

  ``w0`` is a copy of the parameters given to ``init`` (pretrained or restored weights),
  kept in the optimizer state, so it is checkpointed with the run and a resumed run
  keeps its anchor. With plain SGD this is exactly training on
  ``loss + alpha / 2 * ||w - w0||^2`` (:func:`l2_sp`); before Adam it is the coupled
  (L2, not decoupled) form, as the regularizer is a loss term.

  Args:
    alpha: ``>= 0``.
  """
  if alpha < 0:
    raise ValueError(f"alpha must be >= 0, got {alpha}")

  def init_fn(params):
    return StartPointState(start=jax.tree.map(jnp.copy, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("add_start_point_decay needs the params: tx.update(grads, state, params)")
    new = jax.tree.map(
      lambda g, p, w0: g + (alpha * (p - w0)).astype(g.dtype), updates, params, state.start
    )
    return new, state

  return optax.GradientTransformation(init_fn, update_fn)


def train_rules(
  *,
  freeze: Sequence[str] = (),
  extras: Mapping[str, Any] | None = None,
  model_frozen: bool = False,
  backbone_rules: Sequence[tuple[str, str]] = (),
  prefix: str = "model/",
) -> tuple[list[tuple[str, str]], dict[str, float]]:
  """The training engine's labels for a ``{"model": ..., "extra": ...}`` param tree.

  Labels: ``"frozen"`` (``freeze`` regexes, all of the model when ``model_frozen``,
  frozen extra modules), ``"backbone"`` (``model/backbone/...``), ``"head"`` (the rest
  of the model: bottleneck and classifier) and ``"extra/<name>"`` per trainable extra
  module (a method's discriminator, with its declared ``lr_mult``).

  Args:
    freeze: regexes on paths inside the model (``"backbone/layer1/.*"``).
    extras: ``{name: dtl_jax.methods.Extra}`` declared by the method.
    model_frozen: freeze the whole model.
    backbone_rules: rules (on full paths) that label backbone parameters before the
      generic ``"backbone"`` rule, e.g. layer-wise decay labels or LoRA's adapters-only
      rule (:func:`dtl_jax.peft.engine_rules`).
    prefix: where the model sits in the tree.

  Returns:
    ``(rules, multipliers)``: the rules for :func:`label_params` (with
    ``allow_unused=True``: a small model need not use them all) and the extra modules'
    learning-rate multipliers.
  """
  rules: list[tuple[str, str]] = []
  mults: dict[str, float] = {}
  if model_frozen:
    rules.append((f"{prefix}.*", FROZEN))
  rules.extend((f"{prefix}{rx}", FROZEN) for rx in freeze)
  rules.extend(backbone_rules)
  rules.append((f"{prefix}backbone/.*", "backbone"))
  rules.append((f"{prefix}.*", "head"))
  for name, spec in (extras or {}).items():
    label = f"extra/{name}" if spec.trainable else FROZEN
    rules.append((f"extra/{re.escape(name)}/.*", label))
    if spec.trainable:
      mults[label] = spec.lr_mult
  return rules, mults


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A fine-tuning recipe: rules, multipliers and the matching frozen-BN regexes.

  Attributes:
    rules: ordered ``(regex, label)`` pairs for :func:`label_params`.
    multipliers: ``{label: lr multiplier}``.
    frozen_bn: regexes for ``TransferModel(frozen_bn=...)`` (BN layers of frozen
      stages stay in inference mode).
  """

  rules: tuple[tuple[str, str], ...]
  multipliers: Mapping[str, float]
  frozen_bn: tuple[str, ...]

  def optimizer(self, **kwargs) -> optax.GradientTransformation:
    """``make_optimizer(self.rules, multipliers=self.multipliers, **kwargs)``."""
    return make_optimizer(self.rules, multipliers=self.multipliers, **kwargs)


RESNET_STAGES = ("conv1|bn1", "layer1", "layer2", "layer3", "layer4")


def _prefix(prefix: str) -> str:
  return prefix.strip("/") + "/" if prefix.strip("/") else ""


def freeze_first_k(
  k: int,
  *,
  stages: Sequence[str] = RESNET_STAGES,
  prefix: str = "backbone",
  params_prefix: str = "",
  backbone_multiplier: float = 1.0,
) -> Recipe:
  """Freezes the first ``k`` backbone stages (Yosinski et al., NeurIPS 2014).

  Args:
    k: number of stages to freeze, ``0 <= k <= len(stages)``.
    stages: stage name regexes in forward order (a backbone's ``stages`` attribute;
      ResNet: stem ``conv1|bn1``, ``layer1`` ... ``layer4``).
    prefix: path of the backbone inside the model (``"backbone"`` in a TransferModel,
      ``""`` for a bare backbone).
    params_prefix: path of the model inside the labeled tree (``"model/"`` for the
      train engine's ``{"model", "extra"}`` tree); rules get it, ``frozen_bn`` not.
    backbone_multiplier: lr multiplier of the trainable backbone stages.

  Returns:
    A :class:`Recipe` with labels ``frozen`` / ``backbone`` / ``head``.
  """
  if not 0 <= k <= len(stages):
    raise ValueError(f"k must be in [0, {len(stages)}] (number of stages), got {k}")
  m = _prefix(prefix)
  p = _prefix(params_prefix) + m
  rules = []
  frozen_bn: tuple[str, ...] = ()
  if k:
    alts = "|".join(stages[:k])
    rules.append((f"{p}({alts})/.*", FROZEN))
    frozen_bn = (f"{m}({alts})(/.*)?",)
  if k < len(stages):
    rules.append((f"{p}.*", "backbone"))
  rules.append((".*", "head"))
  mult = {"backbone": backbone_multiplier} if k < len(stages) else {}
  return Recipe(tuple(rules), mult, frozen_bn)


def linear_probe(*, prefix: str = "backbone", params_prefix: str = "") -> Recipe:
  """Only the head trains: the whole backbone (weights and BN statistics) is frozen.

  ``prefix`` / ``params_prefix`` as in :func:`freeze_first_k`.
  """
  m = _prefix(prefix)
  p = _prefix(params_prefix) + m
  return Recipe(((f"{p}.*", FROZEN), (".*", "head")), {}, (f"{m}.*",))


def finetune(
  *, backbone_multiplier: float = 0.1, prefix: str = "backbone", params_prefix: str = ""
) -> Recipe:
  """Full fine-tuning, backbone learning rate ``backbone_multiplier`` x the head's (TLlib).

  ``prefix`` / ``params_prefix`` as in :func:`freeze_first_k`.
  """
  if backbone_multiplier < 0:
    raise ValueError(f"backbone_multiplier must be >= 0, got {backbone_multiplier}")
  p = _prefix(params_prefix) + _prefix(prefix)
  return Recipe(((f"{p}.*", "backbone"), (".*", "head")), {"backbone": backbone_multiplier}, ())


def frozen_bn_from_labels(
  labels: Any, *, frozen: Sequence[str] = (FROZEN,), strip_prefix: str = ""
) -> tuple[str, ...]:
  """Exact regexes of the BatchNorm layers whose ``scale`` is labeled frozen.

  Args:
    labels: label pytree from :func:`label_params` over a model's ``params``.
    frozen: the frozen labels.
    strip_prefix: drop this leading path (e.g. ``"model/"`` for the train engine's
      ``{"model": ...}`` tree) so the paths are relative to the model.

  Returns:
    Escaped module paths for ``TransferModel(frozen_bn=...)``.
  """
  out = []
  frozen_labels = set(frozen)
  for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]:
    s = path_str(path)
    if s.endswith("/scale") and label in frozen_labels:
      module = s[: -len("/scale")]
      if strip_prefix and module.startswith(strip_prefix):
        module = module[len(strip_prefix) :]
      out.append(re.escape(module))
  return tuple(out)


def summary(params: Any, labels: Any, *, frozen: Sequence[str] = (FROZEN,)) -> str:
  """A table of parameter counts per label, frozen vs trainable.

  Args:
    params: the parameter pytree.
    labels: matching label pytree.
    frozen: labels counted as frozen.

  Returns:
    The table as a string (``print(summary(...))``)::

      label      status       tensors   parameters
      frozen     frozen            12       1,234
      ...
  """
  p_leaves = jax.tree_util.tree_leaves(params)
  l_leaves = jax.tree_util.tree_leaves(labels)
  if len(p_leaves) != len(l_leaves):
    raise ValueError(
      f"labels must have the structure of params ({len(p_leaves)} leaves), "
      f"got {len(l_leaves)} leaves"
    )
  rows: dict[str, list[int]] = {}
  for p, label in zip(p_leaves, l_leaves, strict=True):
    r = rows.setdefault(label, [0, 0])
    r[0] += 1
    r[1] += int(jnp.size(p))
  frozen_labels = set(frozen)
  width = max([len("label")] + [len(k) for k in rows])
  lines = [f"{'label':<{width}}  {'status':<9}  {'tensors':>7}  {'parameters':>14}"]
  tot = {True: 0, False: 0}
  for label in sorted(rows):
    n_t, n_p = rows[label]
    is_frozen = label in frozen_labels
    tot[is_frozen] += n_p
    lines.append(
      f"{label:<{width}}  {'frozen' if is_frozen else 'trainable':<9}  {n_t:>7}  {n_p:>14,}"
    )
  lines.append(f"{'total':<{width}}  {'':<9}  {len(p_leaves):>7}  {tot[True] + tot[False]:>14,}")
  lines.append(f"trainable {tot[False]:,} / frozen {tot[True]:,}")
  return "\n".join(lines)


def l2_sp(
  params: Any,
  start_params: Any,
  *,
  labels: Any,
  alpha: float,
  beta: float = 0.0,
  groups: Sequence[str] = ("backbone",),
  new_groups: Sequence[str] = ("head",),
) -> jax.Array:
  r"""L2-SP regularizer (Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer
  Learning with Convolutional Networks", ICML 2018).

  .. math::
     \Omega(w) = \frac{\alpha}{2} \lVert w_S - w_S^0 \rVert_2^2
               + \frac{\beta}{2} \lVert w_{\bar S} \rVert_2^2

  where ``w_S`` are the leaves labeled in ``groups`` (shared with the source model,
  pulled towards their starting values ``w^0``) and ``w_{\bar S}`` those in
  ``new_groups`` (new layers, plain weight decay). Other labels do not contribute.

  Args:
    params: current parameters.
    start_params: starting (pretrained) parameters, same structure.
    labels: label pytree, same structure.
    alpha: weight of the start-point term, >= 0 (paper: 0.01 - 0.1).
    beta: weight of the plain L2 on new layers, >= 0 (paper: 0.01).
    groups: labels pulled towards the start point.
    new_groups: labels with plain L2.

  Returns:
    Scalar penalty, float32 for float32 params.
  """
  if alpha < 0 or beta < 0:
    raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
  p_flat, treedef = jax.tree_util.tree_flatten(params)
  s_flat, s_def = jax.tree_util.tree_flatten(start_params)
  l_flat = jax.tree_util.tree_leaves(labels)
  # jax declares PyTreeDef as a variable alias (`PyTreeDef = pytree.PyTreeDef`), which
  # mypy cannot use as a type, so it cannot type the comparison.
  if s_def != treedef:  # type: ignore[operator]
    raise ValueError("start_params must have the structure of params")
  if len(l_flat) != len(p_flat):
    raise ValueError(
      f"labels must have the structure of params ({len(p_flat)} leaves), got {len(l_flat)}"
    )
  present = set(l_flat)
  for g in tuple(groups) + tuple(new_groups):
    if g not in present:
      raise ValueError(f"groups: label {g!r} labels no parameter; labels are {sorted(present)}")
  dtype = jnp.result_type(*p_flat) if p_flat else jnp.float32
  sp = jnp.zeros((), dtype)
  l2 = jnp.zeros((), dtype)
  for p, s, label in zip(p_flat, s_flat, l_flat, strict=True):
    if label in groups:
      if jnp.shape(p) != jnp.shape(s):
        raise ValueError(f"start_params leaf shape {jnp.shape(s)} != params {jnp.shape(p)}")
      sp = sp + jnp.sum(jnp.square(p - s))
    elif label in new_groups:
      l2 = l2 + jnp.sum(jnp.square(p))
  return (0.5 * alpha * sp + 0.5 * beta * l2).astype(dtype)
