"""Transfer methods: small objects that compose :mod:`dtl_jax.losses` on model outputs.

``get_method(name, **kwargs)`` builds one by name; :data:`METHODS` lists them. Each
method returns ``(loss, metrics)`` from :class:`MethodInputs` and declares its extra
modules; none touches the optimizer (see :mod:`dtl_jax.methods.base`).
"""

from __future__ import annotations

from typing import Any

from dtl_jax.methods.adversarial import (ADDA, CDAN, CDANE, DANN, MDD, WDGRL, DomainConfusion,
                                         Distill, MLPDiscriminator)
from dtl_jax.methods.base import Extra, LossMethod, Method, MethodInputs
from dtl_jax.methods.discrepancy import (DAN, DDC, JAN, DeepCORAL, Finetune, InstanceWeighted,
                                         SourceOnly)

METHODS: dict[str, type[Method]] = {
    "source_only": SourceOnly,
    "ddc": DDC,
    "dan": DAN,
    "jan": JAN,
    "deep_coral": DeepCORAL,
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
}


def get_method(name: str, **kwargs: Any) -> Method:
  """Builds method ``name`` (one of :data:`METHODS`) with keyword hyperparameters.

  For ``instance_weighted``, ``base`` may be a method name (built with
  ``base_kwargs``).
  """
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
  if name == "instance_weighted" and isinstance(kwargs.get("base"), str):
    base = get_method(kwargs.pop("base"), **dict(kwargs.pop("base_kwargs", {}) or {}))
    return InstanceWeighted(base)
  try:
    return METHODS[name](**kwargs)
  except TypeError as e:
    raise ValueError(f"bad hyperparameters for method {name!r}: {e}") from None


__all__ = ["METHODS", "get_method", "Method", "MethodInputs", "Extra", "LossMethod",
           "SourceOnly", "DDC", "DAN", "JAN", "DeepCORAL", "DANN", "CDAN", "CDANE", "MDD",
           "ADDA", "WDGRL", "DomainConfusion", "InstanceWeighted", "Finetune", "Distill",
           "MLPDiscriminator"]
