"""Foundation backbones through the engine: a tiny ViT trains with DANN from the CLI; a
`transformers` checkpoint folder given as model.pretrained sets the architecture and
the weights; LoRA trains only its adapters; layer-wise learning-rate decay reaches the
update with the closed-form multipliers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtl_jax import cli, methods, models
from dtl_jax.config import default_config
from dtl_jax.train import create_train_state, fit
from dtl_jax.train.loop import initial_variables

pytestmark = pytest.mark.usefixtures("fast_compile")

# A 2-block ViT on the 16x16 digits (patches of 8): small enough for CI.
TINY = {
  "preset": "vit_s16",
  "image_size": 16,
  "patch_size": 8,
  "hidden_size": 32,
  "num_layers": 2,
  "num_heads": 2,
  "mlp_dim": 64,
}


def _config(**backbone_kwargs):
  c = default_config()
  c.model.backbone = "vit"
  c.model.backbone_kwargs = {**TINY, **backbone_kwargs}
  c.model.bottleneck_dim = 16
  c.method = "dann"
  c.method_kwargs = {"hidden": (16, 16)}
  c.data.batch_size = 8
  c.train.num_steps, c.train.eval_every, c.train.progress = 3, 3, False
  return c


def test_tiny_vit_trains_with_dann_from_the_cli(tmp_path, capsys):
  w = tmp_path / "vit_dann"
  argv = [
    "train",
    "--workdir",
    str(w),
    "--no-progress",
    "--config.method=dann",
    "--config.model.backbone=vit",
    "--config.model.bottleneck_dim=16",
    "--config.method_kwargs.hidden=(16, 16)",
    "--config.data.batch_size=8",
    "--config.train.num_steps=3",
    "--config.train.eval_every=3",
  ]
  argv += [f"--config.model.backbone_kwargs.{k}={v}" for k, v in TINY.items()]
  assert cli.main(argv) == 0, capsys.readouterr().err
  result = json.loads((w / "result.json").read_text())
  assert result["steps"] == 3 and result["method"] == "dann"
  capsys.readouterr()
  # eval re-opens the run: the ViT is rebuilt from config.json, same accuracy
  assert cli.main(["eval", "--workdir", str(w)]) == 0
  ev = json.loads(capsys.readouterr().out)
  assert ev["accuracy"] == pytest.approx(100 * result["last"]["target_acc"], abs=1e-6)


def test_lora_backbone_trains_only_its_adapters(tmp_path):
  c = _config(lora_rank=2, lora_targets="blocks_[0-9]+/attn/(query|value)")
  r = fit(c, str(tmp_path / "lora"))
  model = models.build(c.model, num_classes=10)
  v0 = initial_variables(c, model, jax.random.key(c.seed), np.zeros((1, 16, 16, 3), np.float32))
  trained = r["state"].params["model"]["backbone"]
  moved = 0
  for (path, a), b in zip(
    jax.tree_util.tree_flatten_with_path(v0["params"]["backbone"])[0],
    jax.tree.leaves(trained),
    strict=True,
  ):
    name = jax.tree_util.keystr(path)
    same = np.asarray(a).tobytes() == np.asarray(b).tobytes()
    if "lora_" in name:
      moved += int(not same)
    else:
      assert same, name  # every pretrained (base) weight is bit-identical
  assert moved > 0
  # the trainable backbone parameters are exactly the adapters: 2 blocks x (query, value)
  # x rank 2 x (d_in + d_out) = 2 * 2 * 2 * (32 + 32)
  n_lora = sum(
    int(np.size(x))
    for p, x in jax.tree_util.tree_flatten_with_path(trained)[0]
    if "lora_" in jax.tree_util.keystr(p)
  )
  assert n_lora == 2 * 2 * 2 * (32 + 32)


def test_layer_decay_multipliers_reach_the_update():
  """optim.layer_decay: block i of L gets decay ** (L - i), the embeddings decay ** (L+1),
  the final norm 1, the head 1 (one plain SGD step on unit gradients: update = -lr x mult)."""
  model = models.build(_config().model, num_classes=10)
  decay, lr = 0.5, 0.1
  state, tx = create_train_state(
    model,
    methods.build("source_only"),
    key=jax.random.key(0),
    example_x=jnp.zeros((1, 16, 16, 3)),
    learning_rate=lr,
    layer_decay=decay,
    multipliers={"backbone": 1.0},
  )
  grads = jax.tree.map(jnp.ones_like, state.params)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  bb = updates["model"]["backbone"]
  L = 2
  np.testing.assert_allclose(bb["blocks_0"]["attn"]["query"]["kernel"], -lr * decay**L)
  np.testing.assert_allclose(bb["blocks_1"]["attn"]["query"]["kernel"], -lr * decay ** (L - 1))
  for leaf in jax.tree.leaves(bb["embed"]):
    np.testing.assert_allclose(leaf, -lr * decay ** (L + 1))
  np.testing.assert_allclose(bb["norm"]["scale"], -lr)
  np.testing.assert_allclose(updates["model"]["head"]["fc"]["kernel"], -lr)
  with pytest.raises(ValueError, match="needs a backbone made of blocks"):
    create_train_state(
      models.build(default_config().model, num_classes=10),
      methods.build("source_only"),
      key=jax.random.key(0),
      example_x=jnp.zeros((1, 16, 16, 3)),
      learning_rate=lr,
      layer_decay=0.5,
    )


def test_transformers_checkpoint_folder_sets_architecture_and_weights(tmp_path):
  """model.pretrained = a folder saved by transformers (random weights, no hub): its
  config.json gives the ViT, its safetensors the backbone weights."""
  from tests.models import vit_testing

  torch_model, _ = vit_testing.make_model("vit", seed=3)
  folder = tmp_path / "hf_vit"
  torch_model.save_pretrained(folder)
  c = default_config()
  c.model.backbone, c.model.pretrained = "vit", str(folder)
  c.data.image_size = vit_testing.IMAGE
  model = models.build(c.model, num_classes=10)
  assert model.backbone.hidden_size == vit_testing.HIDDEN
  assert model.backbone.num_layers == vit_testing.LAYERS
  v = initial_variables(
    c, model, jax.random.key(0), np.zeros((1, vit_testing.IMAGE, vit_testing.IMAGE, 3), np.float32)
  )
  want = models.load_hf_vision(folder, model.backbone)["params"]
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(v["params"]["backbone"]), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c.train.num_steps, c.train.eval_every, c.train.progress = 2, 2, False
  c.data.batch_size = 8
  assert fit(c, str(tmp_path / "run"))["steps"] == 2
