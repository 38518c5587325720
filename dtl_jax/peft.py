"""Fine-tuning recipes for Vision Transformers: LoRA, layer-wise lr decay, probe, full.

Every recipe is a :class:`dtl_jax.params.Recipe`: ordered ``(regex, label)`` rules on the
``/``-joined parameter paths plus learning-rate multipliers per label, turned into an
``optax.partition`` by :func:`dtl_jax.params.make_optimizer` (frozen labels get
``optax.set_to_zero``: no update, no optimizer state). Paths are those of
:class:`~dtl_jax.models.vit.VisionTransformer` under ``prefix`` (``"backbone"`` in a
``TransferModel``), e.g. ``"backbone/blocks_3/attn/query/kernel"``.

* :func:`lora_recipe` -- Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
  ICLR 2022: only the adapters (``lora_a`` / ``lora_b`` of a model built with
  ``lora_rank > 0``) and the head train; the pretrained weights are frozen.
* :func:`layerwise_lr_decay` -- Bao et al., "BEiT", ICLR 2022; He et al., "Masked
  Autoencoders Are Scalable Vision Learners", CVPR 2022: a parameter at depth ``k``
  (embeddings ``k = 0``, block ``i`` ``k = i + 1``, everything after the last block
  ``k = L + 1``) gets the multiplier ``decay ** (L + 1 - k)``, as ``param_groups_lrd`` in
  MAE's ``util/lr_decay.py``.
* :func:`vit_linear_probe` / :func:`vit_finetune` -- the frozen-backbone probe and full
  fine-tuning (optionally with layer-wise decay).
"""

from __future__ import annotations

from collections.abc import Sequence

from dtl_jax.models.vit import EMBEDDING_PARAMS
from dtl_jax.params import FROZEN, Recipe, finetune, linear_probe

LORA = "lora"
HEAD = "head"


def _prefix(prefix: str) -> str:
  return prefix.strip("/") + "/" if prefix.strip("/") else ""


def lora_recipe(
  *,
  prefix: str = "backbone",
  params_prefix: str = "",
  lora_multiplier: float = 1.0,
  also_train: Sequence[str] = (),
) -> Recipe:
  """Trains the LoRA adapters and the head; freezes every other backbone parameter.

  Labels: ``"lora"`` (``.../lora_a``, ``.../lora_b``), ``"backbone"`` (``also_train``),
  ``"frozen"`` (the rest of the backbone), ``"head"`` (everything outside the backbone).
  At rank ``r`` the backbone trains ``sum r * (d_in + d_out)`` parameters over the adapted
  layers (``4 L r d`` for query + value of ``L`` blocks of width ``d``).

  Args:
    prefix: path of the backbone in the model (``""`` for a bare backbone).
    params_prefix: path of the model in the labeled tree (``"model/"`` for the train
      engine's ``{"model", "extra"}`` tree).
    lora_multiplier: learning-rate multiplier of the adapters.
    also_train: regexes of further backbone paths (relative to the backbone) that train
      with label ``"backbone"``, e.g. ``(r".*/bias",)`` (BitFit) or ``("norm/.*",)``.

  Returns:
    A :class:`~dtl_jax.params.Recipe` (``recipe.optimizer(learning_rate=...)``).
  """
  if lora_multiplier < 0:
    raise ValueError(f"lora_multiplier must be >= 0, got {lora_multiplier}")
  p = _prefix(params_prefix) + _prefix(prefix)
  rules = [(f"{p}(.*/)?lora_[ab]", LORA)]
  rules += [(f"{p}(?:{rx})", "backbone") for rx in also_train]
  rules += [(f"{p}.*", FROZEN), (".*", HEAD)]
  mult = {LORA: lora_multiplier} if lora_multiplier != 1.0 else {}
  return Recipe(tuple(rules), mult, ())


def layer_label(k: int) -> str:
  """The label of depth ``k`` in :func:`layerwise_lr_decay` (``"layer_<k>"``)."""
  return f"layer_{k}"


