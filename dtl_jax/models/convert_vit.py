"""Published ViT / DINOv2 / CLIP checkpoints -> :class:`~dtl_jax.models.vit.VisionTransformer`.

A user copies a Hugging Face checkpoint folder (``config.json`` + ``model.safetensors``, or
``pytorch_model.bin``) to the machine and calls :func:`load_hf_pretrained`::

  model, variables = load_hf_pretrained("/data/weights/dinov2-base", return_blocks=(8,))
  out = model.apply(variables, images_nhwc, train=False)   # out["features"]: [n, 768]

or builds the module itself (:func:`vit_from_hf_config`, :func:`~dtl_jax.models.vit.vit_preset`)
and loads a state dict into it (:func:`load_hf_vit`, :func:`load_hf_dinov2`,
:func:`load_hf_clip_vision`, or :func:`load_hf_vision` for any of them).

Key layouts understood (the state dict's layout is detected, prefixes are stripped):

* ``transformers`` >= 5 (what ``model.state_dict()`` gives today): ViT
  ``layers.<i>.attention.q_proj`` ..., DINOv2 ``encoder.layer.<i>.attention.q_proj``,
  ``mlp.gate_proj`` / ``up_proj`` / ``down_proj`` for SwiGLU;
* the published checkpoints' layout (``google/vit-*``, ``facebook/dinov2-*``): ViT
  ``encoder.layer.<i>.attention.attention.query``, ``...attention.output.dense``,
  ``intermediate.dense``, ``output.dense``; DINOv2 ``...attention.attention.query``,
  ``mlp.weights_in`` (gate and up stacked) / ``mlp.weights_out``;
* CLIP (unchanged between versions): ``vision_model.embeddings.class_embedding``,
  ``...encoder.layers.<i>.self_attn.{q,k,v,out}_proj``, ``visual_projection``; a full
  ``CLIPModel`` checkpoint loads its vision tower (the text tower is skipped).

Prefixes ``vit.`` / ``dinov2.`` / ``dinov2_with_registers.`` / ``module.`` (classification
and DataParallel checkpoints) are stripped; heads (``classifier.*``), ViT's ``pooler``
(unless ``pooler_dim`` is set), DINOv2's unused ``mask_token``, CLIP's ``position_ids``
buffer and text tower are skipped. Anything else that does not fit raises
:class:`~dtl_jax.models.convert.StateDictMismatchError` listing every missing,
unexpected and mis-shaped key.

Leaves map as in :mod:`dtl_jax.models.convert`: dense ``kernel [in, out]`` = ``weight.T``,
patch conv ``kernel [p, p, c, d]`` = ``weight.permute(2, 3, 1, 0)``, LayerNorm ``scale`` =
``weight``; token and position parameters keep their values (CLIP's ``class_embedding
[d]`` and ``position_embedding.weight [1 + P, d]`` gain leading axes).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtl_jax.models.convert import StateDictMismatchError, load_state_dict
from dtl_jax.models.lora import LORA_A, LORA_B
from dtl_jax.models.vit import VisionTransformer, _dinov2_swiglu_hidden
from dtl_jax.params import path_str as _path_str

StateDict = Mapping[str, np.ndarray]

_FAMILY = {"vit": "vit", "dinov2": "dinov2", "dinov2_registers": "dinov2", "clip": "clip"}
_FAMILY_NAMES = {
  "vit": "ViT (google/vit-*)",
  "dinov2": "DINOv2 (facebook/dinov2-*)",
  "clip": "CLIP vision (openai/clip-vit-*)",
}

_B = r"blocks_(\d+)"

# Flax module path regex -> HF module (transformers >= 5 names, prefix-free).
_MODULES: dict[str, tuple[tuple[str, str], ...]] = {
  "vit": (
    ("embed/patch_embed", "embeddings.patch_embeddings.projection"),
    (f"{_B}/norm1", r"layers.\1.layernorm_before"),
    (f"{_B}/norm2", r"layers.\1.layernorm_after"),
    (f"{_B}/attn/query", r"layers.\1.attention.q_proj"),
    (f"{_B}/attn/key", r"layers.\1.attention.k_proj"),
    (f"{_B}/attn/value", r"layers.\1.attention.v_proj"),
    (f"{_B}/attn/out", r"layers.\1.attention.o_proj"),
    (f"{_B}/mlp/fc1", r"layers.\1.mlp.fc1"),
    (f"{_B}/mlp/fc2", r"layers.\1.mlp.fc2"),
    ("norm", "layernorm"),
    ("pooler", "pooler.dense"),
  ),
  "dinov2": (
    ("embed/patch_embed", "embeddings.patch_embeddings.projection"),
    (f"{_B}/norm1", r"encoder.layer.\1.norm1"),
    (f"{_B}/norm2", r"encoder.layer.\1.norm2"),
    (f"{_B}/attn/query", r"encoder.layer.\1.attention.q_proj"),
    (f"{_B}/attn/key", r"encoder.layer.\1.attention.k_proj"),
    (f"{_B}/attn/value", r"encoder.layer.\1.attention.v_proj"),
    (f"{_B}/attn/out", r"encoder.layer.\1.attention.o_proj"),
    (f"{_B}/mlp/fc1", r"encoder.layer.\1.mlp.fc1"),
    (f"{_B}/mlp/fc2", r"encoder.layer.\1.mlp.fc2"),
    (f"{_B}/mlp/gate", r"encoder.layer.\1.mlp.gate_proj"),
    (f"{_B}/mlp/up", r"encoder.layer.\1.mlp.up_proj"),
    (f"{_B}/mlp/down", r"encoder.layer.\1.mlp.down_proj"),
    ("norm", "layernorm"),
  ),
  "clip": (
    ("embed/patch_embed", "vision_model.embeddings.patch_embedding"),
    ("pre_norm", "vision_model.pre_layrnorm"),
    (f"{_B}/norm1", r"vision_model.encoder.layers.\1.layer_norm1"),
    (f"{_B}/norm2", r"vision_model.encoder.layers.\1.layer_norm2"),
    (f"{_B}/attn/query", r"vision_model.encoder.layers.\1.self_attn.q_proj"),
    (f"{_B}/attn/key", r"vision_model.encoder.layers.\1.self_attn.k_proj"),
    (f"{_B}/attn/value", r"vision_model.encoder.layers.\1.self_attn.v_proj"),
    (f"{_B}/attn/out", r"vision_model.encoder.layers.\1.self_attn.out_proj"),
    (f"{_B}/mlp/fc1", r"vision_model.encoder.layers.\1.mlp.fc1"),
    (f"{_B}/mlp/fc2", r"vision_model.encoder.layers.\1.mlp.fc2"),
    ("post_norm", "vision_model.post_layernorm"),
    ("proj", "visual_projection"),
  ),
}

# Flax parameter path regex -> (HF key, kind) for parameters that are not kernel/scale/bias.
_PARAMS: dict[str, tuple[tuple[str, str, str], ...]] = {
  "vit": (
    ("embed/cls_token", "embeddings.cls_token", "none"),
    ("embed/pos_embed", "embeddings.position_embeddings", "none"),
  ),
  "dinov2": (
    ("embed/cls_token", "embeddings.cls_token", "none"),
    ("embed/pos_embed", "embeddings.position_embeddings", "none"),
    ("embed/reg_tokens", "embeddings.register_tokens", "none"),
    (f"{_B}/ls1", r"encoder.layer.\1.layer_scale1.lambda1", "none"),
    (f"{_B}/ls2", r"encoder.layer.\1.layer_scale2.lambda1", "none"),
  ),
  "clip": (
    ("embed/cls_token", "vision_model.embeddings.class_embedding", "vector"),
    ("embed/pos_embed", "vision_model.embeddings.position_embedding.weight", "unbatch"),
  ),
}

# Published-checkpoint (transformers < 5) names -> the names above.
_L = r"encoder\.layer\.(\d+)\."
_LEGACY: dict[str, tuple[tuple[str, str], ...]] = {
  "vit": (
    (rf"^{_L}attention\.attention\.query\.", r"layers.\1.attention.q_proj."),
    (rf"^{_L}attention\.attention\.key\.", r"layers.\1.attention.k_proj."),
    (rf"^{_L}attention\.attention\.value\.", r"layers.\1.attention.v_proj."),
    (rf"^{_L}attention\.output\.dense\.", r"layers.\1.attention.o_proj."),
    (rf"^{_L}intermediate\.dense\.", r"layers.\1.mlp.fc1."),
    (rf"^{_L}output\.dense\.", r"layers.\1.mlp.fc2."),
    (rf"^{_L}(layernorm_before|layernorm_after)\.", r"layers.\1.\2."),
  ),
  "dinov2": (
    (rf"^{_L}attention\.attention\.query\.", r"encoder.layer.\1.attention.q_proj."),
    (rf"^{_L}attention\.attention\.key\.", r"encoder.layer.\1.attention.k_proj."),
    (rf"^{_L}attention\.attention\.value\.", r"encoder.layer.\1.attention.v_proj."),
    (rf"^{_L}attention\.output\.dense\.", r"encoder.layer.\1.attention.o_proj."),
    (rf"^{_L}mlp\.weights_out\.", r"encoder.layer.\1.mlp.down_proj."),
  ),
  "clip": (),
}
_SWIGLU_IN = re.compile(r"^(encoder\.layer\.\d+\.mlp\.)weights_in\.(weight|bias)$")

_ANCHOR = {
  "vit": "embeddings.cls_token",
  "dinov2": "embeddings.cls_token",
  "clip": "embeddings.class_embedding",
}
_CLIP_VISION_TOP = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


def _ignored(model: VisionTransformer) -> list[str]:
  fam = _FAMILY[model.variant]
  if fam == "vit":
    out = [r"embeddings\.mask_token", r"classifier\..*"]
    if model.pooler_dim is None:
      out.append(r"pooler\.dense\.(weight|bias)")
  elif fam == "dinov2":
    out = [r"embeddings\.mask_token", r"classifier\..*"]
  else:
    out = [
      r"text_model\..*",
      r"text_projection\..*",
      r"logit_scale",
      r"classifier\..*",
      r"vision_model\.embeddings\.position_ids",
    ]
    if model.projection_dim is None:
      out.append(r"visual_projection\.weight")
  return out


# ---------------------------------------------------------------------- reading files

_ST_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A ``.safetensors`` file as NumPy arrays (bfloat16 tensors become float32).

  ``safetensors.numpy`` cannot represent bfloat16; the format is an 8-byte header length,
  a JSON header ``{name: {dtype, shape, data_offsets}}`` and the raw little-endian data.
  """
  import ml_dtypes  # a dependency of jax

  with open(path, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(n))
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    start, end = info["data_offsets"]
    code = info["dtype"]
    if code == "BF16":
      arr = np.frombuffer(data[start:end], dtype=ml_dtypes.bfloat16).astype(np.float32)
    elif code in _ST_DTYPES:
      arr = np.frombuffer(data[start:end], dtype=np.dtype(_ST_DTYPES[code]).newbyteorder("<"))
    else:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {code}")
    out[name] = arr.reshape(info["shape"])
  return out


