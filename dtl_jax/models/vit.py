"""Vision Transformers that load the published PyTorch checkpoints: ViT, DINOv2, CLIP vision.

One Flax module, :class:`VisionTransformer`, computes the three families exactly as
``transformers`` does (``ViTModel``, ``Dinov2Model`` / ``Dinov2WithRegistersModel``,
``CLIPVisionModel`` / ``CLIPVisionModelWithProjection``); ``variant`` selects the
differences:

==================  ====================  ===========================  ========================
                    ``"vit"``             ``"dinov2"`` /               ``"clip"``
                                          ``"dinov2_registers"``
==================  ====================  ===========================  ========================
tokens              CLS + patches         CLS + registers + patches    CLS + patches
before the blocks   --                    --                           LayerNorm ``pre_norm``
block               pre-norm attn + MLP   + layer scale ``ls1/ls2``,   pre-norm attn + MLP
                                          SwiGLU MLP if asked
MLP activation      ``gelu`` (erf)        ``gelu``                     ``quick_gelu``
after the blocks    LayerNorm ``norm``    LayerNorm ``norm``           LayerNorm ``post_norm``
                    on every token        on every token               on the CLS only
other image sizes   bicubic, only with    always: bicubic in float32   bicubic, only with
                    ``interpolate_pos_``  (antialiased for             ``interpolate_pos_``
                    ``encoding=True``     ``dinov2_registers``)        ``encoding=True``
==================  ====================  ===========================  ========================

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; Oquab et al., "DINOv2",
TMLR 2024; Darcet et al., "Vision Transformers Need Registers", ICLR 2024; Radford et al.,
"Learning Transferable Visual Models From Natural Language Supervision" (CLIP), ICML 2021.

Apply contract: ``module(x, train=bool)`` with ``x: [n, h, w, c]`` (NHWC, float,
already normalized with the checkpoint's mean / std: ViT 0.5 / 0.5, DINOv2 ImageNet's,
CLIP ``(0.4815, 0.4578, 0.4082) / (0.2686, 0.2613, 0.2758)``) returns a dict:

* ``"features"`` ``[n, out_features]``: the pooled token (``pool``), or for CLIP with
  ``projection_dim`` the projected image embedding (``image_embeds`` of
  ``CLIPVisionModelWithProjection``);
* ``"pooled"``: the pooled token before any projection (``pooler_output`` of
  ``Dinov2Model`` and ``CLIPVisionModel``; for ViT the CLS token after the final norm);
* ``"tokens"`` ``[n, 1 + R + P, d]``: the last hidden states (``last_hidden_state``:
  after the final LayerNorm for ViT / DINOv2, before ``post_norm`` for CLIP);
* ``"block_<i>"`` ``[n, 1 + R + P, d]`` for ``i`` in ``return_blocks``: the output of
  block ``i`` (0-based; ``hidden_states[i + 1]`` of ``transformers``);
* ``"pooler"`` (ViT with ``pooler_dim``): ``tanh(dense(CLS))``, ``ViTModel``'s
  ``pooler_output``.

Parameter names (paths relative to the module): ``embed/{patch_embed, cls_token,
reg_tokens, pos_embed}``, ``pre_norm``, ``blocks_<i>/{norm1, attn/{query, key,
value, out}, ls1, norm2, mlp/{fc1, fc2 | gate, up, down}, ls2}``, ``norm``,
``post_norm``, ``proj``, ``pooler``. LoRA targets (``lora_targets``) are regexes over the
dense-layer paths inside the blocks, e.g. ``r"blocks_\\d+/attn/(query|value)"``.
:mod:`dtl_jax.models.convert_vit` maps them to the checkpoints' keys.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dtl_jax.models.interpolate import resize_bicubic
from dtl_jax.models.lora import LoRADense

VARIANTS = ("vit", "dinov2", "dinov2_registers", "clip")
POOLS = ("cls", "mean", "cls+mean")


def _quick_gelu(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(1.702 * x)


#: ``transformers``' ``ACT2FN`` names supported for the MLP.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
  "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
  "quick_gelu": _quick_gelu,
  "relu": jax.nn.relu,
  "silu": jax.nn.silu,
  "swish": jax.nn.silu,
}

_INIT = nn.initializers.truncated_normal(stddev=0.02)


def _layer_norm(eps: float, name: str, dtype: Any, param_dtype: Any) -> nn.LayerNorm:
  # Two-pass variance, as PyTorch (the one-pass form loses digits on large activations).
  return nn.LayerNorm(
    epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, name=name
  )


def _drop_path(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """Stochastic depth (Huang et al., ECCV 2016): drops the residual branch per example."""
  if rate == 0.0 or not train:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


class _DenseFactory:
  """Builds ``nn.Dense`` or, for the names in ``lora``, :class:`LoRADense` layers."""

  def __init__(self, owner: Any, lora: tuple[str, ...]):
    self.owner = owner
    self.lora = lora

  def __call__(self, features: int, name: str, *, use_bias: bool = True) -> nn.Module:
    o = self.owner
    if name in self.lora:
      alpha = o.lora_alpha if o.lora_alpha is not None else float(o.lora_rank)
      return LoRADense(
        features,
        o.lora_rank,
        alpha,
        use_bias=use_bias,
        dtype=o.dtype,
        param_dtype=o.param_dtype,
        precision=o.precision,
        kernel_init=_INIT,
        name=name,
      )
    return nn.Dense(
      features,
      use_bias=use_bias,
      dtype=o.dtype,
      param_dtype=o.param_dtype,
      precision=o.precision,
      kernel_init=_INIT,
      name=name,
    )


class Attention(nn.Module):
  """Multi-head self-attention: ``softmax(q k^T / sqrt(d_h)) v`` then ``out``.

  ``x: [n, t, d] -> [n, t, d]``; the softmax runs in at least float32.
  """

  num_heads: int
  qkv_bias: bool = True
  attention_dropout: float = 0.0
  lora: tuple[str, ...] = ()
  lora_rank: int = 0
  lora_alpha: float | None = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    n, t, d = x.shape
    hd = d // self.num_heads
    dense = _DenseFactory(self, self.lora)
    q = dense(d, "query", use_bias=self.qkv_bias)(x).reshape(n, t, self.num_heads, hd)
    k = dense(d, "key", use_bias=self.qkv_bias)(x).reshape(n, t, self.num_heads, hd)
    v = dense(d, "value", use_bias=self.qkv_bias)(x).reshape(n, t, self.num_heads, hd)
    logits = jnp.einsum("nqhc,nkhc->nhqk", q, k, precision=self.precision) * (hd**-0.5)
    probs = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    probs = nn.Dropout(self.attention_dropout, deterministic=not train)(probs.astype(v.dtype))
    out = jnp.einsum("nhqk,nkhc->nqhc", probs, v, precision=self.precision).reshape(n, t, d)
    return dense(d, "out")(out)


class FeedForward(nn.Module):
  """``fc2(act(fc1(x)))``, or DINOv2's SwiGLU ``down(silu(gate(x)) * up(x))``."""

  hidden: int
  hidden_act: str = "gelu"
  swiglu: bool = False
  lora: tuple[str, ...] = ()
  lora_rank: int = 0
  lora_alpha: float | None = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    dense = _DenseFactory(self, self.lora)
    if self.swiglu:
      return dense(d, "down")(
        jax.nn.silu(dense(self.hidden, "gate")(x)) * dense(self.hidden, "up")(x)
      )
    return dense(d, "fc2")(ACTIVATIONS[self.hidden_act](dense(self.hidden, "fc1")(x)))


