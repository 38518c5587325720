"""Frozen and trainable parameter groups as optax partitions (network-based transfer).

Every parameter leaf gets a **label** from ordered regex rules on its ``/``-joined path
(``"backbone/layer1/0/conv1/kernel"``; the first rule whose regex *fullmatches* wins).
Labels map to optimizers with :func:`optax.partition`: labels in ``frozen`` get
:func:`optax.set_to_zero` (no update, no optimizer state), the others the base optimizer
with an optional learning-rate multiplier and weight decay. Recipes cover the usual
experiments: freezing the first k stages (Yosinski et al., "How transferable are
features in deep neural networks?", NeurIPS 2014), linear probing, and full
fine-tuning with a 0.1 backbone multiplier (TLlib). :func:`l2_sp` is the L2-SP
regularizer of Li, Grandvalet & Davoine (ICML 2018).

Frozen BatchNorm statistics are the model's job: pass
``frozen_bn=frozen_bn_from_labels(labels)`` (or a recipe's ``frozen_bn``) to
:class:`~dtl_jax.models.TransferModel` so frozen BN layers run in inference mode.

Example::

  rules = [("backbone/(conv1|bn1|layer1)/.*", "frozen"), ("backbone/.*", "backbone"),
           (".*", "head")]
  labels = label_params(params, rules)
  tx = make_optimizer(labels, learning_rate=0.01, multipliers={"backbone": 0.1})
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)
            and isinstance(rule[1], str)):
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
    raise ValueError(f"rules leave {len(unlabeled)} parameter(s) unlabeled (add a catch-all "
                     f"rule such as ('.*', 'head')):\n  {shown}{more}")
  if not allow_unused:
    for i, (rx, label) in enumerate(compiled):
      if not any(rx.fullmatch(p) for p in paths):
        sample = ", ".join(paths[:8])
        raise ValueError(f"rules[{i}] = ({rx.pattern!r}, {label!r}) matches no parameter "
                         f"path (paths look like: {sample}, ...)")
  return jax.tree_util.tree_unflatten(treedef, labels)


def _label_set(labels_or_rules: Any) -> tuple[set[str], Callable[[Any], Any] | Any]:
  if (isinstance(labels_or_rules, Sequence) and not isinstance(labels_or_rules, str)
      and labels_or_rules and all(isinstance(r, (tuple, list)) and len(r) == 2
                                  and all(isinstance(s, str) for s in r)
                                  for r in labels_or_rules)):
    _check_rules(labels_or_rules)
    rules = list(labels_or_rules)
    return {label for _, label in rules}, lambda params: label_params(params, rules)
  leaves = jax.tree_util.tree_leaves(labels_or_rules)
  if not leaves or not all(isinstance(leaf, str) for leaf in leaves):
    raise ValueError("labels_or_rules must be a pytree of label strings or a sequence of "
                     "(regex, label) rules")
  return set(leaves), labels_or_rules


def make_optimizer(labels_or_rules: Any, *, learning_rate: float | optax.Schedule | None = None,
                   base_tx_fn: Callable[[Any], optax.GradientTransformation] | None = None,
                   base_tx: optax.GradientTransformation | None = None,
                   multipliers: Mapping[str, float] | None = None,
                   frozen: Sequence[str] = (FROZEN,),
                   weight_decay: Mapping[str, float] | None = None
                   ) -> optax.GradientTransformation:
  """An optimizer with frozen groups, learning-rate multipliers and per-group decay.

  For a label ``g``: frozen -> ``optax.set_to_zero()``; otherwise
  ``chain(add_decayed_weights(wd_g), base, scale(mult_g))``, i.e. update
  ``u_g = mult_g * base(grad + wd_g * w)``. Scaling the final update equals scaling
  the learning rate for SGD (with momentum), Adam, etc., and makes the multiplier
  exact: the backbone update is ``mult`` times what the head rule would give for the
  same gradient.

  Args:
    labels_or_rules: a label pytree (:func:`label_params`) or the rules themselves
      (labels are then computed from the params at ``init``).
    learning_rate: float or schedule for ``base_tx_fn`` (default ``optax.sgd``).
    base_tx_fn: ``learning_rate -> GradientTransformation``, e.g.
      ``lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True)``.
    base_tx: a ready transformation instead of ``learning_rate`` / ``base_tx_fn``.
    multipliers: ``{label: mult}``, default 1 (TLlib: ``{"backbone": 0.1}``).
    frozen: labels that receive no update.
    weight_decay: ``{label: wd}``, added as ``wd * w`` to the gradient (L2, coupled)
      only for the labels listed.

  Returns:
    An ``optax.GradientTransformation`` (an ``optax.partition``).

  Raises:
    ValueError: neither / both of ``learning_rate`` and ``base_tx`` given, a multiplier
      or weight decay for an unknown or frozen label, a negative multiplier / decay.
  """
  label_set, param_labels = _label_set(labels_or_rules)
  if base_tx is None:
    if learning_rate is None:
      raise ValueError("give learning_rate (with optional base_tx_fn) or base_tx")
    base_tx = (base_tx_fn or optax.sgd)(learning_rate)
  elif learning_rate is not None or base_tx_fn is not None:
    raise ValueError("give either base_tx or learning_rate / base_tx_fn, not both")
  multipliers = dict(multipliers or {})
  weight_decay = dict(weight_decay or {})
  frozen_labels = set(frozen)
  for name, table in (("multipliers", multipliers), ("weight_decay", weight_decay)):
    for label, value in table.items():
      if label not in label_set:
        raise ValueError(f"{name}: unknown label {label!r}; labels are {sorted(label_set)}")
      if label in frozen_labels:
        raise ValueError(f"{name}: label {label!r} is frozen, it gets no update")
      if value < 0:
        raise ValueError(f"{name}[{label!r}] must be >= 0, got {value}")
  transforms = {}
  for label in sorted(label_set):
    if label in frozen_labels:
      transforms[label] = optax.set_to_zero()
      continue
    parts = []
    if weight_decay.get(label, 0.0):
      parts.append(optax.add_decayed_weights(weight_decay[label]))
    parts.append(base_tx)
    if label in multipliers and multipliers[label] != 1.0:
      parts.append(optax.scale(multipliers[label]))
    transforms[label] = parts[0] if len(parts) == 1 else optax.chain(*parts)
  return optax.partition(transforms, param_labels)


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


def freeze_first_k(k: int, *, stages: Sequence[str] = RESNET_STAGES, prefix: str = "backbone",
                   params_prefix: str = "", backbone_multiplier: float = 1.0) -> Recipe:
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


def finetune(*, backbone_multiplier: float = 0.1, prefix: str = "backbone",
             params_prefix: str = "") -> Recipe:
  """Full fine-tuning, backbone learning rate ``backbone_multiplier`` x the head's (TLlib).

  ``prefix`` / ``params_prefix`` as in :func:`freeze_first_k`.
  """
  if backbone_multiplier < 0:
    raise ValueError(f"backbone_multiplier must be >= 0, got {backbone_multiplier}")
  p = _prefix(params_prefix) + _prefix(prefix)
  return Recipe(((f"{p}.*", "backbone"), (".*", "head")), {"backbone": backbone_multiplier}, ())


def frozen_bn_from_labels(labels: Any, *, frozen: Sequence[str] = (FROZEN,),
                          strip_prefix: str = "") -> tuple[str, ...]:
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
        module = module[len(strip_prefix):]
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
    raise ValueError(f"labels must have the structure of params ({len(p_leaves)} leaves), "
                     f"got {len(l_leaves)} leaves")
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
    lines.append(f"{label:<{width}}  {'frozen' if is_frozen else 'trainable':<9}  {n_t:>7}  "
                 f"{n_p:>14,}")
  lines.append(f"{'total':<{width}}  {'':<9}  {len(p_leaves):>7}  {tot[True] + tot[False]:>14,}")
  lines.append(f"trainable {tot[False]:,} / frozen {tot[True]:,}")
  return "\n".join(lines)


def l2_sp(params: Any, start_params: Any, *, labels: Any, alpha: float, beta: float = 0.0,
          groups: Sequence[str] = ("backbone",), new_groups: Sequence[str] = ("head",)
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
    raise ValueError(f"labels must have the structure of params ({len(p_flat)} leaves), "
                     f"got {len(l_flat)}")
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
