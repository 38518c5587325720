"""Flax ViT / DINOv2 / CLIP after conversion == ``transformers``' PyTorch models.

The PyTorch side is ``transformers`` itself (``ViTModel``, ``Dinov2Model``,
``Dinov2WithRegistersModel``, ``CLIPVisionModel(WithProjection)``, ``CLIPModel``) built
from tiny configs with random weights (tests/models/vit_testing.py), saved as
``.safetensors`` (``save_pretrained``: config.json + model.safetensors) or ``.bin``, and
converted. Float32 agrees to 1e-5, float64 (``torch .double()`` vs JAX x64) to 1e-10.

``transformers``' eager attention computes its softmax in float32 even for float64
inputs, so the models run with their default SDPA attention (float64 throughout).
DINOv2 resizes its position embeddings in float32 whatever the dtype (``transformers``
casts them); the float64 comparison at another image size therefore runs both sides
with a float64 resize (``pos_interp_float32=False`` here, the same ``transformers`` code
without the cast there), and the default float32 round trip is checked to agree to float32
rounding.
"""

import json
import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as T
from safetensors.torch import save_file

from dtl_jax.models import StateDictMismatchError
from dtl_jax.models.convert_vit import (
  detect_hf_family,
  load_hf_clip_vision,
  load_hf_dinov2,
  load_hf_pretrained,
  load_hf_vision,
  load_hf_vit,
  read_hf_state_dict,
  to_hf_state_dict,
  vit_from_hf_config,
)
from dtl_jax.models.vit import VisionTransformer
from tests.models.vit_testing import CASES, IMAGE, images, make_model, reference

pytestmark = pytest.mark.usefixtures("fast_compile")

LOADERS = {
  "vit": load_hf_vit,
  "dinov2": load_hf_dinov2,
  "dinov2_swiglu": load_hf_dinov2,
  "dinov2_registers": load_hf_dinov2,
  "clip": load_hf_clip_vision,
  "clip_projection": load_hf_clip_vision,
}


@pytest.fixture(scope="module", autouse=True)
def _torch_threads():
  old = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(old)


def _apply(model, variables, x_nchw):
  return jax.jit(lambda v, x: model.apply(v, x, train=False))(
    variables, jnp.asarray(x_nchw.transpose(0, 2, 3, 1))
  )


def _compare(out, ref, atol, keys=None):
  for k in keys or ref:
    got = np.asarray(out[k])
    assert got.shape == ref[k].shape, k
    assert np.abs(ref[k]).max() > 0.1, k  # a non-degenerate comparison
    np.testing.assert_allclose(got, ref[k], atol=atol, rtol=0, err_msg=k)