def read_hf_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Reads a state dict: mapping, ``.safetensors`` (also bfloat16, no torch), a sharded
  ``*.safetensors.index.json``, ``.bin`` / ``.pth`` (torch), ``.npz``, or a checkpoint
  folder (``model.safetensors``, its index, or ``pytorch_model.bin``)."""
  if isinstance(source, Mapping):
    return load_state_dict(source)
  path = os.fspath(source)
  if os.path.isdir(path):
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
      if os.path.exists(os.path.join(path, name)):
        return read_hf_state_dict(os.path.join(path, name))
    raise ValueError(
      f"source: folder {path!r} has no model.safetensors, "
      "model.safetensors.index.json or pytorch_model.bin"
    )
  if not os.path.exists(path):
    raise ValueError(f"source: no such file {path!r}")
  if path.lower().endswith(".safetensors"):
    return _read_safetensors(path)
  if path.lower().endswith(".safetensors.index.json"):
    with open(path) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    out: dict[str, np.ndarray] = {}
    for shard in shards:
      out.update(_read_safetensors(os.path.join(os.path.dirname(path), shard)))
    return out
  return load_state_dict(path)


# ---------------------------------------------------------------------- key mapping


def detect_hf_family(state_dict: StateDict) -> str | None:
  """``"vit"``, ``"dinov2"`` or ``"clip"`` from a state dict's keys; None if unknown."""
  keys = list(state_dict)
  if any(k.endswith("embeddings.class_embedding") for k in keys):
    return "clip"
  if any(".layer_scale1." in k for k in keys):
    return "dinov2"
  if any(".layernorm_before." in k for k in keys):
    return "vit"
  return None


