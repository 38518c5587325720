"""Models from a config: the backbone registry and :func:`build`.

``build(config.model, num_classes=10)`` gives the :class:`TransferModel` a run trains:
``backbone -> [bottleneck] -> classifier head``. Backbones are looked up by name in
:data:`BACKBONES`; :func:`register_backbone` adds one (with an optional loader of its
pretrained weights, used by ``model.pretrained``):

* ``lenet``, ``dann_mnist``, ``dtn``, ``mlp``: digit networks (TLlib's LeNet, Ganin et
  al.'s MNIST net, the SVHN DTN) and an MLP;
* ``resnet18`` ... ``resnet101``: torchvision-exact ResNets; ``model.pretrained`` is a
  torchvision / timm state dict;
* ``vit``, ``dinov2``, ``clip_vision``: Vision Transformers
  (:class:`~dtl_jax.models.VisionTransformer`) from ``backbone_kwargs.preset``
  (``vit_b16``, ``dinov2_s14``, ``clip_b16``, ...) or from a ``transformers`` checkpoint
  folder given as ``model.pretrained`` (its ``config.json`` gives the architecture, its
  ``model.safetensors`` the weights).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dtl_jax.models.convert import load_torchvision_resnet
from dtl_jax.models.convert_vit import load_hf_vision, vit_from_hf_config
from dtl_jax.models.dtn import DTN
from dtl_jax.models.heads import Bottleneck, Classifier
from dtl_jax.models.lenet import DANNMNISTNet, LeNet
from dtl_jax.models.mlp import MLP
from dtl_jax.models.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNet101
from dtl_jax.models.transfer import TransferModel
from dtl_jax.models.vit import VIT_PRESETS, VisionTransformer, vit_preset

#: ``loader(path, backbone_module) -> {"params", "batch_stats"}`` of the backbone.
PretrainedLoader = Callable[[str, nn.Module], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """A registered backbone: ``factory(**backbone_kwargs) -> nn.Module``."""

  factory: Callable[..., nn.Module]
  load_pretrained: PretrainedLoader | None = None
  #: a ``model.pretrained`` folder also gives the architecture (``factory(config=...)``)
  #: when ``backbone_kwargs`` name neither ``preset`` nor ``config``.
  architecture_from_pretrained: bool = False


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(
  name: str,
  factory: Callable[..., nn.Module],
  *,
  load_pretrained: PretrainedLoader | None = None,
  architecture_from_pretrained: bool = False,
) -> None:
  """Makes ``model.backbone = name`` build ``factory(**model.backbone_kwargs)``.

  Args:
    name: the config name.
    factory: returns a Linen module called as ``module(x, train=...)`` that returns
      ``[n, d]`` features.
    load_pretrained: reads a pretrained state dict for ``model.pretrained``.
    architecture_from_pretrained: see :class:`BackboneSpec`.
  """
  if name in BACKBONES:
    raise ValueError(f"backbone {name!r} is already registered")
  BACKBONES[name] = BackboneSpec(factory, load_pretrained, architecture_from_pretrained)


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

#: Vision Transformer backbones: name -> the ``variant`` values it builds.
VIT_FAMILIES = {"vit": ("vit",), "dinov2": ("dinov2", "dinov2_registers"), "clip_vision": ("clip",)}


def _vit_factory(family: str) -> Callable[..., nn.Module]:
  def factory(*, preset: str = "", config: str = "", **overrides: Any) -> nn.Module:
    if isinstance(overrides.get("dtype"), str):
      overrides["dtype"] = jnp.dtype(overrides["dtype"])
    if config:
      module = vit_from_hf_config(config, **overrides)
    elif preset:
      module = vit_preset(preset, **overrides)
    else:
      names = sorted(p for p, a in VIT_PRESETS.items() if a["variant"] in VIT_FAMILIES[family])
      raise ValueError(
        f"give model.backbone_kwargs.preset (one of {', '.join(names)}) or a checkpoint "
        "folder with config.json (model.pretrained or model.backbone_kwargs.config)"
      )
    if module.variant not in VIT_FAMILIES[family]:
      raise ValueError(f"{preset or config!r} is a {module.variant!r} model, not {family!r}")
    return module

  return factory


def _load_vit(path: str, module: nn.Module) -> dict[str, Any]:
  if not isinstance(module, VisionTransformer):
    raise ValueError(
      f"model.pretrained: a ViT checkpoint needs a ViT backbone, got {type(module).__name__}"
    )
  return load_hf_vision(path, module)


for _name in VIT_FAMILIES:
  register_backbone(
    _name, _vit_factory(_name), load_pretrained=_load_vit, architecture_from_pretrained=True
  )


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
  kwargs = dict(c.get("backbone_kwargs") or {})
  spec = BACKBONES.get(c["backbone"])
  pretrained = str(c.get("pretrained") or "")
  if (
    spec is not None
    and spec.architecture_from_pretrained
    and os.path.isdir(pretrained)
    and not {"preset", "config"} & set(kwargs)
  ):
    kwargs["config"] = pretrained
  backbone = build_backbone(c["backbone"], **kwargs)
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
  if not os.path.exists(path):
    raise ValueError(f"model.pretrained: no file {str(path)!r}")
  return loader(str(path), backbone)
