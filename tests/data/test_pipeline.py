"""The input pipeline: batches as a pure function of (seed, step), process slices, grain
streams, lazy image views, augmentation protocols, streamed evaluation batches."""

import os

import numpy as np
import pytest
from PIL import Image

from dtl_jax.data import ImageFolder, load_domain, pipeline, transforms
from dtl_jax.data.streaming import LazyImages, StreamingDomain, with_transform


def _toy(n, offset=0.0):
  """x[i] (a 6x5x3 image) encodes i, so batches can be traced back to indices."""
  x = (np.arange(n, dtype=np.float32)[:, None, None, None] + offset) * np.ones((1, 6, 5, 3))
  return x.astype(np.float32), (np.arange(n) % 3).astype(np.int32)


def _ids(x):
  return x.reshape(len(x), -1)[:, 0].astype(int)


def _reference_indices(n, b, seed, stream, step):
  """The documented order: epoch e visits default_rng([seed, stream, e]).permutation(n)."""
  per_epoch = n // b
  e, j = divmod(step, per_epoch)
  return np.random.default_rng([seed, stream, e]).permutation(n)[j * b : (j + 1) * b]


def _reference_seeds(b, seed, stream, step):
  return np.random.default_rng([seed, 2 + stream, step]).integers(2**63 - 1, size=b)


def test_batch_of_step_k_follows_the_documented_order_and_seeds():
  xs, ys = _toy(50)
  xt, _ = _toy(30, offset=1000.0)
  w = np.linspace(0.5, 2.0, 50).astype(np.float32)
  batches = pipeline.TrainBatches(
    xs, ys, xt, batch_size=8, target_batch_size=6, seed=3, source_weights=w
  )
  for step in (0, 5, 6, 13):  # 6 steps per source epoch: 6 and 13 are in later epochs
    b = batches(step)
    idx_s = _reference_indices(50, 8, 3, 0, step)
    np.testing.assert_array_equal(_ids(b["x_s"]), idx_s)
    np.testing.assert_array_equal(b["y_s"], ys[idx_s])
    np.testing.assert_array_equal(b["w_s"], w[idx_s])
    np.testing.assert_array_equal(_ids(b["x_t"]) - 1000, _reference_indices(30, 6, 3, 1, step))

  # with a random transform, example i of step k is augmented with its documented seed
  def tf(x, rng):
    return x + rng.uniform()

  aug = pipeline.TrainBatches(xs, ys, xt, batch_size=8, target_batch_size=6, seed=3, transform=tf)
  b = aug(13)
  u = [np.random.default_rng(int(s)).uniform() for s in _reference_seeds(8, 3, 0, 13)]
  np.testing.assert_allclose(b["x_s"][:, 0, 0, 0], _reference_indices(50, 8, 3, 0, 13) + u)
  np.testing.assert_array_equal(aug(13)["x_s"], b["x_s"])  # pure: same step, same batch


def test_uniform_target_sampling_is_the_samplers():
  from dtl_jax.data import PairSampler

  xs, ys = _toy(50)
  xt, _ = _toy(30, offset=1000.0)
  kw = dict(batch_size=8, target_batch_size=6, seed=3, target_sampling="uniform")
  batches = pipeline.TrainBatches(xs, ys, xt, **kw)
  sampler = PairSampler((xs, ys), (xt, np.arange(30, dtype=np.int32) % 3), **kw)
  for step in (0, 4, 5, 13):  # 5 steps per target "epoch" of 30 draws
    e, j = divmod(step, 5)
    ref = np.random.default_rng([3, 1, e, 1]).integers(30, size=30)[j * 6 : (j + 1) * 6]
    np.testing.assert_array_equal(_ids(batches(step)["x_t"]) - 1000, ref)
    np.testing.assert_array_equal(sampler.target_indices(step), ref)
    np.testing.assert_array_equal(_ids(batches(step)["x_s"]), _reference_indices(50, 8, 3, 0, step))
  with pytest.raises(ValueError, match="target_sampling must be one of"):
    pipeline.TrainBatches(xs, ys, xt, batch_size=8, target_batch_size=6, seed=3, target_sampling="")


