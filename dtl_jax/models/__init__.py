"""Flax Linen models: backbones, heads, the composite TransferModel, conversion.

:func:`build` makes a run's model from its config (``config.model``); backbones are
looked up in :data:`BACKBONES` (:func:`register_backbone` adds one).

Every module is called as ``module(x, train=...)``; images are NHWC.
"""

from dtl_jax.models.build import (
  BACKBONES,
  build,
  build_backbone,
  load_pretrained,
  register_backbone,
)
from dtl_jax.models.convert import (
  MergeReport,
  StateDictMismatchError,
  flax_to_torch,
  load_state_dict,
  load_torchvision_resnet,
  merge_variables,
  resnet_depth_of,
  torch_to_flax,
)
from dtl_jax.models.convert_vit import (
  load_hf_clip_vision,
  load_hf_dinov2,
  load_hf_pretrained,
  load_hf_vision,
  load_hf_vit,
  to_hf_state_dict,
  vit_from_hf_config,
)
from dtl_jax.models.dtn import DTN, DANNSVHNNet
from dtl_jax.models.heads import Bottleneck, Classifier, DomainDiscriminator
from dtl_jax.models.layers import BatchNorm, PatchConv, max_pool_2x2
from dtl_jax.models.lenet import DANNMNISTNet, LeNet
from dtl_jax.models.lora import LoRADense, merge_lora
from dtl_jax.models.mlp import MLP
from dtl_jax.models.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNet101
from dtl_jax.models.transfer import TransferModel, init_variables, make_apply_fn
from dtl_jax.models.vit import VIT_PRESETS, VisionTransformer, vit_preset

__all__ = [
  "BACKBONES",
  "build",
  "build_backbone",
  "load_pretrained",
  "register_backbone",
  "BatchNorm",
  "Bottleneck",
  "Classifier",
  "DANNMNISTNet",
  "DANNSVHNNet",
  "DTN",
  "DomainDiscriminator",
  "LeNet",
  "MLP",
  "MergeReport",
  "PatchConv",
  "ResNet",
  "ResNet18",
  "ResNet34",
  "ResNet50",
  "ResNet101",
  "StateDictMismatchError",
  "TransferModel",
  "flax_to_torch",
  "init_variables",
  "load_state_dict",
  "load_torchvision_resnet",
  "make_apply_fn",
  "max_pool_2x2",
  "merge_variables",
  "resnet_depth_of",
  "torch_to_flax",
  # Vision Transformers (ViT, DINOv2, CLIP vision) and LoRA
  "LoRADense",
  "VIT_PRESETS",
  "VisionTransformer",
  "load_hf_clip_vision",
  "load_hf_dinov2",
  "load_hf_pretrained",
  "load_hf_vision",
  "load_hf_vit",
  "merge_lora",
  "to_hf_state_dict",
  "vit_from_hf_config",
  "vit_preset",
]