class EncoderBlock(nn.Module):
  """Pre-norm transformer block: ``x + ls1 * attn(norm1(x))``, ``x + ls2 * mlp(norm2(x))``.

  ``layerscale_value=None``: no layer scale (ViT, CLIP); otherwise DINOv2's per-channel
  ``ls1`` / ``ls2`` initialized to that value (Touvron et al., CaiT, ICCV 2021).
  """

  num_heads: int
  mlp_dim: int
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  qkv_bias: bool = True
  layerscale_value: float | None = None
  swiglu: bool = False
  dropout_rate: float = 0.0
  attention_dropout: float = 0.0
  drop_path_rate: float = 0.0
  lora: tuple[str, ...] = ()
  lora_rank: int = 0
  lora_alpha: float | None = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    d = x.shape[-1]
    common = {
      "lora_rank": self.lora_rank,
      "lora_alpha": self.lora_alpha,
      "dtype": self.dtype,
      "param_dtype": self.param_dtype,
      "precision": self.precision,
    }

    def sub(prefix: str) -> tuple[str, ...]:
      return tuple(n[len(prefix) :] for n in self.lora if n.startswith(prefix))

    h = _layer_norm(self.layer_norm_eps, "norm1", self.dtype, self.param_dtype)(x)
    h = Attention(
      self.num_heads,
      self.qkv_bias,
      self.attention_dropout,
      lora=sub("attn/"),
      name="attn",
      **common,
    )(h, train=train)
    if self.layerscale_value is not None:
      h = h * self.param(
        "ls1", nn.initializers.constant(self.layerscale_value), (d,), self.param_dtype
      ).astype(h.dtype)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    x = x + _drop_path(self, h, self.drop_path_rate, train)
    h = _layer_norm(self.layer_norm_eps, "norm2", self.dtype, self.param_dtype)(x)
    h = FeedForward(
      self.mlp_dim, self.hidden_act, self.swiglu, lora=sub("mlp/"), name="mlp", **common
    )(h)
    if self.layerscale_value is not None:
      h = h * self.param(
        "ls2", nn.initializers.constant(self.layerscale_value), (d,), self.param_dtype
      ).astype(h.dtype)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return x + _drop_path(self, h, self.drop_path_rate, train)


