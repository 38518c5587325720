"""Transfer methods: small objects that compose :mod:`dtl_jax.losses` on model outputs.

``build(name, **kwargs)`` makes one by name (a config's ``method`` and
``method_kwargs``); :data:`METHODS` lists them. Each method returns ``(loss, metrics)``
from :class:`MethodInputs`, declares its extra modules and, in :meth:`Method.setup`,
what it needs before training; none touches the optimizer (see
:mod:`dtl_jax.methods.base`).
"""

from __future__ import annotations

from typing import Any

from dtl_jax.methods.adversarial import (
  ADDA,
  CDAN,
  CDANE,
  DANN,
  MDD,
  WDGRL,
  Distill,
  DomainConfusion,
)
from dtl_jax.methods.base import Extra, LossMethod, Method, MethodInputs, Setup, SetupContext
from dtl_jax.methods.discrepancy import (
  DAN,
  DDC,
  JAN,
  WEIGHTINGS,
  DeepCORAL,
  Finetune,
  InstanceWeighted,
  SourceOnly,
)
from dtl_jax.methods.entropy import MCC, EntropyMinimization
from dtl_jax.methods.source_free import SHOT, AdaBN, Tent

METHODS: dict[str, type[Method]] = {
  "source_only": SourceOnly,
  "ddc": DDC,
  "dan": DAN,
  "jan": JAN,
  "deep_coral": DeepCORAL,
  "mcc": MCC,
  "entropy_min": EntropyMinimization,
  "dann": DANN,
  "cdan": CDAN,
  "cdan_e": CDANE,
  "mdd": MDD,
  "adda": ADDA,
  "wdgrl": WDGRL,
  "domain_confusion": DomainConfusion,
  "instance_weighted": InstanceWeighted,
  "finetune": Finetune,
  "distill": Distill,
  # source-free (target data only; `dtl-jax adapt`, dtl_jax.train.adapt)
  "adabn": AdaBN,
  "tent": Tent,
  "shot": SHOT,
}


def build(name: str, **kwargs: Any) -> Method:
  """Method ``name`` (one of :data:`METHODS`) with keyword hyperparameters ``kwargs``.

  Raises:
    ValueError: an unknown name, or hyperparameters the method does not take (the
      message names the method).
  """
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  try:
    return METHODS[name](**kwargs)
  except TypeError as e:
    raise ValueError(f"bad hyperparameters for method {name!r}: {e}") from None


__all__ = [
  "METHODS",
  "build",
  "Method",
  "MethodInputs",
  "Extra",
  "LossMethod",
  "Setup",
  "SetupContext",
  "SourceOnly",
  "DDC",
  "DAN",
  "JAN",
  "DeepCORAL",
  "MCC",
  "EntropyMinimization",
  "DANN",
  "CDAN",
  "CDANE",
  "MDD",
  "ADDA",
  "WDGRL",
  "DomainConfusion",
  "InstanceWeighted",
  "WEIGHTINGS",
  "Finetune",
  "Distill",
  "AdaBN",
  "Tent",
  "SHOT",
]