def _normalize_keys(state_dict: StateDict, family: str) -> dict[str, np.ndarray]:
  """Strips prefixes and renames the published layout to the transformers-5 one."""
  sd = {k.removeprefix("module."): np.asarray(v) for k, v in state_dict.items()}
  anchor = _ANCHOR[family]
  found = [k[: -len(anchor)] for k in sd if k.endswith(anchor)]
  prefix = found[0] if len(found) == 1 else ""
  if family == "clip":
    if prefix != "vision_model.":
      renamed = {}
      for k, v in sd.items():
        if prefix and k.startswith(prefix):
          k = "vision_model." + k.removeprefix(prefix)
        elif not prefix and k.startswith(_CLIP_VISION_TOP):
          k = "vision_model." + k
        renamed[k] = v
      sd = renamed
  elif prefix:
    sd = {k.removeprefix(prefix): v for k, v in sd.items()}
  rules = [(re.compile(a), b) for a, b in _LEGACY[family]]
  out = {}
  for k, v in sd.items():
    m = _SWIGLU_IN.match(k) if family == "dinov2" else None
    if m:  # weights_in = [gate; up] stacked along the output axis
      half = v.shape[0] // 2
      out[f"{m.group(1)}gate_proj.{m.group(2)}"] = v[:half]
      out[f"{m.group(1)}up_proj.{m.group(2)}"] = v[half:]
      continue
    for rx, repl in rules:
      k2 = rx.sub(repl, k)
      if k2 != k:
        k = k2
        break
    out[k] = v
  return out


