"""PyTorch state dicts -> Flax variables, and merging loaded weights into new models.

Naming rule (every model in :mod:`dtl_jax.models` follows it): a Flax module path
``a/b/c`` is the PyTorch module ``a.b.c``. Leaves map as

=========================  ================================  ==========================
Flax                       PyTorch                           transform
=========================  ================================  ==========================
``params/.../kernel`` 4-D  ``....weight`` ``[O, I, kh, kw]``  -> ``[kh, kw, I, O]``
``params/.../kernel`` 2-D  ``....weight`` ``[out, in]``       transpose
``params/.../bias``        ``....bias``
``params/.../scale``       ``....weight`` (BatchNorm)
``batch_stats/.../mean``   ``....running_mean``
``batch_stats/.../var``    ``....running_var``
=========================  ================================  ==========================

``num_batches_tracked`` is ignored. ``.safetensors`` and ``.npz`` files load without
torch; ``.pth`` / ``.pt`` need torch (imported only then).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtl_jax.models.resnet import RESNET_CONFIGS, ResNet
from dtl_jax.params import path_str as _path_str

StateDict = Mapping[str, np.ndarray]


class StateDictMismatchError(ValueError):
  """A state dict does not fit the model: lists missing / unexpected / mis-shaped keys."""


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # torch.Tensor, without importing torch
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def load_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Reads a PyTorch-style state dict into ``{key: np.ndarray}``.

  Args:
    source: a mapping (torch tensors or arrays), or a path to ``.safetensors``,
      ``.npz`` (both without torch) or ``.pth`` / ``.pt`` / ``.bin`` (needs torch;
      a checkpoint holding ``"state_dict"`` or ``"model"`` is unwrapped).

  Returns:
    A plain dict of NumPy arrays.
  """
  if isinstance(source, Mapping):
    return {str(k): _to_numpy(v) for k, v in source.items()}
  path = os.fspath(source)
  if not os.path.exists(path):
    raise ValueError(f"source: no such file {path!r}")
  lower = path.lower()
  if lower.endswith(".safetensors"):
    from safetensors.numpy import load_file

    return dict(load_file(path))
  if lower.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  if lower.endswith((".pth", ".pt", ".bin", ".ckpt")):
    try:
      import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
      raise ImportError(
        f"loading {path!r} needs torch; convert it to .safetensors or .npz to load without torch"
      ) from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
      if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
        obj = obj[key]
    return load_state_dict(obj)
  raise ValueError(
    f"source: unsupported file type {path!r}; expected .safetensors, .npz, .pth or .pt"
  )


def _torch_key(collection: str, path: Sequence[str], ndim: int) -> tuple[str, str]:
  """Returns (torch key, transform kind) for one Flax leaf."""
  *mods, leaf = path
  base = ".".join(mods)
  if collection == "params":
    if leaf == "kernel":
      return f"{base}.weight", ("conv" if ndim == 4 else "linear" if ndim == 2 else "none")
    if leaf == "scale":
      return f"{base}.weight", "none"
    if leaf == "bias":
      return f"{base}.bias", "none"
  if collection == "batch_stats":
    if leaf == "mean":
      return f"{base}.running_mean", "none"
    if leaf == "var":
      return f"{base}.running_var", "none"
  raise ValueError(f"no PyTorch name for Flax leaf {collection}/{'/'.join(path)}")


def _to_flax(value: np.ndarray, kind: str) -> np.ndarray:
  if kind == "conv":
    return np.transpose(value, (2, 3, 1, 0))
  if kind == "linear":
    return value.T
  return value


def _torch_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
  if kind == "conv":
    return (shape[3], shape[2], shape[0], shape[1])
  if kind == "linear":
    return (shape[1], shape[0])
  return tuple(shape)


def _listing(title: str, items: Sequence[str], limit: int = 25) -> str:
  shown = "\n    ".join(items[:limit])
  more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
  return f"  {title} ({len(items)}):\n    {shown}{more}"


