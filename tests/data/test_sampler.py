"""PairSampler: order, resumption, device layouts, prefetch, evaluation batches."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dtl_jax.data import Batch, PairSampler, Prefetcher, data_sharding, eval_batches, load_pair


def _toy(n, shape=(3,), num_classes=4, offset=0.0):
  """x[i] encodes i, so batches can be traced back to example indices."""
  ids = np.arange(n, dtype=np.float32).reshape((n,) + (1,) * len(shape)) + offset
  x = ids * np.ones((1,) + shape, np.float32)
  y = (np.arange(n) % num_classes).astype(np.int32)
  return x, y


def _ids(x):
  return x.reshape(x.shape[0], -1)[:, 0].astype(int)


def test_drop_last_epochs_are_permutations_without_repeats():
  src, tgt = _toy(50), _toy(30, offset=1000.0)
  s = PairSampler(src, tgt, batch_size=8, target_batch_size=6, seed=3)
  per_epoch = 50 // 8
  seen = [_ids(next(s).x_source) for _ in range(2 * per_epoch)]
  for e in range(2):
    ep = np.concatenate(seen[e * per_epoch : (e + 1) * per_epoch])
    assert len(set(ep)) == per_epoch * 8  # no repeats within an epoch
  # Reference order: documented rule default_rng([seed, 0, epoch]).permutation(n).
  ref = np.random.default_rng([3, 0, 1]).permutation(50)[:8]
  np.testing.assert_array_equal(seen[per_epoch], ref)
  # Labels travel with their inputs.
  b = s.batch(11)
  np.testing.assert_array_equal(b.y_source, src[1][_ids(b.x_source)])
  np.testing.assert_array_equal(_ids(b.x_target) - 1000, s.target_indices(11))


def test_no_drop_last_visits_each_example_once_per_epoch():
  src = _toy(10)
  s = PairSampler(src, batch_size=4, drop_last=False, seed=0)
  stream = np.concatenate([_ids(next(s).x_source) for _ in range(5)])  # 20 = 2 epochs
  assert sorted(stream[:10]) == list(range(10))
  assert sorted(stream[10:]) == list(range(10))
  assert next(s).x_target is None


def test_resume_continues_exactly():
  s_dom, t_dom = load_pair("digits", "digits_m")
  a = PairSampler(s_dom, t_dom, batch_size=16, seed=7)
  for _ in range(13):
    next(a)
  state = a.state_dict()
  expected = [next(a) for _ in range(5)]
  b = PairSampler(s_dom, t_dom, batch_size=16, seed=7)
  b.load_state_dict(state)
  for e in expected:
    got = next(b)
    assert got.step == e.step
    np.testing.assert_array_equal(got.x_source, e.x_source)
    np.testing.assert_array_equal(got.y_source, e.y_source)
    np.testing.assert_array_equal(got.x_target, e.x_target)
  c = PairSampler(s_dom, t_dom, batch_size=16, seed=7).at_step(state["step"] + 2)
  np.testing.assert_array_equal(next(c).x_target, expected[2].x_target)
  with pytest.raises(ValueError, match="seed 7 differs"):
    PairSampler(s_dom, t_dom, batch_size=16, seed=8).load_state_dict(state)


def test_seed_changes_order():
  src = _toy(40)
  a = next(PairSampler(src, batch_size=8, seed=0)).x_source
  b = next(PairSampler(src, batch_size=8, seed=1)).x_source
  assert not np.array_equal(a, b)


def test_pmap_layout_for_8_devices_keeps_per_device_balance():
  src, tgt = _toy(100, shape=(4, 4, 1)), _toy(70, shape=(4, 4, 1), offset=1000.0)
  flat = PairSampler(src, tgt, batch_size=32, target_batch_size=16, seed=2)
  s = PairSampler(src, tgt, batch_size=32, target_batch_size=16, seed=2, num_devices=8)
  b, fb = next(s), next(flat)
  assert b.x_source.shape == (8, 4, 4, 4, 1) and b.y_source.shape == (8, 4)
  assert b.x_target.shape == (8, 2, 4, 4, 1)
  assert s.target_labels(0).shape == (8, 2)
  for d in range(8):
    np.testing.assert_array_equal(b.x_source[d], fb.x_source[4 * d : 4 * d + 4])
    np.testing.assert_array_equal(b.x_target[d], fb.x_target[2 * d : 2 * d + 2])
  # Under pmap every device sees its own 4 source and 2 target examples.
  counts = jax.pmap(lambda xs, xt: (xs.shape[0] + 0 * xs.sum(), xt.shape[0] + 0 * xt.sum()))(
    b.x_source, b.x_target
  )
  np.testing.assert_array_equal(np.asarray(counts[0]), [4] * 8)
  np.testing.assert_array_equal(np.asarray(counts[1]), [2] * 8)
  with pytest.raises(
    ValueError,
    match=r"target_batch_size \(12\) must be divisible by "
    r"num_devices \(8\)",
  ):
    PairSampler(src, tgt, batch_size=32, target_batch_size=12, num_devices=8)


def test_named_sharding_layout():
  src, tgt = _toy(64, shape=(2, 2, 3)), _toy(64, shape=(2, 2, 3), offset=1000.0)
  sharding = data_sharding()
  assert sharding.mesh.shape == {"data": 8}
  s = PairSampler(src, tgt, batch_size=16, seed=0, sharding=sharding)
  flat = PairSampler(src, tgt, batch_size=16, seed=0)
  b, fb = next(s), next(flat)
  assert isinstance(b.x_source, jax.Array) and b.x_source.sharding == sharding
  shards = sorted(b.x_target.addressable_shards, key=lambda sh: sh.index[0].start)
  assert len(shards) == 8
  for k, sh in enumerate(shards):
    assert sh.data.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(np.asarray(sh.data), fb.x_target[2 * k : 2 * k + 2])
  mesh = Mesh(np.asarray(jax.devices()).reshape(4, 2), ("data", "model"))
  two_d = NamedSharding(mesh, PartitionSpec("data"))
  b2 = next(PairSampler(src, tgt, batch_size=16, sharding=two_d))
  assert b2.x_source.addressable_shards[0].data.shape == (4, 2, 2, 3)


def test_prefetch_matches_direct_iteration_and_tracks_consumed_state():
  src, tgt = _toy(40), _toy(40, offset=1000.0)
  direct = PairSampler(src, tgt, batch_size=8, seed=5)
  ref = [next(direct) for _ in range(6)]
  s = PairSampler(src, tgt, batch_size=8, seed=5)
  with s.prefetch(buffer_size=3) as it:
    assert it.state_dict() == {"seed": 5, "step": 0}
    got = [next(it) for _ in range(4)]
    state = it.state_dict()
  assert state == {"seed": 5, "step": 4}  # not the read-ahead position
  for g, r in zip(got, ref[:4], strict=True):
    assert isinstance(g, Batch)
    np.testing.assert_array_equal(g.x_source, r.x_source)
  resumed = PairSampler(src, tgt, batch_size=8, seed=5)
  resumed.load_state_dict(state)
  np.testing.assert_array_equal(next(resumed).x_target, ref[4].x_target)


def test_prefetcher_propagates_errors_and_ends():
  def gen():
    yield 1
    yield 2
    raise RuntimeError("decode failed")

  it = Prefetcher(gen(), buffer_size=1)
  assert next(it) == 1 and next(it) == 2
  with pytest.raises(RuntimeError, match="decode failed"):
    next(it)
  assert list(Prefetcher(iter(range(5)), buffer_size=2)) == [0, 1, 2, 3, 4]
  with pytest.raises(ValueError, match="buffer_size must be an int >= 1"):
    Prefetcher([], buffer_size=0)


def test_eval_batches_cover_split_once_with_mask():
  s_dom, _ = load_pair("digits", "digits_inv")
  xs, ys, ms = [], [], []
  for x, y, m in eval_batches(s_dom, batch_size=64, num_devices=8):
    assert x.shape == (8, 8, 28, 28, 1) and y.shape == (8, 8) and m.shape == (8, 8)
    xs.append(x.reshape(64, 28, 28, 1))
    ys.append(y.reshape(64))
    ms.append(m.reshape(64))
  m = np.concatenate(ms).astype(bool)
  assert m.sum() == s_dom.num_test
  np.testing.assert_array_equal(np.concatenate(xs)[m], s_dom.x_test)
  np.testing.assert_array_equal(np.concatenate(ys)[m], s_dom.y_test)


def test_uniform_target_sampling_draws_with_replacement():
  src, tgt = _toy(40), _toy(30, offset=1000.0)
  kw = dict(batch_size=4, target_batch_size=3, seed=5)
  s = PairSampler(src, tgt, target_sampling="uniform", **kw)
  ref = PairSampler(src, tgt, **kw)
  per_epoch = 30 // 3
  idx = np.stack([s.target_indices(k) for k in range(50 * per_epoch)])  # 50 target epochs
  # the documented rule: target epoch e reads default_rng([seed, 1, e, 1]).integers(n, size=n)
  for k in (0, 7, 10, 333):
    e, j = divmod(k, per_epoch)
    draws = np.random.default_rng([5, 1, e, 1]).integers(30, size=30)
    np.testing.assert_array_equal(idx[k], draws[j * 3 : (j + 1) * 3])
    np.testing.assert_array_equal(_ids(s.batch(k).x_target) - 1000, idx[k])
  # with replacement: most epochs repeat an example (a permutation never does), every
  # example is drawn about equally often overall
  epochs = idx.reshape(50, 30)
  assert sum(len(set(e)) < 30 for e in epochs) >= 45
  counts = np.bincount(idx.ravel(), minlength=30)
  assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.5 * counts.mean()
  # the source order is not touched, and a batch is a pure function of its step
  for k in (0, 9, 31):
    np.testing.assert_array_equal(s.batch(k).x_source, ref.batch(k).x_source)
  again = PairSampler(src, tgt, target_sampling="uniform", **kw).at_step(333)
  np.testing.assert_array_equal(next(again).x_target, s.batch(333).x_target)


def test_sampler_errors():
  with pytest.raises(ValueError, match="fewer than its batch size"):
    PairSampler(_toy(5), batch_size=8)
  with pytest.raises(ValueError, match="class lists differ"):
    PairSampler(_toy(20, num_classes=4), _toy(20, num_classes=3), batch_size=4)
  with pytest.raises(ValueError, match="target_sampling must be one of 'epochs', 'uniform'"):
    PairSampler(_toy(16), _toy(16), batch_size=8, target_sampling="random")
  with pytest.raises(ValueError, match="not both"):
    PairSampler(_toy(16), batch_size=8, num_devices=8, sharding=data_sharding())


def test_prefetcher_threads_stop_on_close_and_when_abandoned():
  import gc
  import itertools

  it = Prefetcher(itertools.count(), buffer_size=2)
  assert next(it) == 0
  thread = it._thread
  it.close()
  thread.join(timeout=2)
  assert not thread.is_alive()
  it = Prefetcher(itertools.count(), buffer_size=2)
  next(it)
  thread = it._thread
  del it
  gc.collect()
  thread.join(timeout=2)
  assert not thread.is_alive()
