"""LoRADense against its formula, LoRA ViTs start at the base model, merging and export."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dtl_jax.models.convert_vit import load_hf_vision, to_hf_state_dict, vit_from_hf_config
from dtl_jax.models.lora import LoRADense, merge_lora
from tests.models.vit_testing import IMAGE, images, make_model, reference

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_lora_dense_formula_and_init(rng):
  layer = LoRADense(5, rank=3, alpha=6.0, param_dtype=jnp.float64)
  x = rng.standard_normal((4, 7))
  params = layer.init(jax.random.key(0), jnp.asarray(x))["params"]
  assert params["lora_a"].shape == (7, 3) and params["lora_b"].shape == (3, 5)
  np.testing.assert_array_equal(params["lora_b"], 0.0)  # starts at the base layer
  assert np.abs(params["lora_a"]).max() <= 1 / np.sqrt(7)  # kaiming_uniform(a=sqrt 5) bound
  params = {**params, "lora_b": jnp.asarray(rng.standard_normal((3, 5)))}
  w, b, a, bb = (np.asarray(params[k]) for k in ("kernel", "bias", "lora_a", "lora_b"))
  expected = x @ w + b + (6.0 / 3) * (x @ a) @ bb
  np.testing.assert_allclose(
    np.asarray(layer.apply({"params": params}, jnp.asarray(x))), expected, rtol=1e-13
  )
  merged = merge_lora({"params": params}, alpha=6.0)["params"]
  assert set(merged) == {"kernel", "bias"}
  np.testing.assert_allclose(np.asarray(merged["kernel"]), w + 2.0 * a @ bb, rtol=1e-13)


def test_lora_vit_starts_at_base_then_merges_and_exports(rng):
  torch_model, config = make_model("dinov2", seed=30)
  x = images(2, IMAGE, IMAGE, seed=31)
  xn = jnp.asarray(x.transpose(0, 2, 3, 1))
  base = vit_from_hf_config(config)
  base_vars = load_hf_vision(torch_model.state_dict(), base)
  targets = r"blocks_\d+/(attn/(query|value)|mlp/fc1)"
  lora = base.clone(lora_rank=4, lora_alpha=8.0, lora_targets=targets)
  assert lora.lora_paths() == [
    f"blocks_{i}/{n}" for i in range(2) for n in ("attn/query", "attn/value", "mlp/fc1")
  ]
  # without a key the adapters are left out of the loaded tree
  partial = load_hf_vision(torch_model.state_dict(), lora)
  assert "lora_a" not in partial["params"]["blocks_0"]["attn"]["query"]
  variables = load_hf_vision(torch_model.state_dict(), lora, lora_key=jax.random.key(1))
  q = variables["params"]["blocks_1"]["attn"]["query"]
  assert q["lora_a"].shape == (32, 4) and q["lora_b"].shape == (4, 32)
  assert "lora_a" not in variables["params"]["blocks_1"]["attn"]["key"]
  apply = jax.jit(lambda m, v: m.apply(v, xn, train=False), static_argnums=0)
  base_out = apply(base, base_vars)
  # B = 0: the adapted model equals the base model exactly
  np.testing.assert_array_equal(
    np.asarray(apply(lora, variables)["tokens"]), np.asarray(base_out["tokens"])
  )

  # "trained" adapters (random B), then merged: the base architecture reproduces them
  params = jax.tree_util.tree_map_with_path(
    lambda p, v: (
      jnp.asarray(0.05 * rng.standard_normal(v.shape), v.dtype) if str(p[-1].key) == "lora_b" else v
    ),
    variables["params"],
  )
  adapted = {"params": params}
  lora_out = apply(lora, adapted)
  assert np.abs(np.asarray(lora_out["tokens"]) - np.asarray(base_out["tokens"])).max() > 1e-2
  merged = merge_lora(adapted, alpha=8.0)
  assert jax.tree_util.tree_structure(merged["params"]) == jax.tree_util.tree_structure(
    base_vars["params"]
  )
  np.testing.assert_allclose(
    np.asarray(apply(base, merged)["tokens"]), np.asarray(lora_out["tokens"]), atol=1e-5
  )
  # and exports to transformers: the PyTorch model computes the LoRA model's output
  with pytest.raises(ValueError, match="merge_lora them first"):
    to_hf_state_dict(adapted, lora)
  exported = to_hf_state_dict(merged, base)
  torch_model.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=False)
  np.testing.assert_allclose(
    reference(torch_model, "dinov2", x)["tokens"], np.asarray(lora_out["tokens"]), atol=1e-5
  )


def test_merge_lora_float64_exact():
  torch_model, config = make_model("clip_projection", seed=32, dtype=torch.float64)
  lora = vit_from_hf_config(
    config, param_dtype=jnp.float64, lora_rank=2, lora_targets=r"blocks_1/mlp/fc2"
  )
  variables = load_hf_vision(torch_model.state_dict(), lora, lora_key=jax.random.key(2))
  variables["params"]["blocks_1"]["mlp"]["fc2"]["lora_b"] = jnp.full((2, 32), 0.3, jnp.float64)
  x = jnp.asarray(images(2, IMAGE, IMAGE, seed=33, dtype=np.float64).transpose(0, 2, 3, 1))
  apply = jax.jit(lambda m, v: m.apply(v, x, train=False)["features"], static_argnums=0)
  out = apply(lora, variables)
  merged = merge_lora(variables, alpha=2.0)  # lora_alpha None -> alpha = rank
  base_out = apply(lora.clone(lora_rank=0), merged)
  np.testing.assert_allclose(np.asarray(base_out), np.asarray(out), atol=1e-12)


def test_merge_lora_errors():
  with pytest.raises(ValueError, match="no LoRA adapter"):
    merge_lora({"params": {"dense": {"kernel": jnp.zeros((2, 3))}}}, alpha=1.0)
  with pytest.raises(
    ValueError,
    match=r"dense: shapes kernel \(2, 3\), lora_a \(2, 4\), lora_b "
    r"\(5, 3\) do not fit",
  ):
    merge_lora(
      {
        "params": {
          "dense": {
            "kernel": jnp.zeros((2, 3)),
            "lora_a": jnp.zeros((2, 4)),
            "lora_b": jnp.zeros((5, 3)),
          }
        }
      },
      alpha=1.0,
    )
  with pytest.raises(ValueError, match="rank must be >= 1"):
    LoRADense(3, rank=0, alpha=1.0).init(jax.random.key(0), jnp.zeros((1, 2)))