def _hf_key(family: str, path: str, ndim: int) -> tuple[str, str]:
  """(HF key, kind) of the Flax parameter at ``path`` (``"blocks_0/attn/query/kernel"``)."""
  for rx, key, kind in _PARAMS[family]:
    m = re.fullmatch(rx, path)
    if m:
      return m.expand(key), kind
  module, _, leaf = path.rpartition("/")
  for rx, hf in _MODULES[family]:
    m = re.fullmatch(rx, module)
    if m:
      base = m.expand(hf)
      if leaf == "kernel":
        return f"{base}.weight", ("conv" if ndim == 4 else "linear")
      if leaf == "scale":
        return f"{base}.weight", "none"
      if leaf == "bias":
        return f"{base}.bias", "none"
  raise ValueError(f"no checkpoint name for Flax parameter {path!r} ({family})")


def _torch_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
  if kind == "conv":
    return (shape[3], shape[2], shape[0], shape[1])
  if kind == "linear":
    return (shape[1], shape[0])
  if kind == "unbatch":
    return tuple(shape[1:])
  if kind == "vector":
    return (int(np.prod(shape)),)
  return tuple(shape)


def _to_flax(value: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
  if kind == "conv":
    return np.transpose(value, (2, 3, 1, 0))
  if kind == "linear":
    return value.T
  return value.reshape(shape)


def _to_torch(value: np.ndarray, kind: str) -> np.ndarray:
  if kind == "conv":
    return np.transpose(value, (3, 2, 0, 1))
  if kind == "linear":
    return value.T
  if kind == "unbatch":
    return value.reshape(value.shape[1:])
  if kind == "vector":
    return value.reshape(-1)
  return value


def _listing(title: str, items: Sequence[str], limit: int = 25) -> str:
  shown = "\n    ".join(items[:limit])
  more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
  return f"  {title} ({len(items)}):\n    {shown}{more}"


def _is_lora(path: str) -> bool:
  return path.endswith((f"/{LORA_A}", f"/{LORA_B}"))


def _example_input(model: VisionTransformer) -> jax.ShapeDtypeStruct:
  h, w = (
    (model.image_size, model.image_size)
    if isinstance(model.image_size, int)
    else tuple(model.image_size)
  )
  return jax.ShapeDtypeStruct((1, h, w, model.num_channels), jnp.float32)


def param_shapes(model: VisionTransformer) -> Any:
  """``jax.eval_shape`` of ``model``'s ``params`` (names, shapes, dtypes; no compute)."""
  x = _example_input(model)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]