# Each variant through one of the two routes (a checkpoint folder with config.json and
# model.safetensors via load_hf_pretrained; a .bin via the variant's loader).
@pytest.mark.parametrize(
  "case,fmt",
  [
    ("vit", "folder"),
    ("vit", "bin"),
    ("dinov2", "bin"),
    ("dinov2_swiglu", "folder"),
    ("dinov2_registers", "bin"),
    ("clip", "folder"),
    ("clip_projection", "bin"),
  ],
)
def test_float32_parity(case, fmt, tmp_path):
  torch_model, config = make_model(case, seed=1)
  x = images(2, IMAGE, IMAGE, seed=2)
  ref = reference(torch_model, case, x)
  extra = {"pooler_dim": 32} if case == "vit" else {}
  if fmt == "folder":  # what a user copies from the hub: config.json + model.safetensors
    torch_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    model, variables = load_hf_pretrained(tmp_path, return_blocks=(0, -1), **extra)
  else:
    torch.save(torch_model.state_dict(), tmp_path / "pytorch_model.bin")
    model = vit_from_hf_config(config, return_blocks=(0, 1), **extra)
    variables = LOADERS[case](tmp_path / "pytorch_model.bin", model)
  out = _apply(model, variables, x)
  assert out["features"].dtype == jnp.float32
  assert set(out) >= set(ref)
  _compare(out, ref, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_float64_parity(case, tmp_path):
  torch_model, config = make_model(case, seed=3, dtype=torch.float64)
  save_file(torch_model.state_dict(), str(tmp_path / "model.safetensors"))
  x = images(2, IMAGE, IMAGE, seed=4, dtype=np.float64)
  ref = reference(torch_model, case, x)
  model = vit_from_hf_config(config, param_dtype=jnp.float64, return_blocks=(0, 1))
  variables = load_hf_vision(tmp_path / "model.safetensors", model)
  out = _apply(model, variables, x)
  assert out["tokens"].dtype == jnp.float64
  ref.pop("pooler", None)  # ViT's pooler weights are skipped without pooler_dim
  assert "pooler" not in out
  _compare(out, ref, atol=1e-10)


def _float64_resize(self, embeddings, height, width):
  """``Dinov2(WithRegisters)Embeddings.interpolate_pos_encoding`` without the float32 cast."""
  pos = self.position_embeddings
  n = round((pos.shape[1] - 1) ** 0.5)
  grid = pos[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
  ph, pw = self.patch_embeddings.patch_size
  grid = torch.nn.functional.interpolate(
    grid,
    size=(height // ph, width // pw),
    mode="bicubic",
    align_corners=False,
    antialias=isinstance(
      self,
      T.models.dinov2_with_registers.modeling_dinov2_with_registers.Dinov2WithRegistersEmbeddings,
    ),
  )
  grid = grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
  return torch.cat([pos[:, :1], grid], dim=1)


# Up (non-square) for DINOv2, down for the registers variant (its antialiased kernel widens
# when downsampling); tests/models/test_interpolate.py checks the resize on more sizes.
@pytest.mark.parametrize(
  "case,size",
  [("dinov2", (48, 40)), ("dinov2_registers", (24, 24)), ("dinov2_registers", (48, 40))],
)
def test_dinov2_other_image_sizes(case, size):
  torch_model, config = make_model(case, seed=5)
  x = images(2, *size, seed=6)
  model = vit_from_hf_config(config, return_blocks=(0, 1))
  variables = load_hf_vision(torch_model.state_dict(), model)
  out = _apply(model, variables, x)
  ref = reference(torch_model, case, x)
  assert out["tokens"].shape[1] == 1 + (3 if "registers" in case else 0) + (size[0] // 8) * (
    size[1] // 8
  )
  _compare(out, ref, atol=1e-5)

  # float64: transformers resizes in float32 even here; with that round trip both sides
  # agree to the float32 tolerance (the resized embeddings carry float32 rounding), with a
  # float64 resize on both sides to 1e-10.
  torch64 = torch_model.double()
  x64 = x.astype(np.float64)
  ref64 = reference(torch64, case, x64)
  model64 = model.clone(param_dtype=jnp.float64)
  v64 = load_hf_vision(torch64.state_dict(), model64)
  out64 = _apply(model64, v64, x64)
  _compare(out64, ref64, atol=1e-5)
  emb = torch64.embeddings
  emb.interpolate_pos_encoding = types.MethodType(_float64_resize, emb)
  ref64 = reference(torch64, case, x64)
  model64 = model64.clone(pos_interp_float32=False)
  _compare(_apply(model64, v64, x64), ref64, atol=1e-10)


@pytest.mark.parametrize(
  "case,dtype", [("vit", np.float32), ("vit", np.float64), ("clip_projection", np.float64)]
)
def test_vit_clip_interpolate_pos_encoding(case, dtype):
  torch_model, config = make_model(
    case, seed=7, dtype=torch.float32 if dtype == np.float32 else torch.float64
  )
  x = images(2, 48, 40, seed=8, dtype=dtype)
  ref = reference(torch_model, case, x, interpolate_pos_encoding=True)
  pdt = jnp.float32 if dtype == np.float32 else jnp.float64
  model = vit_from_hf_config(
    config,
    param_dtype=pdt,
    return_blocks=(0, 1),
    pooler_dim=(32 if case == "vit" else None),
    interpolate_pos_encoding=True,
  )
  variables = load_hf_vision(torch_model.state_dict(), model)
  _compare(_apply(model, variables, x), ref, atol=1e-5 if dtype == np.float32 else 1e-10)
  with pytest.raises(
    ValueError,
    match=r"input image size \(48, 40\) differs from the model's "
    r"\(32, 32\); set interpolate_pos_encoding=True",
  ):
    model.clone(interpolate_pos_encoding=False).apply(
      variables, jnp.zeros((1, 48, 40, 3), pdt), train=False
    )


def test_dinov2_pooling_options():
  torch_model, config = make_model("dinov2_registers", seed=9)
  x = images(2, IMAGE, IMAGE, seed=10)
  last = reference(torch_model, "dinov2_registers", x)["tokens"]
  model = vit_from_hf_config(config, pool="cls+mean")
  variables = load_hf_vision(torch_model.state_dict(), model)
  out = _apply(model, variables, x)
  # Dinov2ForImageClassification's linear-evaluation input: [CLS, mean of patch tokens]
  # (registers excluded).
  expected = np.concatenate([last[:, 0], last[:, 4:].mean(axis=1)], axis=1)
  assert model.out_features == 64 and out["features"].shape == (2, 64)
  np.testing.assert_allclose(np.asarray(out["features"]), expected, atol=1e-5)
  out = _apply(model.clone(pool="mean"), variables, x)
  np.testing.assert_allclose(np.asarray(out["features"]), last[:, 4:].mean(axis=1), atol=1e-5)


# ---------------------------------------------------------------------- published layouts


def _vit_legacy(sd):
  """transformers >= 5 ViT names -> the names in google/vit-* checkpoints."""
  out = {}
  for k, v in sd.items():
    k = re.sub(
      r"(^|\.)layers\.(\d+)\.attention\.q_proj\.",
      r"\1encoder.layer.\2.attention."
      r"attention.query.",
      k,
    )
    k = re.sub(
      r"(^|\.)layers\.(\d+)\.attention\.k_proj\.",
      r"\1encoder.layer.\2.attention."
      r"attention.key.",
      k,
    )
    k = re.sub(
      r"(^|\.)layers\.(\d+)\.attention\.v_proj\.",
      r"\1encoder.layer.\2.attention."
      r"attention.value.",
      k,
    )
    k = re.sub(
      r"(^|\.)layers\.(\d+)\.attention\.o_proj\.",
      r"\1encoder.layer.\2.attention."
      r"output.dense.",
      k,
    )
    k = re.sub(r"(^|\.)layers\.(\d+)\.mlp\.fc1\.", r"\1encoder.layer.\2.intermediate.dense.", k)
    k = re.sub(r"(^|\.)layers\.(\d+)\.mlp\.fc2\.", r"\1encoder.layer.\2.output.dense.", k)
    k = re.sub(r"(^|\.)layers\.(\d+)\.", r"\1encoder.layer.\2.", k)
    out[k] = v
  return out


def _dinov2_legacy(sd):
  """transformers >= 5 DINOv2 names -> facebook/dinov2-* names (SwiGLU: weights_in/out)."""
  out = {}
  for k, v in sd.items():
    k = re.sub(
      r"attention\.(q|k|v)_proj\.",
      lambda m: "attention.attention." + {"q": "query", "k": "key", "v": "value"}[m.group(1)] + ".",
      k,
    )
    k = k.replace("attention.o_proj.", "attention.output.dense.")
    k = k.replace("mlp.down_proj.", "mlp.weights_out.")
    m = re.match(r"(.*mlp\.)gate_proj\.(weight|bias)$", k)
    if m:
      out[f"{m.group(1)}weights_in.{m.group(2)}"] = torch.cat(
        [v, sd[k.replace("gate_proj", "up_proj")]], dim=0
      )
      continue
    if "mlp.up_proj." in k:
      continue
    out[k] = v
  return out


def _save_folder(path, config, sd):
  path.mkdir()
  (path / "config.json").write_text(json.dumps(config))
  save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"))


def test_published_vit_layout_with_classifier(tmp_path):
  """A ViTForImageClassification checkpoint in google/vit-*'s key layout."""
  _, cfg = make_model("vit")
  cfg.update(
    architectures=["ViTForImageClassification"],
    num_labels=3,
    id2label={str(i): str(i) for i in range(3)},
    label2id={str(i): i for i in range(3)},
  )
  config = T.ViTConfig.from_dict(cfg)
  torch_model = T.ViTForImageClassification(config).eval()
  from tests.models.vit_testing import randomize

  randomize(torch_model, 11)
  sd = _vit_legacy(torch_model.state_dict())
  assert "vit.encoder.layer.1.attention.attention.query.weight" in sd
  assert "vit.encoder.layer.0.intermediate.dense.weight" in sd and "classifier.weight" in sd
  _save_folder(tmp_path / "ckpt", config.to_dict(), sd)
  # transformers reads these names back without a missing or unexpected key ...
  reloaded, info = T.ViTForImageClassification.from_pretrained(
    tmp_path / "ckpt", output_loading_info=True
  )
  assert not info["missing_keys"] and not info["unexpected_keys"]
  x = images(2, IMAGE, IMAGE, seed=12)
  with torch.no_grad():
    expected = torch_model.vit(torch.from_numpy(x)).last_hidden_state.numpy()
    np.testing.assert_array_equal(
      reloaded.vit(torch.from_numpy(x)).last_hidden_state.numpy(), expected
    )
  # ... and so does the converter (prefix "vit." stripped, classifier skipped).
  model, variables = load_hf_pretrained(tmp_path / "ckpt")
  np.testing.assert_allclose(np.asarray(_apply(model, variables, x)["tokens"]), expected, atol=1e-5)


def test_published_dinov2_swiglu_layout(tmp_path):
  torch_model, config = make_model("dinov2_swiglu", seed=13)
  sd = _dinov2_legacy(torch_model.state_dict())
  assert "encoder.layer.0.mlp.weights_in.weight" in sd
  assert "encoder.layer.1.attention.attention.value.bias" in sd
  _save_folder(tmp_path / "ckpt", config, sd)
  reloaded, info = T.Dinov2Model.from_pretrained(tmp_path / "ckpt", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  x = images(2, IMAGE, IMAGE, seed=14)
  ref = reference(torch_model, "dinov2_swiglu", x)
  np.testing.assert_array_equal(reference(reloaded, "dinov2_swiglu", x)["tokens"], ref["tokens"])
  model, variables = load_hf_pretrained(tmp_path / "ckpt")
  _compare(_apply(model, variables, x), ref, atol=1e-5, keys=("tokens", "features"))


def test_full_clip_checkpoint_loads_the_vision_tower(tmp_path):
  """openai/clip-vit-*: a CLIPModel checkpoint (text tower, logit_scale, projections)."""
  from tests.models.vit_testing import HEADS, HIDDEN, LAYERS, PATCH, randomize

  config = T.CLIPConfig(
    text_config={
      "hidden_size": 24,
      "intermediate_size": 48,
      "num_hidden_layers": 1,
      "num_attention_heads": 2,
      "vocab_size": 50,
      "max_position_embeddings": 9,
    },
    vision_config={
      "hidden_size": HIDDEN,
      "intermediate_size": 64,
      "num_hidden_layers": LAYERS,
      "num_attention_heads": HEADS,
      "image_size": IMAGE,
      "patch_size": PATCH,
    },
    projection_dim=12,
  )
  torch_model = randomize(T.CLIPModel(config), 15)
  sd = torch_model.state_dict()
  assert "text_model.embeddings.token_embedding.weight" in sd and "logit_scale" in sd
  assert detect_hf_family(sd) == "clip"
  torch_model.save_pretrained(tmp_path)
  model, variables = load_hf_pretrained(tmp_path)
  assert (
    model.variant == "clip" and model.projection_dim == 12 and model.hidden_act == ("quick_gelu")
  )
  x = images(2, IMAGE, IMAGE, seed=16)
  with torch.no_grad():
    expected = torch_model.get_image_features(torch.from_numpy(x)).pooler_output.numpy()
  np.testing.assert_allclose(
    np.asarray(_apply(model, variables, x)["features"]), expected, atol=1e-5
  )


# ---------------------------------------------------------------------- export, errors


@pytest.mark.parametrize("case", ["vit", "dinov2_registers", "clip"])
def test_export_round_trip_into_transformers(case):
  torch_model, config = make_model(case, seed=17)
  model = vit_from_hf_config(config)
  variables = load_hf_vision(torch_model.state_dict(), model)
  exported = to_hf_state_dict(variables, model)
  fresh = make_model(case, seed=18)[0]  # other weights
  result = fresh.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=False)
  assert not result.unexpected_keys
  # what the Flax model does not hold: ViT's pooler, DINOv2's unused mask token
  assert set(result.missing_keys) <= {
    "pooler.dense.weight",
    "pooler.dense.bias",
    "embeddings.mask_token",
  }
  x = images(2, IMAGE, IMAGE, seed=19)
  np.testing.assert_array_equal(
    reference(fresh, case, x)["tokens"], reference(torch_model, case, x)["tokens"]
  )


def test_mismatch_errors_list_keys(tmp_path):
  torch_model, config = make_model("dinov2", seed=20)
  model = vit_from_hf_config(config)
  sd = dict(torch_model.state_dict())
  del sd["encoder.layer.1.layer_scale2.lambda1"]
  sd["encoder.layer.0.extra.weight"] = torch.zeros(3)
  sd["encoder.layer.0.mlp.fc1.weight"] = torch.zeros(48, 32)
  with pytest.raises(StateDictMismatchError) as err:
    load_hf_dinov2(sd, model)
  msg = str(err.value)
  assert "missing keys (1):\n    encoder.layer.1.layer_scale2.lambda1 (expected shape (32,))" in msg
  assert "unexpected keys (1):\n    encoder.layer.0.extra.weight" in msg
  assert (
    "mis-shaped keys (1):\n    encoder.layer.0.mlp.fc1.weight: state dict (48, 32), "
    "model expects (64, 32)"
  ) in msg
  # a checkpoint of another family, and a loader for another family
  vit_sd = make_model("vit")[0].state_dict()
  with pytest.raises(
    ValueError,
    match=r"state dict is a ViT \(google/vit-\*\) checkpoint but "
    r"the model is DINOv2",
  ):
    load_hf_vision(vit_sd, model)
  with pytest.raises(
    ValueError,
    match=r"this loader takes ViT \(google/vit-\*\) models; "
    r"model.variant is 'dinov2'",
  ):
    load_hf_vit(sd, model)
  # registers missing from a plain DINOv2 checkpoint loaded into the registers variant
  reg = vit_from_hf_config(
    {**config, "model_type": "dinov2_with_registers", "num_register_tokens": 2}
  )
  with pytest.raises(
    StateDictMismatchError,
    match=r"embeddings.register_tokens \(expected "
    r"shape \(1, 2, 32\)\)",
  ):
    load_hf_dinov2(torch_model.state_dict(), reg)
  (tmp_path / "w.txt").write_text("x")
  with pytest.raises(ValueError, match="unsupported file type"):
    read_hf_state_dict(tmp_path / "w.txt")
  with pytest.raises(ValueError, match="has no model.safetensors"):
    read_hf_state_dict(tmp_path)


def test_config_and_module_validation():
  with pytest.raises(ValueError, match=r"model_type must be one of .* got 'bert'"):
    vit_from_hf_config({"model_type": "bert"})
  with pytest.raises(ValueError, match=r"overrides: unknown attribute\(s\) \['lora_rnk'\]"):
    vit_from_hf_config({"model_type": "vit"}, lora_rnk=4)
  x = jnp.zeros((1, 32, 32, 3), jnp.float32)
  small = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "mlp_dim": 64,
  }
  bad = [
    ({"num_heads": 5}, r"num_heads \(5\) must divide hidden_size \(32\)"),
    ({"variant": "vit", "num_register_tokens": 2}, "needs variant 'dinov2_registers'"),
    ({"variant": "clip", "pool": "mean"}, "CLIP pools the CLS token only"),
    ({"return_blocks": (2,)}, "return_blocks: index 2 out of range for 2 blocks"),
    ({"lora_rank": 2, "lora_targets": "blocks_0/attn/qkv"}, "matches no dense layer"),
    ({"hidden_act": "tanh"}, "hidden_act must be one of"),
    ({"variant": "vit", "swiglu": True}, "swiglu is a DINOv2 option"),
  ]
  for kw, msg in bad:
    with pytest.raises(ValueError, match=msg):
      VisionTransformer(**{**small, **kw}).init(jax.random.key(0), x, train=False)
  with pytest.raises(
    ValueError,
    match=r"x must be NHWC \[n, h, w, 3\], got shape \(1, 3, 32, "
    r"32\)",
  ):
    VisionTransformer(**small).init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)), train=False)


