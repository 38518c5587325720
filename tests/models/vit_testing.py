"""Tiny ``transformers`` ViT / DINOv2 / CLIP models with random weights (no hub access).

Shared by the ViT parity, LoRA and recipe tests. Every parameter is randomized (LayerNorm
weights around 1, layer scales in [0.2, 1], matrices ``N(0, 1/fan_in)``, biases and tokens
small normals) so that no comparison passes by a parameter being zero or one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import transformers as T

HIDDEN, LAYERS, HEADS, IMAGE, PATCH = 32, 2, 4, 32, 8

_COMMON = {
  "hidden_size": HIDDEN,
  "num_hidden_layers": LAYERS,
  "num_attention_heads": HEADS,
  "image_size": IMAGE,
  "patch_size": PATCH,
}


def make_config(case: str):
  """``(transformers model class, config)`` of a tiny model for ``case``."""
  if case == "vit":
    return T.ViTModel, T.ViTConfig(intermediate_size=64, **_COMMON)
  if case == "dinov2":
    return T.Dinov2Model, T.Dinov2Config(mlp_ratio=2, **_COMMON)
  if case == "dinov2_swiglu":
    return T.Dinov2Model, T.Dinov2Config(mlp_ratio=2, use_swiglu_ffn=True, **_COMMON)
  if case == "dinov2_registers":
    return T.Dinov2WithRegistersModel, T.Dinov2WithRegistersConfig(
      mlp_ratio=2, num_register_tokens=3, **_COMMON
    )
  if case == "clip":
    return T.CLIPVisionModel, T.CLIPVisionConfig(intermediate_size=64, projection_dim=16, **_COMMON)
  if case == "clip_projection":
    return T.CLIPVisionModelWithProjection, T.CLIPVisionConfig(
      intermediate_size=64, projection_dim=16, **_COMMON
    )
  raise ValueError(case)


CASES = ("vit", "dinov2", "dinov2_swiglu", "dinov2_registers", "clip", "clip_projection")


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  g = torch.Generator().manual_seed(seed)

  def randn(shape):
    return torch.randn(shape, generator=g)

  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("weight") and p.ndim >= 2 and "position_embedding" not in name:
        p.copy_(randn(p.shape) / math.sqrt(p[0].numel()))
      elif "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.1 * randn(p.shape))
      elif name.endswith("lambda1"):
        p.copy_(0.2 + 0.8 * torch.rand(p.shape, generator=g))
      elif name.endswith("bias"):
        p.copy_(0.1 * randn(p.shape))
      else:  # cls / register / mask tokens, position embeddings
        p.copy_(0.5 * randn(p.shape))
  return model.eval()


def make_model(case: str, seed: int = 0, dtype: torch.dtype = torch.float32):
  """A randomized tiny ``transformers`` model (eval mode) and its config dict."""
  cls, cfg = make_config(case)
  model = randomize(cls(cfg), seed).to(dtype)
  config = cfg.to_dict()
  config["architectures"] = [cls.__name__]
  return model, config


def reference(model: torch.nn.Module, case: str, x_nchw: np.ndarray, **kwargs) -> dict:
  """The outputs the Flax module must reproduce, from the PyTorch model."""
  with torch.no_grad():
    o = model(torch.from_numpy(x_nchw), output_hidden_states=True, **kwargs)
  last = o.last_hidden_state.numpy()
  out = {
    "tokens": last,
    "block_0": o.hidden_states[1].numpy(),
    "block_1": o.hidden_states[2].numpy(),
  }
  if case == "vit":
    out["features"] = last[:, 0]
    out["pooler"] = o.pooler_output.numpy()
  elif case == "clip_projection":
    out["features"] = o.image_embeds.numpy()
  else:
    out["features"] = o.pooler_output.numpy()
  return out


def images(n: int, h: int, w: int, seed: int, dtype=np.float32) -> np.ndarray:
  """NCHW images for PyTorch (transpose to NHWC for Flax)."""
  return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(dtype)