def torch_to_flax(
  state_dict: StateDict,
  target: Any,
  *,
  ignore: Sequence[str] = (),
  strip_prefix: Sequence[str] = ("module.",),
) -> dict[str, Any]:
  """Converts a PyTorch state dict into Flax variables shaped like ``target``.

  Args:
    state_dict: ``{torch key: array}`` (see :func:`load_state_dict`).
    target: Flax variables (arrays or ``jax.ShapeDtypeStruct``, e.g. from
      ``jax.eval_shape(model.init, ...)``) with ``params`` and optionally
      ``batch_stats``; gives the names, shapes and dtypes.
    ignore: regexes (fullmatch) of state-dict keys to drop silently (e.g. ``"fc\\..*"``
      when loading a backbone without its classifier).
    strip_prefix: key prefixes removed first (``DataParallel``'s ``module.``).

  Returns:
    ``{"params": ..., "batch_stats": ...}`` with the structure and dtypes of ``target``.

  Raises:
    StateDictMismatchError: listing every missing, unexpected and mis-shaped key.
  """
  sd = {}
  for k, v in state_dict.items():
    for p in strip_prefix:
      if k.startswith(p):
        k = k[len(p) :]
    sd[k] = v
  ignore_re = [re.compile(p) for p in ignore]
  wanted = {}
  leaves_out = {}
  for collection in ("params", "batch_stats"):
    if collection not in target:
      continue
    flat, treedef = jax.tree_util.tree_flatten_with_path(target[collection])
    for path, leaf in flat:
      parts = tuple(_path_str(path).split("/"))
      key, kind = _torch_key(collection, parts, len(leaf.shape))
      wanted[key] = (collection, path, leaf, kind)
    leaves_out[collection] = (flat, treedef)
  missing, misshaped = [], []
  converted = {}
  for key, (_, _, leaf, kind) in wanted.items():
    if key not in sd:
      missing.append(f"{key} (expected shape {_torch_shape(leaf.shape, kind)})")
      continue
    value = np.asarray(sd[key])
    want = _torch_shape(tuple(leaf.shape), kind)
    if tuple(value.shape) != want:
      misshaped.append(f"{key}: state dict {tuple(value.shape)}, model expects {want}")
      continue
    converted[key] = jnp.asarray(_to_flax(value, kind), dtype=leaf.dtype)
  unexpected = [
    k
    for k in sd
    if k not in wanted
    and not k.endswith("num_batches_tracked")
    and not any(r.fullmatch(k) for r in ignore_re)
  ]
  if missing or unexpected or misshaped:
    lines = ["state dict does not match the model:"]
    if missing:
      lines.append(_listing("missing keys", missing))
    if unexpected:
      lines.append(_listing("unexpected keys", unexpected))
    if misshaped:
      lines.append(_listing("mis-shaped keys", misshaped))
    raise StateDictMismatchError("\n".join(lines))
  out = {}
  for collection, (flat, treedef) in leaves_out.items():
    vals = [
      converted[_torch_key(collection, tuple(_path_str(p).split("/")), len(l.shape))[0]]
      for p, l in flat
    ]
    out[collection] = jax.tree_util.tree_unflatten(treedef, vals)
  return out


