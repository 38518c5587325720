"""One step body, four drivers: pmap, shard_map and sharded (jit over a mesh) on 8
devices == jit on one.

The model has BatchNorm (synchronized over the device axis) and no dropout; the
methods build their losses on the all-gathered global batch.
"""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from dtl_jax import methods, models, train

pytestmark = pytest.mark.usefixtures("fast_compile")

N_DEV = 8


AXIS = "batch"


def _model(axis_name=None):
  return models.TransferModel(
    models.MLP(hidden=(16,), batch_norm=True),
    models.Bottleneck(features=8, dropout=0.0),
    models.Classifier(3),
    bn_axis_name=axis_name,
  )


def _batch(seed=0, n=16, n_t=None):
  rng = np.random.default_rng(seed)
  return {
    "x_s": rng.normal(size=(n, 5)).astype(np.float32),
    "y_s": rng.integers(0, 3, n).astype(np.int32),
    "x_t": (rng.normal(size=(n if n_t is None else n_t, 5)) + 0.7).astype(np.float32),
  }


def _setup(method):
  model = _model()
  state, tx = train.create_train_state(
    model,
    method,
    key=jax.random.key(0),
    example_x=np.zeros((2, 5), np.float32),
    learning_rate=0.1,
    weight_decay=1e-3,
  )
  return model, state, tx


def _allclose(a, b, rtol=1e-5, atol=1e-6):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


METHOD_FACTORIES = {
  "dan": lambda: methods.DAN(),
  "jan": lambda: methods.JAN(),
  # DANN's path (GRL + discriminator on the gathered batch) is CDAN's with the map off
  "cdan": lambda: methods.CDAN(hidden=(16, 16), schedule="constant", entropy_conditioning=True),
  "source_only": lambda: methods.SourceOnly(),  # uses_target = False: source batch only
}


@pytest.mark.parametrize("name", sorted(METHOD_FACTORIES))
def test_pmap_shard_map_and_sharded_equal_jit_on_global_batch(name):
  assert jax.device_count() >= N_DEV
  method = METHOD_FACTORIES[name]()
  model, state, tx = _setup(method)
  batch = _batch()

  # Reference: one jit step on one device over the concatenated global batch.
  jit_fn = train.jit_step(train.make_train_step(model, method, tx), donate=False)
  ref_state, ref_metrics = jit_fn(state, batch)

  # pmap: [8, 2, ...] batches, replicated state.
  body = train.make_train_step(_model(AXIS), method, tx, axis_name=AXIS)
  pm = train.pmap_step(body, axis_name=AXIS, donate=False)
  p_state, p_metrics = pm(
    train.replicate(state, jax.devices()[:N_DEV]), train.shard_batch_for_pmap(batch, N_DEV)
  )
  # replicas agree with each other
  for leaf in jax.tree.leaves(p_state.params):
    np.testing.assert_array_equal(np.asarray(leaf)[0], np.asarray(leaf)[-1])
  p_state = train.unreplicate(p_state)

  # shard_map over a 1-D mesh of 8 devices.
  mesh = Mesh(np.asarray(jax.devices()[:N_DEV]), (AXIS,))
  sm = train.shard_map_step(body, mesh, axis_name=AXIS, donate=False)
  s_state, s_metrics = sm(state, train.place_batch(batch, mesh, AXIS))

  # sharded: jax.jit over a mesh, batch split on the data axis, the jit body (no axis
  # name, BatchNorm without axis): XLA places the collectives.
  assert train.driver_axis_name("sharded") is None
  driver = train.make_driver("sharded", train.make_train_step(model, method, tx))
  assert len(driver.put_batch(batch)["x_s"].sharding.device_set) == jax.device_count()
  host_copy = jax.tree.map(lambda a: a.copy(), state)  # the driver donates its argument
  j_state, j_metrics = driver.step(driver.put_state(host_copy), driver.put_batch(batch))
  j_state = driver.to_host(j_state)

  runs = ((p_state, p_metrics), (s_state, s_metrics), (j_state, j_metrics))
  for got_state, got_metrics in runs:
    np.testing.assert_allclose(
      np.asarray(got_metrics["loss"]).reshape(-1)[0], float(ref_metrics["loss"]), rtol=1e-5
    )
    _allclose(got_state.params, ref_state.params)
    _allclose(got_state.batch_stats, ref_state.batch_stats)
  # the step actually moved the parameters and statistics
  # (every weight matrix; a bias right before BatchNorm has zero gradient)
  new_leaves = jax.tree_util.tree_leaves_with_path(ref_state.params)
  old_leaves = jax.tree.leaves(state.params)
  moved = [
    not np.allclose(a, b)
    for (path, a), b in zip(new_leaves, old_leaves, strict=True)
    if "kernel" in jax.tree_util.keystr(path)
  ]
  assert moved and all(moved)
  assert not np.allclose(
    ref_state.batch_stats["model"]["backbone"]["bn1"]["mean"],
    state.batch_stats["model"]["backbone"]["bn1"]["mean"],
  )


def test_mmd_per_device_without_gather_differs():
  """MMD is not decomposable: the mean of per-device estimates != the global one."""
  from dtl_jax.losses import mk_mmd

  rng = np.random.default_rng(1)
  xs = rng.normal(size=(16, 4))
  xt = rng.normal(size=(16, 4)) + 0.5
  global_value = float(mk_mmd(xs, xt))
  per_device = np.mean(
    [float(mk_mmd(a, b)) for a, b in zip(np.split(xs, N_DEV), np.split(xt, N_DEV), strict=True)]
  )
  assert abs(per_device - global_value) > 0.05 * abs(global_value)

  # and the pmap step *with* gathering equals jit (above) while a body whose
  # method sees only local features (no axis name) gives a different loss:
  method = methods.DAN()
  model, state, tx = _setup(method)
  batch = _batch()
  ref = train.jit_step(train.make_train_step(model, method, tx), donate=False)(state, batch)[1]
  local_body = train.make_train_step(_model(AXIS), method, tx)  # no gather, no pmean

  def no_gather(st, b):
    new, m = local_body(st, b)
    return new, jax.lax.pmean(m, AXIS)

  # BN still needs its axis for this body to run; features are never gathered.
  out = jax.pmap(no_gather, axis_name=AXIS)(
    train.replicate(state, jax.devices()[:N_DEV]), train.shard_batch_for_pmap(batch, N_DEV)
  )[1]
  assert abs(float(out["loss"][0]) - float(ref["loss"])) > 1e-3