def test_processes_read_disjoint_slices_that_concatenate_to_the_global_batch():
  xs, ys = _toy(40)
  xt, _ = _toy(40, offset=1000.0)

  def tf(x, rng):
    return x * rng.uniform(0.5, 1.5)

  kw = dict(batch_size=8, target_batch_size=4, seed=1, transform=tf)
  whole = pipeline.TrainBatches(xs, ys, xt, **kw)(7)
  parts = [
    pipeline.TrainBatches(xs, ys, xt, process_index=p, process_count=2, **kw)(7) for p in (0, 1)
  ]
  for k in ("x_s", "y_s", "x_t"):
    assert parts[0][k].shape[0] == whole[k].shape[0] // 2
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
  with pytest.raises(ValueError, match="target_batch_size .* divisible by the 3 processes"):
    pipeline.TrainBatches(xs, ys, xt, batch_size=6, target_batch_size=4, seed=0, process_count=3)
  with pytest.raises(ValueError, match="source_weights has 3 entries"):
    pipeline.TrainBatches(
      xs, ys, xt, batch_size=8, target_batch_size=8, seed=0, source_weights=np.ones(3)
    )


def test_grain_streams_deliver_the_steps_in_order():
  xs, ys = _toy(30)
  xt, _ = _toy(20, offset=1000.0)

  def tf(x, rng):
    return x + rng.normal(size=x.shape).astype(np.float32)

  batches = pipeline.TrainBatches(
    xs, ys, xt, batch_size=4, target_batch_size=4, seed=0, transform=tf
  )
  want = [batches(k) for k in range(5, 12)]
  for threads in (0, 3):
    it = batches.stream(5, 12, threads=threads, prefetch=2)
    got = list(it)
    it.close()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
      for k in w:
        np.testing.assert_array_equal(g[k], w[k])


def test_a_worker_process_delivers_the_same_batches():
  """grain's mp_prefetch (spawned worker, one batch per step) == the in-process batches."""
  xs, ys = _toy(30)
  batches = pipeline.TrainBatches(xs, ys, xs, batch_size=4, target_batch_size=4, seed=2)
  it = batches.stream(3, 6, threads=1, prefetch=1, workers=1)
  try:
    got = [next(it) for _ in range(3)]
  finally:
    it.close()
  for k, g in zip(range(3, 6), got, strict=True):
    for key, v in batches(k).items():
      np.testing.assert_array_equal(g[key], v)


@pytest.fixture
def folder(tmp_path):
  rng = np.random.default_rng(0)
  pixels = {}
  for cls in ("ants", "bees"):
    os.makedirs(tmp_path / "f" / cls)
    for i in range(3):
      arr = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
      path = str(tmp_path / "f" / cls / f"{i}.png")
      Image.fromarray(arr).save(path)
      pixels[path] = arr
  return tmp_path / "f", pixels


def test_lazy_images_decode_only_the_rows_read(folder, monkeypatch):
  root, pixels = folder
  src = ImageFolder(str(root))
  decoded = []
  original = src.decode
  monkeypatch.setattr(src, "decode", lambda i: decoded.append(i) or original(i))
  x = LazyImages(src)
  assert x.shape == (6, 12, 16, 3) and decoded == [0]  # the shape reads row 0 once
  ref = np.stack([pixels[p] for p in src.paths]).astype(np.float32) / 255.0
  np.testing.assert_array_equal(x[2], ref[2])
  np.testing.assert_array_equal(x[1:4], ref[1:4])
  np.testing.assert_array_equal(x[np.array([5, 0])], ref[[5, 0]])
  np.testing.assert_array_equal(x[-1], ref[5])
  assert decoded == [0, 2, 1, 2, 3, 5, 0, 5]
  sub = x.take(np.array([4, 1]), axis=0)  # a view: nothing decoded
  assert len(decoded) == 8 and len(sub) == 2
  np.testing.assert_array_equal(np.asarray(sub), ref[[4, 1]])
  np.testing.assert_array_equal(sub.raw(0), pixels[src.paths[4]])
  with pytest.raises(IndexError):
    x[6]
  with pytest.raises(ValueError, match="axis=0"):
    x.take([0], axis=1)