# ---------------------------------------------------------------------- bf16

# bfloat16 keeps 8 significant bits: each rounding of an activation or of a matmul input is
# off by up to 2^-9 ~ 2e-3 relative. Through the patch embedding, two blocks (four
# projections, attention, MLP, two LayerNorms each) and the final norm these add up to about
# 1e-2 of the output's largest magnitude: measured 0.4 - 1.2 % on these tiny models (3 seeds
# x the 3 variants below). The asserted bound, 3e-2 relative to the float32 output's largest
# magnitude, leaves 2.5x headroom. Parameters stay float32; LayerNorm statistics and the
# softmax are computed in float32.
BF16_RTOL = 3e-2


@pytest.mark.parametrize("case", ["vit", "dinov2_registers", "clip_projection"])
def test_bf16_compute_close_to_float32(case):
  torch_model, config = make_model(case, seed=21)
  x = images(4, IMAGE, IMAGE, seed=22)
  model = vit_from_hf_config(config)
  variables = load_hf_vision(torch_model.state_dict(), model)
  ref = _apply(model, variables, x)
  bf16 = model.clone(dtype=jnp.bfloat16)
  out = _apply(bf16, variables, x)
  assert jax.tree_util.tree_leaves(variables)[0].dtype == jnp.float32
  for k in ("features", "tokens"):
    assert out[k].dtype == jnp.bfloat16
    a, b = np.asarray(out[k], np.float32), np.asarray(ref[k])
    err = np.abs(a - b).max() / np.abs(b).max()
    assert err < BF16_RTOL, (k, err)
    assert err > 1e-4, (k, err)  # it did compute in bfloat16


