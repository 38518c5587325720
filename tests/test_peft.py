"""LoRA / layer-wise lr decay / probe / fine-tune recipes for ViTs through optax partitions."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dtl_jax import params as P
from dtl_jax import peft
from dtl_jax.models.vit import VisionTransformer

pytestmark = pytest.mark.usefixtures("fast_compile")

D, L, C = 32, 3, 5
TINY = {
  "image_size": 16,
  "patch_size": 8,
  "hidden_size": D,
  "num_layers": L,
  "num_heads": 4,
  "mlp_dim": 64,
}


class Classifier(nn.Module):
  """A ViT backbone and a linear head, paths "backbone/..." and "head/..."."""

  backbone: nn.Module

  @nn.compact
  def __call__(self, x, *, train):
    return nn.Dense(C, name="head")(self.backbone(x, train=train)["features"])


def _init(model):
  x = jnp.zeros((1, 16, 16, 3), jnp.float32)
  return jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(0))["params"]


def _flat(tree):
  return {P.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _train(model, params, tx, steps, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((6, 16, 16, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, C, 6))

  def loss_fn(p):
    logits = model.apply({"params": p}, x, train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(p, s):
    g = jax.grad(loss_fn)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  state = tx.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


@pytest.mark.parametrize("rank", [1, 4])
def test_lora_trains_exactly_the_adapters_and_head(rank):
  backbone = VisionTransformer(**TINY, lora_rank=rank)  # default targets: query and value
  model = Classifier(backbone)
  params = _init(model)
  recipe = peft.lora_recipe()
  labels = P.label_params(params, recipe.rules)
  tx = recipe.optimizer(kind="adam", learning_rate=1e-2, weight_decay=0.1)
  new, opt_state = _train(model, params, tx, steps=3)

  before, after, lab = _flat(params), _flat(new), _flat(labels)
  trainable = {k for k, v in lab.items() if v != P.FROZEN}
  # closed form: rank r adapters on query and value, [d, r] + [r, d] each, in L blocks,
  # plus the head's [d, C] kernel and [C] bias
  expected = L * 2 * rank * (D + D) + D * C + C
  assert sum(before[k].size for k in trainable) == expected
  assert trainable == (
    {
      f"backbone/blocks_{i}/attn/{q}/lora_{ab}"
      for i in range(L)
      for q in ("query", "value")
      for ab in "ab"
    }
    | {"head/kernel", "head/bias"}
  )
  for k in before:
    if k in trainable:  # every trainable entry moved (lora_a from step 2, once B != 0)
      assert np.all(np.asarray(after[k]) != np.asarray(before[k])), k
    else:  # frozen leaves are bit-identical
      np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(before[k]), err_msg=k)
  # frozen leaves hold no optimizer state: AdamW's two moments cover the trainable ones only
  moments = sum(
    leaf.size
    for leaf in jax.tree_util.tree_leaves(opt_state)
    if jnp.issubdtype(leaf.dtype, jnp.floating)
  )
  assert moments == 2 * expected


def _depth(path: str) -> int | None:
  """Independent reading of BEiT/MAE's get_layer_id_for_vit on our parameter names."""
  if not path.startswith("backbone/"):
    return None
  name = path.split("/")[1]
  m = re.fullmatch(r"blocks_(\d+)", name)
  if m:
    return int(m.group(1)) + 1
  if name in ("embed", "pre_norm"):
    return 0
  return L + 1