def test_folder_domains_stream_and_match_an_eager_resize(folder):
  root, pixels = folder
  d = load_domain(f"folder:{root}", size=8, normalize="imagenet")
  assert isinstance(d, StreamingDomain) and isinstance(d.x_train, LazyImages)
  assert d.input_shape == (8, 8, 3) and d.num_train == d.num_test == 6
  src = ImageFolder(str(root))
  for i in (0, 4):
    img = Image.fromarray(pixels[src.paths[i]]).resize((8, 8), Image.Resampling.BILINEAR)
    want = (
      np.asarray(img, np.float32) / 255.0 - transforms.IMAGENET_MEAN
    ) / transforms.IMAGENET_STD
    np.testing.assert_allclose(d.x_test[i], want, atol=1e-6)
  np.testing.assert_array_equal(d.y_train, src.labels)
  (root / "ants" / "broken.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="broken.png"):  # reported when opened
    load_domain(f"folder:{root}", size=9)


def test_augmentation_protocols_are_tllibs_transforms():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
  train, test = pipeline.augmentation("tllib_imagenet", image_size=224)
  # ResizeImage(256) -> CenterCrop(224) -> ToTensor -> Normalize(ImageNet), in PIL / NumPy
  big = np.asarray(Image.fromarray(img).resize((256, 256), Image.Resampling.BILINEAR))
  want = (big[16:240, 16:240].astype(np.float32) / 255 - transforms.IMAGENET_MEAN) / (
    transforms.IMAGENET_STD
  )
  np.testing.assert_allclose(test(img, None), want, atol=1e-6)
  a = train(img, np.random.default_rng(5))
  assert a.shape == (224, 224, 3)
  np.testing.assert_array_equal(a, train(img, np.random.default_rng(5)))  # per seed
  assert not np.array_equal(a, train(img, np.random.default_rng(6)))
  # another image size scales the resize: 256 * 32 / 224 = 36.6 -> 37, crop 32
  _, t32 = pipeline.augmentation("tllib_imagenet", image_size=32)
  small = np.asarray(Image.fromarray(img).resize((37, 37), Image.Resampling.BILINEAR))
  np.testing.assert_allclose(
    t32(img, None),
    (small[2:34, 2:34] / np.float32(255) - transforms.IMAGENET_MEAN) / transforms.IMAGENET_STD,
    atol=1e-6,
  )
  # digits: ResizeImage(28) -> ToTensor -> Normalize(0.5, 0.5), train = test
  train, test = pipeline.augmentation("tllib_digits", image_size=28)
  assert train is test
  r = np.asarray(Image.fromarray(img).resize((28, 28), Image.Resampling.BILINEAR), np.float32)
  np.testing.assert_allclose(test(img, None), (r / 255 - 0.5) / 0.5, atol=1e-6)
  assert pipeline.augmentation("none", image_size=16) == (None, None)
  with pytest.raises(ValueError, match="augmentation must be one of"):
    pipeline.augmentation("randaugment", image_size=16)


def test_eval_batches_pad_the_last_batch_and_keep_the_order(folder):
  x, _ = _toy(10)
  got = list(pipeline.eval_batches(x, batch_size=4))
  assert [m for _, m in got] == [4, 4, 2]
  assert all(b.shape == (4, 6, 5, 3) for b, _ in got)
  np.testing.assert_array_equal(_ids(np.concatenate([b[:m] for b, m in got])), np.arange(10))
  np.testing.assert_array_equal(_ids(got[-1][0]), [8, 9, 9, 9])  # padding repeats row 9
  # a lazy view with a test transform, decoded by 2 threads: same rows as read directly
  root, _ = folder
  _, test = pipeline.augmentation("tllib_imagenet", image_size=8)
  view = with_transform(LazyImages(ImageFolder(str(root))), test)
  streamed = list(pipeline.eval_batches(view, batch_size=4, threads=2))
  np.testing.assert_array_equal(np.concatenate([b[:m] for b, m in streamed]), view[:])
  with pytest.raises(ValueError, match="at least one"):
    list(pipeline.eval_batches(x[:0], batch_size=4))
