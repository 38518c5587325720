"""LoRA: low-rank adapters on dense layers, and folding them back for export.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022
(arXiv:2106.09685). A frozen dense layer ``y = x W_0 + b`` gets a trainable low-rank update

.. math::  y = x W_0 + b + \\frac{\\alpha}{r} (x A) B,
   \\qquad A \\in \\mathbb{R}^{d_{in} \\times r},\\ B \\in \\mathbb{R}^{r \\times d_{out}}

with ``B = 0`` at initialization (the adapted model starts equal to the base model) and
``A`` drawn like PyTorch's ``kaiming_uniform_(a=sqrt(5))`` (``U(-1/sqrt(d_in), 1/sqrt(d_in))``,
as the reference ``loralib`` and ``peft``). Flax stores kernels ``[in, out]``, so the
paper's ``B A`` (``[out, r] @ [r, in]``) is ``A @ B`` here; rank ``r`` adds
``r * (d_in + d_out)`` parameters per adapted layer.

Freezing the base weights is the optimizer's job (:func:`dtl_jax.peft.lora_recipe` labels
everything but ``lora_a`` / ``lora_b`` and the head as frozen for :func:`optax.partition`).
:func:`merge_lora` folds ``W = W_0 + (alpha / r) A B`` into the kernels, giving the
variables of the same model without adapters (``lora_rank=0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LORA_A = "lora_a"
LORA_B = "lora_b"


class LoRADense(nn.Module):
  """``nn.Dense`` plus a rank-``rank`` adapter: ``x W + b + (alpha / rank) (x A) B``.

  Parameters ``kernel [in, features]``, ``bias [features]`` (names of ``nn.Dense``, so a
  converted checkpoint loads unchanged), ``lora_a [in, rank]``, ``lora_b [rank, features]``
  (zeros).

  Attributes:
    features: output width.
    rank: adapter rank ``r >= 1``.
    alpha: scaling numerator (the update is multiplied by ``alpha / rank``).
    use_bias: whether the base layer has a bias.
    dtype: computation dtype (None: promote inputs and parameters).
    param_dtype: parameter dtype.
    precision: matmul precision.
    kernel_init / bias_init: base layer initializers.
  """

  features: int
  rank: int
  alpha: float
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.rank < 1:
      raise ValueError(f"LoRADense: rank must be >= 1, got {self.rank}")
    d_in = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (d_in, self.features), self.param_dtype)
    bias = (
      self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    a = self.param(
      LORA_A,
      nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
      (d_in, self.rank),
      self.param_dtype,
    )
    b = self.param(LORA_B, nn.initializers.zeros, (self.rank, self.features), self.param_dtype)
    x, kernel, bias, a, b = nn.dtypes.promote_dtype(x, kernel, bias, a, b, dtype=self.dtype)
    y = jnp.einsum("...i,io->...o", x, kernel, precision=self.precision)
    if bias is not None:
      y = y + bias
    low = jnp.einsum("...i,ir->...r", x, a, precision=self.precision)
    update = jnp.einsum("...r,ro->...o", low, b, precision=self.precision)
    return y + update * jnp.asarray(self.alpha / self.rank, y.dtype)


def _merge_tree(tree: Mapping[str, Any], alpha: float, path: str, found: list[str]) -> dict:
  out = {}
  if LORA_A in tree or LORA_B in tree:
    if not (LORA_A in tree and LORA_B in tree and "kernel" in tree):
      raise ValueError(
        f"{path or '<root>'}: needs kernel, {LORA_A} and {LORA_B}, has {sorted(tree)}"
      )
    a, b, kernel = tree[LORA_A], tree[LORA_B], tree["kernel"]
    if (
      a.ndim != 2
      or b.ndim != 2
      or a.shape[1] != b.shape[0]
      or kernel.shape != (a.shape[0], b.shape[1])
    ):
      raise ValueError(
        f"{path}: shapes kernel {kernel.shape}, {LORA_A} {a.shape}, {LORA_B} "
        f"{b.shape} do not fit kernel [in, out] = A [in, r] @ B [r, out]"
      )
    rank = a.shape[1]
    dtype = jnp.result_type(kernel)
    delta = jnp.matmul(a.astype(dtype), b.astype(dtype), precision=jax.lax.Precision.HIGHEST)
    out["kernel"] = kernel + delta * jnp.asarray(alpha / rank, dtype)
    found.append(path)
    for k, v in tree.items():
      if k not in (LORA_A, LORA_B, "kernel"):
        out[k] = v
    return out
  for k, v in tree.items():
    sub = f"{path}/{k}" if path else str(k)
    out[k] = _merge_tree(v, alpha, sub, found) if isinstance(v, Mapping) else v
  return out


def merge_lora(variables: Mapping[str, Any], *, alpha: float) -> dict[str, Any]:
  """Folds every adapter into its kernel: ``W = W_0 + (alpha / r) A B``; drops ``lora_*``.

  Args:
    variables: ``{"params": ...}`` (other collections are passed through) of a model with
      :class:`LoRADense` layers; any sub-tree holding ``kernel``, ``lora_a`` and ``lora_b``
      is merged, ``r`` read from ``lora_a``'s shape.
    alpha: the adapters' ``alpha`` (the model's ``lora_alpha``).

  Returns:
    Variables of the same model without adapters (e.g. ``lora_rank=0``): same outputs up
    to rounding, ready for export (:func:`dtl_jax.models.convert_vit.to_hf_state_dict`).

  Raises:
    ValueError: no adapter found, or an adapter whose shapes do not fit its kernel.
  """
  if "params" not in variables:
    raise ValueError(f"variables must hold a 'params' collection, got {sorted(variables)}")
  found: list[str] = []
  out = dict(variables)
  out["params"] = _merge_tree(variables["params"], float(alpha), "", found)
  if not found:
    raise ValueError(f"no LoRA adapter ({LORA_A}/{LORA_B}) in variables['params']")
  return out