def hf_key_map(model: VisionTransformer) -> dict[str, tuple[str, str]]:
  """``{flax param path: (checkpoint key, kind)}`` for every non-LoRA parameter of ``model``.

  Keys use the transformers >= 5 names (``model.state_dict()`` of ``ViTModel``,
  ``Dinov2Model``, ``Dinov2WithRegistersModel``, ``CLIPVisionModelWithProjection``).
  """
  fam = _FAMILY[model.variant]
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(param_shapes(model))[0]:
    p = _path_str(path)
    if not _is_lora(p):
      out[p] = _hf_key(fam, p, len(leaf.shape))
  return out


def _check_family(sd: StateDict, model: VisionTransformer, expected: Sequence[str]) -> str:
  if model.variant not in _FAMILY:
    raise ValueError(f"model.variant must be one of {sorted(_FAMILY)}, got {model.variant!r}")
  fam = _FAMILY[model.variant]
  if fam not in expected:
    raise ValueError(
      f"this loader takes {' or '.join(_FAMILY_NAMES[e] for e in expected)} "
      f"models; model.variant is {model.variant!r} (use load_hf_vision)"
    )
  found = detect_hf_family(sd)
  if found is not None and found != fam:
    raise ValueError(
      f"state dict is a {_FAMILY_NAMES[found]} checkpoint but the model is "
      f"{_FAMILY_NAMES[fam]} (variant {model.variant!r}); build the model with "
      "vit_from_hf_config(config.json) or the matching variant"
    )
  return fam