def flax_to_torch(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Inverse of :func:`torch_to_flax`: Flax variables -> ``{torch key: np.ndarray}``."""
  out = {}
  for collection in ("params", "batch_stats"):
    if collection not in variables:
      continue
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables[collection])[0]:
      leaf = np.asarray(leaf)
      key, kind = _torch_key(collection, tuple(_path_str(path).split("/")), leaf.ndim)
      if kind == "conv":
        leaf = np.transpose(leaf, (3, 2, 0, 1))
      elif kind == "linear":
        leaf = leaf.T
      out[key] = np.ascontiguousarray(leaf)
  return out


def resnet_depth_of(state_dict: StateDict) -> int | None:
  """Detects a torchvision ResNet's depth from its keys (block counts, block type).

  Returns:
    18, 34, 50, 101 or 152, or ``None`` when the keys fit no torchvision ResNet.
  """
  keys = [k.removeprefix("module.") for k in state_dict]
  counts = []
  for i in range(1, 5):
    blocks = {int(m.group(1)) for k in keys if (m := re.match(rf"layer{i}\.(\d+)\.", k))}
    counts.append(len(blocks))
  bottleneck = any(re.match(r"layer\d\.\d+\.conv3\.weight", k) for k in keys)
  for depth, (block, layers) in RESNET_CONFIGS.items():
    if tuple(counts) == layers and (block == "bottleneck") == bottleneck:
      return depth
  return None


def load_torchvision_resnet(
  source: str | os.PathLike | StateDict, model: ResNet, *, ignore: Sequence[str] = ()
) -> dict[str, Any]:
  """Loads a torchvision (or timm) ResNet state dict into ``model``'s Flax variables.

  Args:
    source: path (``.safetensors`` / ``.npz`` / ``.pth``) or mapping.
    model: the target :class:`~dtl_jax.models.ResNet`; with ``num_classes=None``
      the checkpoint's ``fc`` is dropped, otherwise its shape must match.
    ignore: extra regexes of keys to drop.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for ``model.apply``.

  Raises:
    ValueError: the state dict is a ResNet of another depth (detected from the keys).
    StateDictMismatchError: missing / unexpected / mis-shaped keys.
  """
  sd = load_state_dict(source)
  found = resnet_depth_of(sd)
  if found is not None and found != model.depth:
    block, layers = RESNET_CONFIGS[found]
    raise ValueError(
      f"state dict is a ResNet-{found} ({block} blocks {list(layers)}) but the "
      f"model is a ResNet-{model.depth} "
      f"({RESNET_CONFIGS[model.depth][0]} blocks "
      f"{list(RESNET_CONFIGS[model.depth][1])}); use ResNet(depth={found})"
    )
  ignore = tuple(ignore) + ((r"fc\..*",) if model.num_classes is None else ())
  target = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32), train=False)
  )
  return torch_to_flax(sd, target, ignore=ignore)


@dataclasses.dataclass
class MergeReport:
  """What :func:`merge_variables` did, leaf paths as ``"collection/a/b/c"``."""

  loaded: list[str]
  initialized: list[str]
  mismatched: list[str]
  unused: list[str]

  def __str__(self) -> str:
    lines = [f"loaded {len(self.loaded)} leaves, left {len(self.initialized)} at init"]
    if self.initialized:
      lines.append(_listing("newly initialized", self.initialized))
    if self.mismatched:
      lines.append(_listing("shape mismatch (kept at init)", self.mismatched))
    if self.unused:
      lines.append(_listing("unused from source", self.unused))
    return "\n".join(lines)


def _flat_dict(tree: Any) -> dict[str, Any]:
  return {_path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def merge_variables(
  init: Any, loaded: Any, *, at: str | None = None, include: str | None = None
) -> tuple[Any, MergeReport]:
  """Copies loaded leaves into freshly initialized variables (new head, same backbone).

  Big-transfer style ``merge_params``: every leaf of ``init`` whose path exists in
  ``loaded`` with the same shape takes the loaded value (cast to the init dtype); the
  rest keep their initialization and are reported.

  Args:
    init: variables of the new model, e.g. ``{"params": ..., "batch_stats": ...}``.
    loaded: variables from a checkpoint or :func:`load_torchvision_resnet`.
    at: place ``loaded`` under this sub-path of every collection first
      (``at="backbone"`` for a converted backbone going into a ``TransferModel``).
    include: regex (fullmatch on ``"collection/a/b/c"``) restricting which leaves may
      be loaded, e.g. ``"(params|batch_stats)/backbone/.*"``.

  Returns:
    ``(merged, report)``: the merged tree (structure of ``init``) and a
    :class:`MergeReport`.
  """
  if at:
    prefix = at.strip("/").split("/")
    nested = {}
    for collection, tree in dict(loaded).items():
      for name in reversed(prefix):
        tree = {name: tree}
      nested[collection] = tree
    loaded = nested
  src = _flat_dict(loaded)
  inc = re.compile(include) if include is not None else None
  flat, treedef = jax.tree_util.tree_flatten_with_path(init)
  out, report = [], MergeReport([], [], [], [])
  used = set()
  for path, leaf in flat:
    key = _path_str(path)
    if key in src and (inc is None or inc.fullmatch(key)):
      value = src[key]
      if tuple(np.shape(value)) == tuple(np.shape(leaf)):
        out.append(jnp.asarray(value, dtype=jnp.asarray(leaf).dtype))
        report.loaded.append(key)
        used.add(key)
        continue
      report.mismatched.append(
        f"{key}: source {tuple(np.shape(value))}, model {tuple(np.shape(leaf))}"
      )
      used.add(key)
    out.append(leaf)
    report.initialized.append(key)
  report.unused = [k for k in src if k not in used]
  return jax.tree_util.tree_unflatten(treedef, out), report