@pytest.mark.parametrize("variant", ["vit", "dinov2_registers", "clip"])
def test_layerwise_lr_decay_multipliers_closed_form(variant):
  extra = {"num_register_tokens": 2} if variant == "dinov2_registers" else {}
  if variant == "clip":
    extra = {"projection_dim": 8}
  model = Classifier(VisionTransformer(**TINY, variant=variant, **extra))
  params = _init(model)
  params = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), params)
  decay, base, lr = 0.6, 0.5, 0.1
  recipe = peft.layerwise_lr_decay(L, decay=decay, base_multiplier=base, head_multiplier=2.0)
  labels = _flat(P.label_params(params, recipe.rules))
  for path, label in labels.items():
    k = _depth(path)
    assert label == ("head" if k is None else f"layer_{k}"), path
  for k in range(L + 2):
    assert recipe.multipliers[f"layer_{k}"] == pytest.approx(base * decay ** (L + 1 - k), rel=1e-15)
  # through make_optimizer: plain SGD update = -lr * multiplier * gradient, per leaf
  tx = recipe.optimizer(learning_rate=lr)
  grads = jax.tree_util.tree_map(
    lambda v: jnp.asarray(np.random.default_rng(v.size).standard_normal(v.shape)), params
  )
  updates, _ = tx.update(grads, tx.init(params), params)
  g, u = _flat(grads), _flat(updates)
  seen = set()
  for path in g:
    k = _depth(path)
    mult = 2.0 if k is None else base * decay ** (L + 1 - k)
    np.testing.assert_allclose(
      np.asarray(u[path]), -lr * mult * np.asarray(g[path]), rtol=1e-14, err_msg=path
    )
    seen.add(k)
  assert seen == set(range(L + 2)) | {None}  # every depth is present


def test_linear_probe_and_finetune_recipes():
  model = Classifier(VisionTransformer(**TINY, variant="dinov2"))
  params = _init(model)
  probe = peft.vit_linear_probe()
  assert probe == P.linear_probe()
  new, _ = _train(model, params, probe.optimizer(learning_rate=0.1), steps=2)
  before, after = _flat(params), _flat(new)
  for k in before:
    if k.startswith("backbone/"):
      np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(before[k]), err_msg=k)
    else:
      assert not np.array_equal(np.asarray(after[k]), np.asarray(before[k])), k
  assert peft.vit_finetune(backbone_multiplier=0.1) == P.finetune(backbone_multiplier=0.1)
  lrd = peft.vit_finetune(L, layer_decay=0.75, backbone_multiplier=0.1)
  assert lrd == peft.layerwise_lr_decay(L, decay=0.75, base_multiplier=0.1)
  # the train engine's {"model": ...} tree
  nested = peft.lora_recipe(params_prefix="model", also_train=("norm/.*",))
  tree = {
    "model": {
      "backbone": {
        "norm": {"scale": 0},
        "blocks_0": {"attn": {"query": {"kernel": 0, "lora_a": 0}}},
      },
      "head": {"kernel": 0},
    }
  }
  assert _flat(P.label_params(tree, nested.rules)) == {
    "model/backbone/norm/scale": "backbone",
    "model/backbone/blocks_0/attn/query/kernel": "frozen",
    "model/backbone/blocks_0/attn/query/lora_a": "lora",
    "model/head/kernel": "head",
  }


def test_freeze_first_k_uses_the_vit_stages():
  """``VisionTransformer.stages`` fits dtl_jax.params.freeze_first_k: stage 0 is the
  embedding stage (patch embedding, CLS / register tokens, position embeddings)."""
  backbone = VisionTransformer(**TINY, variant="dinov2_registers", num_register_tokens=2)
  params = _init(Classifier(backbone))
  assert backbone.stages == ("embed|pre_norm", "blocks_0", "blocks_1", "blocks_2")
  labels = _flat(P.label_params(params, P.freeze_first_k(2, stages=backbone.stages).rules))
  for path, label in labels.items():
    frozen = path.startswith(("backbone/embed/", "backbone/blocks_0/"))
    assert label == (
      "frozen" if frozen else "backbone" if path.startswith("backbone/") else "head"
    ), path
  assert labels["backbone/embed/cls_token"] == labels["backbone/embed/reg_tokens"] == "frozen"


def test_recipe_argument_errors():
  with pytest.raises(ValueError, match=r"decay must be in \(0, 1\], got 1.5"):
    peft.layerwise_lr_decay(4, decay=1.5)
  with pytest.raises(ValueError, match="num_layers must be >= 1"):
    peft.layerwise_lr_decay(0, decay=0.5)
  with pytest.raises(ValueError, match="num_layers is needed for layer_decay < 1"):
    peft.vit_finetune(layer_decay=0.5)
  with pytest.raises(ValueError, match="lora_multiplier must be >= 0"):
    peft.lora_recipe(lora_multiplier=-1.0)