def _load(
  source: Any,
  model: VisionTransformer,
  families: Sequence[str],
  ignore: Sequence[str],
  lora_key: jax.Array | None,
) -> dict[str, Any]:
  model.check()
  raw = read_hf_state_dict(source)
  fam = _check_family(raw, model, families)
  sd = _normalize_keys(raw, fam)
  ignore_re = [re.compile(p) for p in list(ignore) + _ignored(model)]
  shapes = param_shapes(model)
  flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  missing: list[str] = []
  misshaped: list[str] = []
  values: list[Any] = []
  used: set[str] = set()
  lora_paths: list[str] = []
  for path, leaf in flat:
    p = _path_str(path)
    if _is_lora(p):
      lora_paths.append(p)
      values.append(None)
      continue
    key, kind = _hf_key(fam, p, len(leaf.shape))
    want = _torch_shape(tuple(leaf.shape), kind)
    if key not in sd:
      missing.append(f"{key} (expected shape {want})")
      values.append(None)
      continue
    used.add(key)
    value = sd[key]
    if tuple(value.shape) != want:
      misshaped.append(f"{key}: state dict {tuple(value.shape)}, model expects {want}")
      values.append(None)
      continue
    values.append(jnp.asarray(_to_flax(value, kind, tuple(leaf.shape)), dtype=leaf.dtype))
  unexpected = [k for k in sd if k not in used and not any(r.fullmatch(k) for r in ignore_re)]
  if missing or unexpected or misshaped:
    parts = [
      (f"state dict does not match the model ({_FAMILY_NAMES[fam]}, variant {model.variant!r}):")
    ]
    if missing:
      parts.append(_listing("missing keys", missing))
    if unexpected:
      parts.append(_listing("unexpected keys", unexpected))
    if misshaped:
      parts.append(_listing("mis-shaped keys", misshaped))
    raise StateDictMismatchError("\n".join(parts))
  if lora_paths and lora_key is not None:
    shape = _example_input(model).shape
    fresh = jax.jit(lambda k: model.init(k, jnp.zeros(shape, jnp.float32), train=False))(lora_key)[
      "params"
    ]
    fresh_flat = {_path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(fresh)[0]}
    values = [
      fresh_flat[_path_str(p)] if v is None else v for (p, _), v in zip(flat, values, strict=True)
    ]
  elif lora_paths:
    # Without a key the adapters are left out: merge into init_variables(model, ...).
    kept = [(_path_str(p), v) for (p, _), v in zip(flat, values, strict=True) if v is not None]
    nested: dict[str, Any] = {}
    for name, v in kept:
      node = nested
      *parents, last = name.split("/")
      for parent in parents:
        node = node.setdefault(parent, {})
      node[last] = v
    return {"params": nested}
  return {"params": jax.tree_util.tree_unflatten(treedef, values)}


def load_hf_vision(
  source: str | os.PathLike | StateDict,
  model: VisionTransformer,
  *,
  ignore: Sequence[str] = (),
  lora_key: jax.Array | None = None,
) -> dict[str, Any]:
  """Loads a ViT, DINOv2 or CLIP-vision state dict into ``model`` (any variant).

  Args:
    source: a path (``.safetensors`` -- read without torch, bfloat16 included --,
      sharded ``.safetensors.index.json``, ``.bin`` / ``.pth`` -- needs torch --, ``.npz``),
      a checkpoint folder, or a mapping of arrays / tensors.
    model: the target module; its ``variant`` picks the key layout.
    ignore: extra regexes (fullmatch, after prefix stripping) of keys to drop.
    lora_key: for a model with LoRA adapters, initializes them (``lora_a`` random,
      ``lora_b`` zero); without it the adapters are left out of the result (merge it into
      ``init_variables(model, ...)`` with :func:`~dtl_jax.models.merge_variables`).

  Returns:
    ``{"params": ...}`` with the dtypes of ``model.param_dtype``.

  Raises:
    ValueError: the checkpoint is another family than the model (detected from keys).
    StateDictMismatchError: missing / unexpected / mis-shaped keys, all listed.
  """
  return _load(source, model, ("vit", "dinov2", "clip"), ignore, lora_key)


def load_hf_vit(
  source: str | os.PathLike | StateDict,
  model: VisionTransformer,
  *,
  ignore: Sequence[str] = (),
  lora_key: jax.Array | None = None,
) -> dict[str, Any]:
  """:func:`load_hf_vision` for ``transformers``' ``ViTModel`` / ``ViTForImageClassification``
  checkpoints (``google/vit-*``); ``model.variant`` must be ``"vit"``."""
  return _load(source, model, ("vit",), ignore, lora_key)


def load_hf_dinov2(
  source: str | os.PathLike | StateDict,
  model: VisionTransformer,
  *,
  ignore: Sequence[str] = (),
  lora_key: jax.Array | None = None,
) -> dict[str, Any]:
  """:func:`load_hf_vision` for ``Dinov2Model`` / ``Dinov2WithRegistersModel`` checkpoints
  (``facebook/dinov2-*``); ``model.variant`` ``"dinov2"`` or ``"dinov2_registers"``."""
  return _load(source, model, ("dinov2",), ignore, lora_key)