def _pair(v: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
  if isinstance(v, int):
    out = (v, v)
  elif isinstance(v, (tuple, list)) and len(v) == 2:
    out = (int(v[0]), int(v[1]))
  else:
    raise ValueError(f"{name} must be an int or a (height, width) pair, got {v!r}")
  if min(out) < 1:
    raise ValueError(f"{name} must be positive, got {v!r}")
  return out


class Embeddings(nn.Module):
  """Patch embedding, CLS token, position embeddings and registers -> ``[n, 1 + R + P, d]``.

  Parameters ``patch_embed`` (a stride-``p`` ``p x p`` conv; no bias for CLIP),
  ``cls_token [1, 1, d]``, ``pos_embed [1, 1 + P0, d]`` (``P0`` patches of the pretraining
  ``image_size``), ``reg_tokens [1, R, d]``. Tokens are ``[CLS, patches] + pos_embed``,
  then the registers go after the CLS (DINOv2 with registers: registers carry no position).

  Other image sizes (``transformers``' rule): the embeddings are used as they are when the
  patch grid is the pretraining one and the image is square; otherwise ViT / CLIP need
  ``interpolate_pos_encoding`` (else an image of another pixel size is an error), DINOv2
  always resizes; the patch grid is resized bicubically
  (:func:`~dtl_jax.models.interpolate.resize_bicubic`, antialiased for
  ``"dinov2_registers"``), in float32 when ``pos_interp_float32`` (default: DINOv2).
  """

  variant: str
  image_size: tuple[int, int]
  patch_size: int
  hidden_size: int
  num_register_tokens: int = 0
  interpolate_pos_encoding: bool = False
  pos_interp_float32: bool | None = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @property
  def grid(self) -> tuple[int, int]:
    return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

  def _position_embeddings(
    self, pos: jax.Array, grid: tuple[int, int], pixels: tuple[int, int]
  ) -> jax.Array:
    """``pos: [1, 1 + P0, d]`` for the input's patch grid."""
    if self.variant in ("vit", "clip") and not self.interpolate_pos_encoding:
      if pixels != tuple(self.image_size):
        raise ValueError(
          f"input image size {pixels} differs from the model's "
          f"{tuple(self.image_size)}; set interpolate_pos_encoding=True to "
          "resize the position embeddings"
        )
      return pos
    if grid == self.grid and pixels[0] == pixels[1]:
      return pos
    d = pos.shape[-1]
    patch = pos[0, 1:].reshape(*self.grid, d)
    f32 = (
      self.pos_interp_float32
      if self.pos_interp_float32 is not None
      else self.variant.startswith("dinov2")
    )
    src_dtype = patch.dtype
    if f32:
      patch = patch.astype(jnp.float32)
    patch = resize_bicubic(patch, grid, antialias=self.variant == "dinov2_registers")
    patch = patch.astype(src_dtype).reshape(1, grid[0] * grid[1], d)
    return jnp.concatenate([pos[:, :1], patch], axis=1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d, p = self.hidden_size, self.patch_size
    y = nn.Conv(
      d,
      (p, p),
      strides=(p, p),
      padding="VALID",
      use_bias=self.variant != "clip",
      precision=self.precision,
      kernel_init=_INIT,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="patch_embed",
    )(x)
    n, gh, gw, _ = y.shape
    y = y.reshape(n, gh * gw, d)
    cls = self.param("cls_token", _INIT, (1, 1, d), self.param_dtype)
    pos = self.param("pos_embed", _INIT, (1, 1 + self.grid[0] * self.grid[1], d), self.param_dtype)
    pos = self._position_embeddings(pos, (gh, gw), (x.shape[1], x.shape[2]))
    tokens = jnp.concatenate([jnp.broadcast_to(cls.astype(y.dtype), (n, 1, d)), y], axis=1)
    tokens = tokens + pos.astype(y.dtype)
    r = self.num_register_tokens
    if r:
      reg = self.param("reg_tokens", nn.initializers.zeros, (1, r, d), self.param_dtype)
      tokens = jnp.concatenate(
        [tokens[:, :1], jnp.broadcast_to(reg.astype(y.dtype), (n, r, d)), tokens[:, 1:]], axis=1
      )
    return tokens


class VisionTransformer(nn.Module):
  """ViT / DINOv2 / CLIP vision tower (see the module docstring for the outputs).

  ``x: [n, h, w, num_channels] -> {"features": [n, out_features], "pooled", "tokens":
  [n, 1 + R + P, hidden_size], "block_<i>", ...}`` with ``P = (h // p) * (w // p)``.

  Attributes:
    variant: ``"vit"``, ``"dinov2"``, ``"dinov2_registers"`` or ``"clip"``.
    image_size: the pretraining image size (int or ``(h, w)``); sets the position-
      embedding grid ``image_size // patch_size``.
    patch_size: square patch side ``p``.
    num_channels: input channels.
    hidden_size: width ``d``; ``num_heads`` must divide it.
    num_layers: number of blocks ``L``.
    num_heads: attention heads.
    mlp_dim: MLP hidden width (for SwiGLU: the width of ``gate`` / ``up``).
    hidden_act: MLP activation, a key of :data:`ACTIVATIONS`.
    layer_norm_eps: LayerNorm epsilon.
    qkv_bias: biases on query / key / value.
    layerscale_value: DINOv2's layer-scale initial value (ignored for ViT / CLIP).
    swiglu: DINOv2's SwiGLU MLP (``use_swiglu_ffn``).
    num_register_tokens: registers ``R`` (``"dinov2_registers"`` only).
    projection_dim: CLIP's ``visual_projection`` width; ``None``: no projection.
    pooler_dim: ViT's ``pooler`` (dense + tanh on the CLS) width; ``None``: none.
    pool: ``"cls"`` (the CLS token), ``"mean"`` (mean of the patch tokens) or
      ``"cls+mean"`` (their concatenation, DINOv2's linear-evaluation feature, ``[n, 2d]``);
      CLIP supports ``"cls"`` only.
    interpolate_pos_encoding: ViT / CLIP: resize the position embeddings for another
      image size (``transformers``' argument of the same name); without it such an image
      is an error. DINOv2 always resizes.
    pos_interp_float32: resize in float32 whatever the parameter dtype (``None``: as
      ``transformers`` -- True for DINOv2, False for ViT / CLIP).
    dropout_rate: dropout on the embeddings and on each residual branch.
    attention_dropout: dropout on the attention probabilities.
    drop_path_rate: stochastic depth on each residual branch (same rate in every block,
      as ``transformers``' DINOv2).
    return_blocks: block indices (negative from the end) whose outputs are returned as
      ``"block_<i>"`` (``i`` normalized to ``0 .. L-1``).
    lora_rank: rank of LoRA adapters on the layers matched by ``lora_targets``; 0: none.
    lora_alpha: LoRA scaling numerator (update ``alpha / rank``); ``None``: ``lora_rank``.
    lora_targets: regex fullmatched against ``"blocks_<i>/attn/query"``-style paths.
    dtype: computation dtype (e.g. ``jnp.bfloat16``); ``None``: from inputs / params.
    param_dtype: parameter dtype (float32; float64 for x64 parity checks).
    precision: matmul precision (``jax.lax.Precision``).
  """

  variant: str = "vit"
  image_size: int | tuple[int, int] = 224
  patch_size: int = 16
  num_channels: int = 3
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  qkv_bias: bool = True
  layerscale_value: float = 1.0
  swiglu: bool = False
  num_register_tokens: int = 0
  projection_dim: int | None = None
  pooler_dim: int | None = None
  pool: str = "cls"
  interpolate_pos_encoding: bool = False
  pos_interp_float32: bool | None = None
  dropout_rate: float = 0.0
  attention_dropout: float = 0.0
  drop_path_rate: float = 0.0
  return_blocks: tuple[int, ...] = ()
  lora_rank: int = 0
  lora_alpha: float | None = None
  lora_targets: str = r"blocks_\d+/attn/(query|value)"
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  # ------------------------------------------------------------------ static helpers

  @property
  def grid(self) -> tuple[int, int]:
    """The position-embedding grid ``(image_h // p, image_w // p)``."""
    h, w = _pair(self.image_size, "image_size")
    return h // self.patch_size, w // self.patch_size

  @property
  def out_features(self) -> int:
    """Width of ``"features"``."""
    if self.variant == "clip" and self.projection_dim is not None:
      return self.projection_dim
    return 2 * self.hidden_size if self.pool == "cls+mean" else self.hidden_size

  @property
  def stages(self) -> tuple[str, ...]:
    """Stage regexes in forward order (embeddings, then each block), for
    :func:`dtl_jax.params.freeze_first_k`."""
    return (EMBEDDING_PARAMS,) + tuple(f"blocks_{i}" for i in range(self.num_layers))

  def dense_paths(self) -> list[str]:
    """Paths of the dense layers inside the blocks (what ``lora_targets`` matches)."""
    mlp = ("gate", "up", "down") if self.swiglu else ("fc1", "fc2")
    return [
      f"blocks_{i}/{name}"
      for i in range(self.num_layers)
      for name in tuple(f"attn/{a}" for a in ("query", "key", "value", "out"))
      + tuple(f"mlp/{m}" for m in mlp)
    ]

  def lora_paths(self) -> list[str]:
    """The dense-layer paths that get adapters (empty when ``lora_rank == 0``)."""
    if self.lora_rank == 0:
      return []
    try:
      rx = re.compile(self.lora_targets)
    except re.error as e:
      raise ValueError(f"lora_targets: invalid regex {self.lora_targets!r}: {e}") from e
    return [p for p in self.dense_paths() if rx.fullmatch(p)]

  def block_indices(self) -> tuple[int, ...]:
    """``return_blocks`` normalized to ``0 .. num_layers - 1``."""
    out = []
    for i in self.return_blocks:
      if not -self.num_layers <= int(i) < self.num_layers:
        raise ValueError(f"return_blocks: index {i} out of range for {self.num_layers} blocks")
      out.append(int(i) % self.num_layers)
    return tuple(out)

  def check(self) -> None:
    """Validates the attributes (called by ``__call__``); raises ValueError."""
    v = self.variant
    if v not in VARIANTS:
      raise ValueError(f"variant must be one of {VARIANTS}, got {v!r}")
    _pair(self.image_size, "image_size")
    for name in ("patch_size", "num_channels", "hidden_size", "num_layers", "num_heads", "mlp_dim"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
    if min(self.grid) < 1:
      raise ValueError(f"image_size {self.image_size} is smaller than patch_size {self.patch_size}")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"hidden_act must be one of {sorted(ACTIVATIONS)}, got {self.hidden_act!r}")
    if self.pool not in POOLS:
      raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
    if v == "clip" and self.pool != "cls":
      raise ValueError(f"pool={self.pool!r}: CLIP pools the CLS token only ('cls')")
    if self.projection_dim is not None and v != "clip":
      raise ValueError(f"projection_dim is CLIP's visual projection; variant is {v!r}")
    if self.pooler_dim is not None and v != "vit":
      raise ValueError(f"pooler_dim is ViT's pooler; variant is {v!r}")
    if self.num_register_tokens < 0 or (self.num_register_tokens and v != "dinov2_registers"):
      raise ValueError(
        f"num_register_tokens={self.num_register_tokens} needs variant "
        f"'dinov2_registers' and must be >= 0 (variant is {v!r})"
      )
    if self.swiglu and not v.startswith("dinov2"):
      raise ValueError(f"swiglu is a DINOv2 option; variant is {v!r}")
    for name in ("dropout_rate", "attention_dropout", "drop_path_rate"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
    self.block_indices()
    if self.lora_rank < 0:
      raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
    if self.lora_rank and not self.lora_paths():
      raise ValueError(
        f"lora_targets {self.lora_targets!r} matches no dense layer; paths "
        f"look like {self.dense_paths()[:6]}"
      )

  # ------------------------------------------------------------------ forward

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    self.check()
    if x.ndim != 4 or x.shape[-1] != self.num_channels:
      raise ValueError(f"x must be NHWC [n, h, w, {self.num_channels}], got shape {x.shape}")
    if x.shape[1] < self.patch_size or x.shape[2] < self.patch_size:
      raise ValueError(f"image {x.shape[1:3]} is smaller than one patch ({self.patch_size})")
    v, r = self.variant, self.num_register_tokens
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    tokens = Embeddings(
      v,
      _pair(self.image_size, "image_size"),
      self.patch_size,
      self.hidden_size,
      r,
      self.interpolate_pos_encoding,
      self.pos_interp_float32,
      precision=self.precision,
      name="embed",
      **kw,
    )(x)
    tokens = nn.Dropout(self.dropout_rate, deterministic=not train)(tokens)
    if v == "clip":
      tokens = _layer_norm(self.layer_norm_eps, "pre_norm", **kw)(tokens)

    lora = self.lora_paths()
    wanted = self.block_indices()
    out: dict[str, jax.Array] = {}
    for i in range(self.num_layers):
      prefix = f"blocks_{i}/"
      tokens = EncoderBlock(
        self.num_heads,
        self.mlp_dim,
        self.hidden_act,
        self.layer_norm_eps,
        self.qkv_bias,
        self.layerscale_value if v.startswith("dinov2") else None,
        self.swiglu,
        self.dropout_rate if v != "clip" else 0.0,
        self.attention_dropout,
        self.drop_path_rate,
        lora=tuple(q[len(prefix) :] for q in lora if q.startswith(prefix)),
        lora_rank=self.lora_rank,
        lora_alpha=self.lora_alpha,
        precision=self.precision,
        name=f"blocks_{i}",
        **kw,
      )(tokens, train=train)
      if i in wanted:
        out[f"block_{i}"] = tokens

    if v == "clip":
      pooled = _layer_norm(self.layer_norm_eps, "post_norm", **kw)(tokens[:, 0])
      features = pooled
      if self.projection_dim is not None:
        features = nn.Dense(
          self.projection_dim,
          use_bias=False,
          precision=self.precision,
          kernel_init=_INIT,
          name="proj",
          **kw,
        )(pooled)
    else:
      tokens = _layer_norm(self.layer_norm_eps, "norm", **kw)(tokens)
      cls_out, patches = tokens[:, 0], tokens[:, 1 + r :]
      if self.pool == "cls":
        pooled = cls_out
      elif self.pool == "mean":
        pooled = jnp.mean(patches, axis=1)
      else:
        pooled = jnp.concatenate([cls_out, jnp.mean(patches, axis=1)], axis=-1)
      features = pooled
      if self.pooler_dim is not None:
        out["pooler"] = jnp.tanh(
          nn.Dense(
            self.pooler_dim, precision=self.precision, kernel_init=_INIT, name="pooler", **kw
          )(cls_out)
        )
    out.update(features=features, pooled=pooled, tokens=tokens)
    return out


#: Regex of the embedding stage's modules (depth 0 for layer-wise lr decay, the first of
#: ``VisionTransformer.stages``).
EMBEDDING_PARAMS = "embed|pre_norm"


def _dinov2_swiglu_hidden(hidden: int, mlp_ratio: float) -> int:
  """``transformers``' ``Dinov2SwiGLUFFN`` width: 2/3 of the MLP width, rounded up to 8."""
  return (int(int(hidden * mlp_ratio) * 2 / 3) + 7) // 8 * 8


def _arch(
  variant: str, patch: int, hidden: int, depth: int, heads: int, mlp: int, **extra: Any
) -> dict[str, Any]:
  return {
    "variant": variant,
    "patch_size": patch,
    "hidden_size": hidden,
    "num_layers": depth,
    "num_heads": heads,
    "mlp_dim": mlp,
    **extra,
  }


_DINOV2_SIZES = (("s", 384, 12, 6), ("b", 768, 12, 12), ("l", 1024, 24, 16), ("g", 1536, 40, 24))
_CLIP = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}

#: Architectures of the published checkpoints (weights load through convert_vit).
VIT_PRESETS: dict[str, dict[str, Any]] = {
  # google/vit-*-patch*-224(-in21k); ViT-S/16 as timm's augreg ViT-S.
  "vit_s16": _arch("vit", 16, 384, 12, 6, 1536),
  "vit_b16": _arch("vit", 16, 768, 12, 12, 3072),
  "vit_b32": _arch("vit", 32, 768, 12, 12, 3072),
  "vit_l16": _arch("vit", 16, 1024, 24, 16, 4096),
  # facebook/dinov2-{small,base,large,giant} (image_size 518, patch 14; giant: SwiGLU).
  **{
    f"dinov2_{s}14": _arch(
      "dinov2",
      14,
      h,
      depth,
      nh,
      _dinov2_swiglu_hidden(h, 4) if s == "g" else 4 * h,
      image_size=518,
      layer_norm_eps=1e-6,
      swiglu=s == "g",
    )
    for s, h, depth, nh in _DINOV2_SIZES
  },
  # facebook/dinov2-with-registers-{small,base,large,giant} (4 registers).
  **{
    f"dinov2_reg_{s}14": _arch(
      "dinov2_registers",
      14,
      h,
      depth,
      nh,
      _dinov2_swiglu_hidden(h, 4) if s == "g" else 4 * h,
      image_size=518,
      layer_norm_eps=1e-6,
      swiglu=s == "g",
      num_register_tokens=4,
    )
    for s, h, depth, nh in _DINOV2_SIZES
  },
  # openai/clip-vit-base-patch32, -base-patch16, -large-patch14.
  "clip_b32": _arch("clip", 32, 768, 12, 12, 3072, projection_dim=512, **_CLIP),
  "clip_b16": _arch("clip", 16, 768, 12, 12, 3072, projection_dim=512, **_CLIP),
  "clip_l14": _arch("clip", 14, 1024, 24, 16, 4096, projection_dim=768, **_CLIP),
}


def vit_preset(name: str, **overrides: Any) -> VisionTransformer:
  """A :class:`VisionTransformer` with a published architecture (random weights).

  Args:
    name: a key of :data:`VIT_PRESETS` (``"vit_b16"``, ``"dinov2_s14"``,
      ``"dinov2_reg_b14"``, ``"clip_b32"``, ...).
    **overrides: module attributes to change (``dtype``, ``return_blocks``, ``lora_rank``,
      ``pool``, ...).

  Returns:
    The module; load weights with :func:`dtl_jax.models.convert_vit.load_hf_vision`.
  """
  if name not in VIT_PRESETS:
    raise ValueError(f"name must be one of {sorted(VIT_PRESETS)}, got {name!r}")
  return VisionTransformer(**{**VIT_PRESETS[name], **overrides})
