"""Checkpoints: save in a process that dies, restore bit-identically, load into a new head."""

import os
import subprocess
import sys
import textwrap

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dtl_jax import params as P
from dtl_jax.models import MLP, Bottleneck, Classifier, TransferModel, init_variables, make_apply_fn
from dtl_jax.train.checkpoint import Checkpointer, restore_checkpoint, restore_into, save_checkpoint


@flax.struct.dataclass
class State:
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: optax.OptState
  rng: jax.Array


MODEL = TransferModel(MLP((8, 6), batch_norm=True), None, Classifier(3))
RULES = [("backbone/(fc1|bn1)/.*", "frozen"), ("backbone/.*", "backbone"), (".*", "head")]


def make_tx():
  return P.make_optimizer(RULES, learning_rate=0.1, multipliers={"backbone": 0.1}, momentum=0.9)


def init_state(seed: int) -> State:
  x = jnp.ones((4, 5), jnp.float32)
  v = init_variables(MODEL, jax.random.key(seed), x)
  return State(
    jnp.array(0, jnp.int32),
    v["params"],
    v["batch_stats"],
    make_tx().init(v["params"]),
    jax.random.key(seed),
  )


@jax.jit
def train_step(state: State) -> State:
  apply_fn = make_apply_fn(MODEL)
  tx = make_tx()
  key, sub = jax.random.split(state.rng)
  x = jax.random.normal(sub, (8, 5), jnp.float32)
  y = jnp.arange(8) % 3

  def loss_fn(p):
    out, new = apply_fn({"params": p, "batch_stats": state.batch_stats}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(out["logits"], y).mean(), new

  (_, new), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  upd, opt_state = tx.update(g, state.opt_state, state.params)
  return State(
    state.step + 1, optax.apply_updates(state.params, upd), new["batch_stats"], opt_state, key
  )


def _leaves(state):
  out = []
  for leaf in jax.tree_util.tree_leaves(state):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    out.append(np.asarray(leaf))
  return out


def test_save_kill_restore_is_bit_identical(tmp_path):
  ckpt_dir, ref = tmp_path / "ckpt", tmp_path / "ref.npz"
  # The saving process trains 4 steps, saves every step (keep 2), writes the reference
  # leaves, then dies without closing anything (os._exit).
  script = textwrap.dedent(f"""
      import os, sys
      sys.path.insert(0, {os.path.dirname(__file__)!r})
      import jax
      jax.config.update("jax_enable_x64", True)
      import numpy as np
      from test_checkpoint import Checkpointer, init_state, train_step, _leaves
      state = init_state(0)
      ckpt = Checkpointer({str(ckpt_dir)!r}, max_to_keep=2)
      for step in range(1, 5):
        state = train_step(state)
        ckpt.save(step, state)
      np.savez({str(ref)!r}, *_leaves(state))
      os._exit(0)
  """)
  env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
  subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)

  ckpt = Checkpointer(ckpt_dir, max_to_keep=2)
  assert ckpt.all_steps() == [3, 4]
  template = init_state(1)  # different values, same structure
  restored = ckpt.restore(template)
  assert isinstance(restored, State)
  assert jax.dtypes.issubdtype(restored.rng.dtype, jax.dtypes.prng_key)
  with np.load(ref) as data:
    expected = [data[f"arr_{i}"] for i in range(len(data.files))]
  got = _leaves(restored)
  assert len(got) == len(expected)
  for a, b in zip(got, expected, strict=True):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  assert int(restored.step) == 4
  # The restored state keeps training: the frozen group stays put.
  nxt = train_step(restored)
  np.testing.assert_array_equal(
    np.asarray(nxt.params["backbone"]["fc1"]["kernel"]),
    np.asarray(restored.params["backbone"]["fc1"]["kernel"]),
  )
  with pytest.raises(ValueError, match=r"step 1 not in .*available steps: \[3, 4\]"):
    ckpt.restore(template, step=1)
  ckpt.close()


