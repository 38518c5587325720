"""Optimizers: SGD + Nesterov with TLlib's schedule, per-group multipliers, Adam.

TLlib (Transfer-Learning-Library) trains every DA method with
``SGD(lr, momentum=0.9, weight_decay=1e-3, nesterov=True)`` and
``lr_i = lr * mult_group * (1 + gamma * i) ** (-decay)`` with ``decay = 0.75``, the
backbone group at ``mult = 0.1`` when it is pretrained.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import optax

from dtl_jax import params as params_lib

FROZEN = params_lib.FROZEN


def tllib_schedule(learning_rate: float, *, gamma: float = 1e-3,
                   decay: float = 0.75) -> optax.Schedule:
  """``step -> learning_rate * (1 + gamma * step) ** (-decay)`` (Ganin & Lempitsky 2015;
  TLlib's ``LambdaLR``)."""
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  if gamma < 0:
    raise ValueError(f"gamma must be >= 0, got {gamma}")

  def schedule(step):
    return learning_rate * (1.0 + gamma * step) ** (-decay)

  return schedule


def label_params(params: Any, rules: Sequence[tuple[str, str]]) -> Any:
  """Labels each leaf of ``params`` by the first regex in ``rules`` that fully matches
  its ``/``-joined path (e.g. ``"model/backbone/conv1/kernel"``).

  This is :func:`dtl_jax.params.label_params` with ``allow_unused=True`` (the
  :func:`default_rules` include rules, such as ``model/backbone/.*``, that a small model
  may not use).

  Raises:
    ValueError: if a leaf matches no rule (the unlabeled paths are listed).
  """
  return params_lib.label_params(params, rules, allow_unused=True)


def default_rules(*, backbone_lr_mult: float = 1.0, freeze: Sequence[str] = (),
                  extras: Mapping[str, Any] | None = None,
                  model_frozen: bool = False) -> tuple[list[tuple[str, str]], dict]:
  """Standard rules for a ``{"model": ..., "extra": ...}`` param tree.

  Args:
    backbone_lr_mult: multiplier of ``model/backbone/...`` (TLlib: 0.1 when pretrained).
    freeze: extra regexes (on the path inside the model, e.g. ``"backbone/layer1/.*"``)
      whose parameters are frozen.
    extras: ``{name: Extra}`` declared by the method (trainable flag and lr_mult).
    model_frozen: freeze the whole model (ADDA stage 2's source model).

  Returns:
    ``(rules, multipliers)`` with ``multipliers[label] = float`` and ``None`` for frozen.
  """
  rules: list[tuple[str, str]] = []
  mults: dict[str, float | None] = {FROZEN: None}
  if model_frozen:
    rules.append(("model/.*", FROZEN))
  for rx in freeze:
    rules.append((f"model/{rx}", FROZEN))
  rules.append(("model/backbone/.*", "backbone"))
  mults["backbone"] = backbone_lr_mult
  rules.append(("model/.*", "head"))
  mults["head"] = 1.0
  for name, spec in (extras or {}).items():
    if spec.trainable:
      rules.append((f"extra/{re.escape(name)}/.*", f"extra/{name}"))
      mults[f"extra/{name}"] = spec.lr_mult
    else:
      rules.append((f"extra/{re.escape(name)}/.*", FROZEN))
  return rules, mults


def make_optimizer(labels: Any, multipliers: Mapping[str, float | None], *,
                   kind: str = "sgd", learning_rate: float = 0.01, momentum: float = 0.9,
                   nesterov: bool = True, weight_decay: float = 1e-3, lr_gamma: float = 1e-3,
                   lr_decay: float = 0.75, b1: float = 0.9, b2: float = 0.999,
                   grad_clip: float | None = None) -> optax.GradientTransformation:
  """Builds the optimizer from parameter labels with ``optax.partition``.

  Each label gets ``lr * multipliers[label] * (1 + lr_gamma * step) ** -lr_decay``;
  a label whose multiplier is ``None`` (e.g. ``"frozen"``) gets ``optax.set_to_zero()``,
  so its parameters stay bit-identical.

  Args:
    labels: pytree of strings with the structure of the params.
    multipliers: ``{label: float | None}``.
    kind: ``"sgd"`` (PyTorch-style coupled weight decay + Nesterov momentum, as TLlib)
      or ``"adam"`` (``adamw`` with decoupled ``weight_decay``).
    grad_clip: optional global-norm clipping applied before everything else.
  """
  if kind not in ("sgd", "adam"):
    raise ValueError(f"kind must be 'sgd' or 'adam', got {kind!r}")
  for name, beta in (("b1", b1), ("b2", b2)):
    if not 0.0 <= beta < 1.0:
      raise ValueError(f"{name} must be in [0, 1), got {beta}")
  used = set(jax.tree.leaves(labels))
  missing = used - set(multipliers)
  if missing:
    raise ValueError(f"multipliers has no entry for labels {sorted(missing)}")
  frozen = sorted(label for label in used if multipliers[label] is None)
  trainable = sorted(used - set(frozen))
  schedule = tllib_schedule(learning_rate, gamma=lr_gamma, decay=lr_decay)
  if kind == "sgd":
    base = optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov)
    decay = {label: weight_decay for label in trainable} if weight_decay else None
  else:
    base = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
    decay = None
  # The group multiplier scales the final update: for SGD (with momentum) and Adam(W)
  # that is exactly ``lr * mult``, TLlib's per-group learning rate.
  tx = params_lib.make_optimizer(
      labels, base_tx=base, frozen=frozen, weight_decay=decay,
      multipliers={label: multipliers[label] for label in trainable})
  if grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip), tx)
  return tx
