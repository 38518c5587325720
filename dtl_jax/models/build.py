"""Models from a config: the backbone registry and :func:`build`.

``build(config.model, num_classes=10)`` gives the :class:`TransferModel` a run trains:
``backbone -> [bottleneck] -> classifier head``. Backbones are looked up by name in
:data:`BACKBONES`; :func:`register_backbone` adds one (with an optional loader of its
pretrained weights, used by ``model.pretrained``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn

from dtl_jax.models.convert import load_torchvision_resnet
from dtl_jax.models.dtn import DTN
from dtl_jax.models.heads import Bottleneck, Classifier
from dtl_jax.models.lenet import DANNMNISTNet, LeNet
from dtl_jax.models.mlp import MLP
from dtl_jax.models.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNet101
from dtl_jax.models.transfer import TransferModel

#: ``loader(path, backbone_module) -> {"params", "batch_stats"}`` of the backbone.
PretrainedLoader = Callable[[str, nn.Module], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """A registered backbone: ``factory(**backbone_kwargs) -> nn.Module``."""

  factory: Callable[..., nn.Module]
  load_pretrained: PretrainedLoader | None = None


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(
  name: str, factory: Callable[..., nn.Module], *, load_pretrained: PretrainedLoader | None = None
) -> None:
  """Makes ``model.backbone = name`` build ``factory(**model.backbone_kwargs)``.

  Args:
    name: the config name.
    factory: returns a Linen module called as ``module(x, train=...)`` that returns
      ``[n, d]`` features.
    load_pretrained: reads a pretrained state dict for ``model.pretrained``.
  """
  if name in BACKBONES:
    raise ValueError(f"backbone {name!r} is already registered")
  BACKBONES[name] = BackboneSpec(factory, load_pretrained)


def _load_resnet(path: str, module: nn.Module) -> dict[str, Any]:
  if not isinstance(module, ResNet):
    raise ValueError(
      f"model.pretrained: a torchvision ResNet state dict needs a ResNet "
      f"backbone, got {type(module).__name__}"
    )
  return load_torchvision_resnet(path, module)


_SMALL: tuple[tuple[str, Callable[..., nn.Module]], ...] = (
  ("lenet", LeNet),
  ("dann_mnist", DANNMNISTNet),
  ("dtn", DTN),
  ("mlp", MLP),
)
_RESNETS: tuple[tuple[str, Callable[..., nn.Module]], ...] = (
  ("resnet18", ResNet18),
  ("resnet34", ResNet34),
  ("resnet50", ResNet50),
  ("resnet101", ResNet101),
)
for _name, _factory in _SMALL:
  register_backbone(_name, _factory)
for _name, _factory in _RESNETS:
  register_backbone(_name, _factory, load_pretrained=_load_resnet)


def _kwargs(d: Mapping[str, Any]) -> dict[str, Any]:
  # JSON (a run's config.json) turns tuples into lists; modules want tuples.
  return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(d).items()}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
  """The registered backbone ``name`` with keyword arguments ``kwargs``."""
  if name not in BACKBONES:
    raise ValueError(f"model.backbone must be one of {', '.join(sorted(BACKBONES))}, got {name!r}")
  try:
    return BACKBONES[name].factory(**_kwargs(kwargs))
  except TypeError as e:
    raise ValueError(f"model.backbone_kwargs for {name!r}: {e}") from None


def build(
  model_config: Mapping[str, Any], *, num_classes: int, bn_axis_name: str | None = None
) -> TransferModel:
  """The :class:`TransferModel` described by a config's ``model`` group.

  Args:
    model_config: ``backbone``, ``backbone_kwargs``, ``bottleneck_dim`` (0 = none),
      ``bottleneck_dropout``, ``bottleneck_batch_norm``, ``head_hidden`` and ``freeze``
      (regexes: matching BatchNorm layers keep their statistics) -- see
      :mod:`dtl_jax.config`.
    num_classes: classifier outputs.
    bn_axis_name: device axis over which BatchNorm statistics are averaged
      (``pmap`` / ``shard_map`` drivers).
  """
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  c = model_config
  backbone = build_backbone(c["backbone"], **(c.get("backbone_kwargs") or {}))
  bottleneck = None
  if c["bottleneck_dim"]:
    bottleneck = Bottleneck(
      features=int(c["bottleneck_dim"]),
      dropout=float(c["bottleneck_dropout"]),
      batch_norm=bool(c["bottleneck_batch_norm"]),
    )
  head = Classifier(num_classes, hidden=tuple(c.get("head_hidden", ())))
  return TransferModel(
    backbone, bottleneck, head, bn_axis_name=bn_axis_name, frozen_bn=tuple(c.get("freeze", ()))
  )


def load_pretrained(
  model_config: Mapping[str, Any], backbone: nn.Module, path: str | os.PathLike
) -> dict[str, Any]:
  """The backbone variables stored in ``path`` (``model.pretrained``)."""
  name = model_config["backbone"]
  loader = BACKBONES[name].load_pretrained if name in BACKBONES else None
  if loader is None:
    with_loader = sorted(n for n, s in BACKBONES.items() if s.load_pretrained)
    raise ValueError(
      f"model.pretrained: backbone {name!r} has no pretrained-weight loader "
      f"(backbones with one: {', '.join(with_loader)})"
    )
  if not os.path.isfile(path):
    raise ValueError(f"model.pretrained: no file {str(path)!r}")
  return loader(str(path), backbone)