def test_restore_into_new_head_keeps_backbone_and_reports_head(tmp_path):
  state = train_step(init_state(0))
  save_checkpoint(tmp_path / "c", 1, state)
  raw = restore_checkpoint(tmp_path / "c")
  np.testing.assert_array_equal(
    np.asarray(raw["params"]["head"]["fc"]["kernel"]),
    np.asarray(state.params["head"]["fc"]["kernel"]),
  )

  new_model = TransferModel(MLP((8, 6), batch_norm=True), Bottleneck(4, dropout=0.0), Classifier(5))
  fresh = init_variables(new_model, jax.random.key(7), jnp.ones((2, 5), jnp.float32))
  merged, report = restore_into(tmp_path / "c", fresh)
  for coll, old in (("params", state.params), ("batch_stats", state.batch_stats)):
    for path, leaf in jax.tree_util.tree_flatten_with_path(old["backbone"])[0]:
      got = merged[coll]["backbone"]
      for k in path:
        got = got[k.key]
      np.testing.assert_array_equal(np.asarray(got), np.asarray(leaf))
  for coll in ("params", "batch_stats"):
    for new_part in ("bottleneck", "head"):
      if new_part in fresh[coll]:
        jax.tree_util.tree_map(
          lambda a, b: np.testing.assert_array_equal(a, b),
          merged[coll][new_part],
          fresh[coll][new_part],
        )
  assert sorted(report.initialized) == sorted(
    [
      "params/bottleneck/fc/kernel",
      "params/bottleneck/fc/bias",
      "params/bottleneck/bn/scale",
      "params/bottleneck/bn/bias",
      "batch_stats/bottleneck/bn/mean",
      "batch_stats/bottleneck/bn/var",
      "params/head/fc/kernel",
      "params/head/fc/bias",
    ]
  )
  assert "params/head/fc/kernel: source (6, 3), model (4, 5)" in report.mismatched
  assert all(k.split("/")[1] == "backbone" for k in report.loaded)
  assert len(report.loaded) == 12  # fc1, fc2 (kernel, bias), bn1, bn2 (scale, bias, mean, var)
  assert "newly initialized (8)" in str(report)
  # Only the backbone, even where shapes would fit:
  _, rep2 = restore_into(tmp_path / "c", fresh, include="(params|batch_stats)/backbone/.*")
  assert rep2.loaded == report.loaded


def test_checkpointer_errors(tmp_path):
  with pytest.raises(ValueError, match="max_to_keep must be >= 1"):
    Checkpointer(tmp_path / "x", max_to_keep=0)
  with pytest.raises(ValueError, match="no checkpoint in"):
    Checkpointer(tmp_path / "empty").restore()
  with pytest.raises(ValueError, match="subtree: 'model' not found"):
    restore_into({"params": {"a": np.ones(2)}}, {"params": {"a": jnp.zeros(2)}}, subtree="model")


def test_selected_checkpoint_of_a_saved_step_is_linked_not_rewritten(tmp_path):
  """SelectedCheckpoints.update(saved_at=...) adds the regular checkpoint of the same step
  by hard links: the same files (inodes), restorable bit-identically after the regular
  checkpoint rotates away; a step nobody picks any more is dropped, the source kept."""
  from dtl_jax.train.checkpoint import SelectedCheckpoints

  regular = Checkpointer(tmp_path / "checkpoints", max_to_keep=1)
  selected = SelectedCheckpoints(tmp_path / "selected", ("source_val_acc",))
  states = {1: init_state(0), 2: train_step(init_state(0))}
  history = []
  for step, acc in ((1, 0.5), (2, 0.7)):
    regular.save(step, states[step], force=True)
    history.append({"step": step, "scores": {"source_val_acc": acc}})
    src = regular.step_directory(step)
    assert src is not None and regular.step_directory(step + 10) is None
    selected.update(history, None, saved_at=src)  # no state: it must not be written
    assert selected.steps() == [step]  # the earlier pick is dropped
    a = os.path.join(src, "default")
    b = os.path.join(selected.directory, str(step), "default")
    files = [os.path.join(r, f) for r, _, fs in os.walk(a) for f in fs]
    assert files and all(os.stat(f).st_ino == os.stat(f.replace(a, b, 1)).st_ino for f in files)
  regular.save(3, train_step(states[2]), force=True)  # rotates step 2 away
  assert regular.all_steps() == [3]
  assert not [n for n in os.listdir(selected.directory) if n.startswith(".")]
  restored = Checkpointer(selected.directory).restore(init_state(5), step=2)
  for x, y in zip(_leaves(restored), _leaves(states[2]), strict=True):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(ValueError, match="step 2 already exists"):
    selected._ckpt.add_copy(2, str(tmp_path / "checkpoints" / "3"))
