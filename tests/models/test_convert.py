"""State-dict round trip, file formats and merging converted weights into a new model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtl_jax.models import (
  DTN,
  Classifier,
  StateDictMismatchError,
  TransferModel,
  flax_to_torch,
  init_variables,
  load_state_dict,
  merge_variables,
  torch_to_flax,
)


def test_round_trip_and_torch_layouts(tmp_path):
  model = DTN()
  v = init_variables(model, jax.random.key(0), jnp.ones((1, 32, 32, 3), jnp.float32))
  sd = flax_to_torch(v)
  # PyTorch layouts: conv [O, I, kh, kw], linear [out, in], BN weight / running stats
  assert sd["conv1.weight"].shape == (64, 3, 5, 5)
  assert sd["fc.weight"].shape == (512, 256 * 4 * 4)
  assert {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"} <= set(sd)
  np.testing.assert_array_equal(
    sd["conv2.weight"][7, 3], np.asarray(v["params"]["conv2"]["kernel"])[:, :, 3, 7]
  )
  np.savez(tmp_path / "w.npz", **sd)
  back = torch_to_flax(load_state_dict(tmp_path / "w.npz"), v)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), back, v)
  # DataParallel prefix is stripped; num_batches_tracked ignored
  sd2 = {f"module.{k}": x for k, x in sd.items()}
  sd2["module.bn1.num_batches_tracked"] = np.array(3)
  torch_to_flax(sd2, v)
  (tmp_path / "w.txt").write_text("x")
  with pytest.raises(ValueError, match="unsupported file type"):
    load_state_dict(tmp_path / "w.txt")
  with pytest.raises(ValueError, match="no such file"):
    load_state_dict(tmp_path / "none.safetensors")
  with pytest.raises(StateDictMismatchError, match=r"missing keys \(1\):\n    fc.bias"):
    torch_to_flax({k: x for k, x in sd.items() if k != "fc.bias"}, v)


def test_merge_converted_backbone_into_transfer_model():
  x = jnp.ones((2, 32, 32, 3), jnp.float32)
  backbone_vars = init_variables(DTN(), jax.random.key(1), x)
  model = TransferModel(DTN(), None, Classifier(4))
  fresh = init_variables(model, jax.random.key(2), x)
  merged, report = merge_variables(fresh, backbone_vars, at="backbone")
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_array_equal(a, b),
    merged["params"]["backbone"],
    backbone_vars["params"],
  )
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_array_equal(a, b),
    merged["batch_stats"]["backbone"],
    backbone_vars["batch_stats"],
  )
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_array_equal(a, b),
    merged["params"]["head"],
    fresh["params"]["head"],
  )
  assert report.initialized == ["params/head/fc/bias", "params/head/fc/kernel"]
  assert report.unused == [] and report.mismatched == []