def load_hf_clip_vision(
  source: str | os.PathLike | StateDict,
  model: VisionTransformer,
  *,
  ignore: Sequence[str] = (),
  lora_key: jax.Array | None = None,
) -> dict[str, Any]:
  """:func:`load_hf_vision` for ``CLIPVisionModel(WithProjection)`` or full ``CLIPModel``
  checkpoints (``openai/clip-vit-*``); ``model.variant`` must be ``"clip"``."""
  return _load(source, model, ("clip",), ignore, lora_key)


def to_hf_state_dict(
  variables: Mapping[str, Any], model: VisionTransformer
) -> dict[str, np.ndarray]:
  """Inverse of :func:`load_hf_vision`: Flax variables -> a transformers >= 5 state dict.

  The keys are those of ``ViTModel`` (without ``pooler`` unless ``pooler_dim``),
  ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (without the unused ``mask_token``),
  ``CLIPVisionModelWithProjection`` (with ``projection_dim``) or ``CLIPVisionModel``.
  Merge LoRA adapters first (:func:`~dtl_jax.models.lora.merge_lora`).
  """
  params = variables.get("params", variables)
  flat = {_path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  lora = [p for p in flat if _is_lora(p)]
  if lora:
    raise ValueError(f"variables hold LoRA adapters ({lora[0]}, ...); merge_lora them first")
  fam = _FAMILY[model.variant]
  out = {}
  for p, v in flat.items():
    key, kind = _hf_key(fam, p, v.ndim)
    if fam == "clip" and model.projection_dim is None:
      key = key.removeprefix("vision_model.")
    out[key] = np.ascontiguousarray(_to_torch(v, kind))
  return out


# ---------------------------------------------------------------------- configs

_DEFAULTS: dict[str, dict[str, Any]] = {  # transformers' config defaults
  "vit": {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-12,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "qkv_bias": True,
  },
  "dinov2": {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "mlp_ratio": 4,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-6,
    "image_size": 224,
    "patch_size": 14,
    "num_channels": 3,
    "qkv_bias": True,
    "layerscale_value": 1.0,
    "drop_path_rate": 0.0,
    "use_swiglu_ffn": False,
  },
  "dinov2_with_registers": {"patch_size": 16, "num_register_tokens": 4},
  "clip_vision_model": {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
  },
}
_DEFAULTS["dinov2_with_registers"] = {**_DEFAULTS["dinov2"], **_DEFAULTS["dinov2_with_registers"]}

HF_MODEL_TYPES = ("vit", "dinov2", "dinov2_with_registers", "clip_vision_model", "clip")


def _square(v: Any, name: str) -> int:
  if isinstance(v, (list, tuple)):
    if len(v) != 2 or v[0] != v[1]:
      raise ValueError(f"config {name} must be square, got {v!r}")
    v = v[0]
  return int(v)


def read_hf_config(config: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
  """A ``config.json`` as a dict (from a mapping, the file, or its folder)."""
  if isinstance(config, Mapping):
    return dict(config)
  path = os.fspath(config)
  if os.path.isdir(path):
    path = os.path.join(path, "config.json")
  if not os.path.exists(path):
    raise ValueError(f"config: no such file {path!r}")
  with open(path) as f:
    return json.load(f)


def vit_from_hf_config(
  config: Mapping[str, Any] | str | os.PathLike, **overrides: Any
) -> VisionTransformer:
  """Builds the :class:`VisionTransformer` that a ``transformers`` ``config.json`` describes.

  Args:
    config: the config dict, the ``config.json`` path or its folder. ``model_type``
      ``"vit"``, ``"dinov2"``, ``"dinov2_with_registers"``, ``"clip_vision_model"``
      (projection when ``architectures`` names ``CLIPVisionModelWithProjection``) or
      ``"clip"`` (a full CLIP: its ``vision_config`` and the top-level ``projection_dim``).
      Missing keys take ``transformers``' defaults.
    **overrides: module attributes set on top (``dtype``, ``return_blocks``, ``pool``,
      ``lora_rank``, ``interpolate_pos_encoding``, ``projection_dim=None``, ...).

  Returns:
    The module (random weights; load them with :func:`load_hf_vision`).
  """
  cfg = read_hf_config(config)
  mt = cfg.get("model_type")
  if mt not in HF_MODEL_TYPES:
    raise ValueError(f"config model_type must be one of {HF_MODEL_TYPES}, got {mt!r}")
  arch = cfg.get("architectures") or []
  if mt == "clip":
    vis = {**_DEFAULTS["clip_vision_model"], **(cfg.get("vision_config") or {})}
    projection: int | None = int(cfg.get("projection_dim", 512))
    mt, c = "clip_vision_model", vis
  else:
    c = {**_DEFAULTS[mt], **cfg}
    projection = (
      int(c["projection_dim"])
      if mt == "clip_vision_model" and any("WithProjection" in a for a in arch)
      else None
    )
  kw: dict[str, Any] = {
    "image_size": _square(c["image_size"], "image_size"),
    "patch_size": _square(c["patch_size"], "patch_size"),
    "num_channels": int(c["num_channels"]),
    "hidden_size": int(c["hidden_size"]),
    "num_layers": int(c["num_hidden_layers"]),
    "num_heads": int(c["num_attention_heads"]),
    "hidden_act": c["hidden_act"],
    "layer_norm_eps": float(c["layer_norm_eps"]),
  }
  if mt == "vit":
    kw.update(
      variant="vit",
      mlp_dim=int(c["intermediate_size"]),
      qkv_bias=bool(c["qkv_bias"]),
      dropout_rate=float(c["hidden_dropout_prob"]),
      attention_dropout=float(c["attention_probs_dropout_prob"]),
    )
  elif mt.startswith("dinov2"):
    swiglu = bool(c["use_swiglu_ffn"])
    hidden = int(c["hidden_size"])
    kw.update(
      variant="dinov2" if mt == "dinov2" else "dinov2_registers",
      mlp_dim=(
        _dinov2_swiglu_hidden(hidden, c["mlp_ratio"]) if swiglu else int(hidden * c["mlp_ratio"])
      ),
      swiglu=swiglu,
      qkv_bias=bool(c["qkv_bias"]),
      layerscale_value=float(c["layerscale_value"]),
      drop_path_rate=float(c["drop_path_rate"]),
      dropout_rate=float(c["hidden_dropout_prob"]),
      attention_dropout=float(c["attention_probs_dropout_prob"]),
    )
    if mt == "dinov2_with_registers":
      kw["num_register_tokens"] = int(c["num_register_tokens"])
  else:
    kw.update(
      variant="clip",
      mlp_dim=int(c["intermediate_size"]),
      projection_dim=projection,
      attention_dropout=float(c["attention_dropout"]),
    )
  fields = set(VisionTransformer.__dataclass_fields__) - {"parent", "name"}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(
      f"overrides: unknown attribute(s) {unknown}; VisionTransformer has {sorted(fields)}"
    )
  return VisionTransformer(**{**kw, **overrides})


def load_hf_pretrained(
  path: str | os.PathLike, *, lora_key: jax.Array | None = None, **overrides: Any
) -> tuple[VisionTransformer, dict[str, Any]]:
  """Module and weights from a checkpoint folder (``config.json`` + weights).

  Args:
    path: a folder as ``huggingface-cli download <repo>`` leaves it: ``config.json`` and
      ``model.safetensors`` (or ``model.safetensors.index.json`` + shards, or
      ``pytorch_model.bin``).
    lora_key: initializes LoRA adapters when ``overrides`` ask for them (see
      :func:`load_hf_vision`).
    **overrides: module attributes (see :func:`vit_from_hf_config`).

  Returns:
    ``(model, {"params": ...})``.
  """
  model = vit_from_hf_config(path, **overrides)
  return model, load_hf_vision(path, model, lora_key=lora_key)