def test_sharded_and_bfloat16_checkpoints(tmp_path):
  torch_model, _ = make_model("dinov2_registers", seed=23)
  torch_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
  assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
  model, variables = load_hf_pretrained(tmp_path / "sharded")
  x = images(2, IMAGE, IMAGE, seed=24)
  _compare(
    _apply(model, variables, x),
    reference(torch_model, "dinov2_registers", x),
    atol=1e-5,
    keys=("tokens", "features"),
  )
  # bfloat16 tensors (safetensors.numpy cannot read them) arrive as float32, same values
  bf16 = {k: v.to(torch.bfloat16) for k, v in torch_model.state_dict().items()}
  save_file(bf16, str(tmp_path / "bf16.safetensors"))
  read = read_hf_state_dict(tmp_path / "bf16.safetensors")
  assert set(read) == set(bf16)
  for k, v in bf16.items():
    assert read[k].dtype == np.float32
    np.testing.assert_array_equal(read[k], v.float().numpy(), err_msg=k)


def test_train_mode_dropout_and_drop_path():
  small = {
    "image_size": 16,
    "patch_size": 8,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "mlp_dim": 64,
    "variant": "dinov2",
  }
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 16, 16, 3)), jnp.float32)
  model = VisionTransformer(**small)
  v = model.init(jax.random.key(0), x, train=False)
  eval_out = model.apply(v, x, train=False)["tokens"]
  # zero rates: train mode computes the same function (no rng needed)
  np.testing.assert_array_equal(
    np.asarray(model.apply(v, x, train=True)["tokens"]), np.asarray(eval_out)
  )
  noisy = model.clone(drop_path_rate=0.5, dropout_rate=0.1, attention_dropout=0.1)
  a = noisy.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})["tokens"]
  b = noisy.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})["tokens"]
  c = noisy.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})["tokens"]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same key, same output
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
  np.testing.assert_array_equal(
    np.asarray(noisy.apply(v, x, train=False)["tokens"]), np.asarray(eval_out)
  )
  # stochastic depth alone: each example's residual branch is dropped or scaled by 1/keep
  from dtl_jax.models.vit import _drop_path

  class DropPath(nn.Module):
    @nn.compact
    def __call__(self, h):
      return _drop_path(self, h, 0.3, True)

  ones = jnp.ones((4000, 3), jnp.float32)
  out = np.asarray(DropPath().apply({}, ones, rngs={"dropout": jax.random.key(3)}))
  kept = out[:, 0] != 0
  np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
  assert (out[~kept] == 0).all() and (out == out[:, :1]).all()
  assert abs(kept.mean() - 0.7) < 0.03  # binomial sd 0.007
