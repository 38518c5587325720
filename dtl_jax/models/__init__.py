"""Flax Linen models: backbones, heads, the composite TransferModel, conversion."""

from dtl_jax.models.convert import (MergeReport, StateDictMismatchError, flax_to_torch,
                                    load_state_dict, load_torchvision_resnet, merge_variables,
                                    resnet_depth_of, torch_to_flax)
from dtl_jax.models.layers import BatchNorm
from dtl_jax.models.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNet101