def layerwise_lr_decay(
  num_layers: int,
  *,
  decay: float,
  prefix: str = "backbone",
  params_prefix: str = "",
  base_multiplier: float = 1.0,
  head_multiplier: float = 1.0,
) -> Recipe:
  """Layer-wise learning-rate decay (BEiT / MAE) as labels and multipliers.

  .. math::  \\mathrm{lr}_k = \\mathrm{lr} \\cdot m \\cdot \\mathrm{decay}^{L + 1 - k}

  with depth ``k = 0`` for the embeddings (``embed/...``: patch embedding, CLS token,
  registers, position embeddings; CLIP's ``pre_norm``), ``k = i + 1`` for ``blocks_<i>``,
  ``k = L + 1`` for what follows the blocks (``norm``, ``post_norm``, ``proj``,
  ``pooler``) and ``m = base_multiplier``; the head (outside the backbone) gets
  ``head_multiplier``.

  Args:
    num_layers: ``L``, the backbone's number of blocks.
    decay: in ``(0, 1]`` (MAE: 0.75 for ViT-B, 0.65 for BEiT-B).
    prefix / params_prefix: as in :func:`lora_recipe`.
    base_multiplier: ``m``, scales every backbone label (TLlib-style 0.1 composes here).
    head_multiplier: multiplier of the ``"head"`` label.

  Returns:
    A :class:`~dtl_jax.params.Recipe` with labels ``layer_0 .. layer_{L+1}`` and ``head``.
  """
  if int(num_layers) < 1:
    raise ValueError(f"num_layers must be >= 1, got {num_layers}")
  if not 0.0 < decay <= 1.0:
    raise ValueError(f"decay must be in (0, 1], got {decay}")
  if base_multiplier < 0 or head_multiplier < 0:
    raise ValueError(
      f"multipliers must be >= 0, got base_multiplier={base_multiplier}, "
      f"head_multiplier={head_multiplier}"
    )
  n = int(num_layers)
  p = _prefix(params_prefix) + _prefix(prefix)
  rules = [(f"{p}(?:{EMBEDDING_PARAMS})(/.*)?", layer_label(0))]
  rules += [(f"{p}blocks_{i}/.*", layer_label(i + 1)) for i in range(n)]
  rules += [(f"{p}.*", layer_label(n + 1)), (".*", HEAD)]
  mult = {layer_label(k): base_multiplier * decay ** (n + 1 - k) for k in range(n + 2)}
  mult[HEAD] = head_multiplier
  return Recipe(tuple(rules), mult, ())


def vit_linear_probe(*, prefix: str = "backbone", params_prefix: str = "") -> Recipe:
  """Linear probe: the whole ViT is frozen, only the head trains
  (:func:`dtl_jax.params.linear_probe`)."""
  return linear_probe(prefix=prefix, params_prefix=params_prefix)


def vit_finetune(
  num_layers: int | None = None,
  *,
  layer_decay: float = 1.0,
  backbone_multiplier: float = 1.0,
  prefix: str = "backbone",
  params_prefix: str = "",
) -> Recipe:
  """Full fine-tuning of a ViT.

  ``layer_decay == 1``: every backbone parameter at ``backbone_multiplier`` x the head's
  learning rate (:func:`dtl_jax.params.finetune`); ``layer_decay < 1``: layer-wise decay
  on top (:func:`layerwise_lr_decay` with ``base_multiplier=backbone_multiplier``; needs
  ``num_layers``).
  """
  if layer_decay == 1.0:
    return finetune(
      backbone_multiplier=backbone_multiplier, prefix=prefix, params_prefix=params_prefix
    )
  if num_layers is None:
    raise ValueError("num_layers is needed for layer_decay < 1")
  return layerwise_lr_decay(
    num_layers,
    decay=layer_decay,
    prefix=prefix,
    params_prefix=params_prefix,
    base_multiplier=backbone_multiplier,
  )


def engine_rules(
  backbone: object, *, layer_decay: float = 1.0, backbone_multiplier: float = 1.0
) -> tuple[list[tuple[str, str]], dict[str, float]]:
  """The training engine's backbone rules for ``optim.layer_decay`` and LoRA backbones.

  For :func:`dtl_jax.params.train_rules` (``backbone_rules=``), on the engine's
  ``{"model": {"backbone": ...}}`` tree:

  * a backbone built with ``lora_rank > 0``: its adapters train (label ``"backbone"``),
    every other backbone parameter is frozen (:func:`lora_recipe`);
  * ``layer_decay < 1``: labels ``layer_0 .. layer_{L+1}`` with multipliers
    ``backbone_multiplier * layer_decay ** (L + 1 - k)`` (:func:`layerwise_lr_decay`);
    the backbone needs blocks (``num_layers``: the ViT family);
  * otherwise no rule (the generic ``"backbone"`` label applies).

  Returns:
    ``(rules, multipliers)``.

  Raises:
    ValueError: layer decay on a backbone without blocks, or together with LoRA.
  """
  lora = int(getattr(backbone, "lora_rank", 0) or 0) > 0
  if not 0.0 < layer_decay <= 1.0:
    raise ValueError(f"optim.layer_decay must be in (0, 1], got {layer_decay}")
  if lora and layer_decay < 1.0:
    raise ValueError(
      "optim.layer_decay and a LoRA backbone (lora_rank > 0) do not combine: "
      "LoRA trains only the adapters"
    )
  if lora:
    return [("model/backbone/(.*/)?lora_[ab]", "backbone"), ("model/backbone/.*", FROZEN)], {}
  if layer_decay == 1.0:
    return [], {}
  num_layers = getattr(backbone, "num_layers", None)
  if not isinstance(num_layers, int):
    raise ValueError(
      f"optim.layer_decay needs a backbone made of blocks (vit, dinov2, "
      f"clip_vision), got {type(backbone).__name__}"
    )
  recipe = layerwise_lr_decay(
    num_layers, decay=layer_decay, params_prefix="model", base_multiplier=backbone_multiplier
  )
  rules = [r for r in recipe.rules if r[1] != HEAD]
  return rules, {k: v for k, v in recipe.multipliers.items() if k != HEAD}
