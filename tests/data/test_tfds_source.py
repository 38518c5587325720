"""TFDS path through tfds.data_source under tfds.testing.mock_data (no TF, no network)."""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dtl_jax.data import PairSampler, TFDSSource, eval_batches, load_tfds

N = 12


@pytest.fixture
def mock_tfds():
  # USE_CODE generates random records from each dataset's feature spec; it needs no
  # metadata files, no TensorFlow and no network.
  with tfds.testing.mock_data(num_examples=N, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _reference(name, split):
  ds = tfds.data_source(name, split=split, data_dir="/tmp/unused")
  return (
    np.stack([np.asarray(ds[i]["image"]) for i in range(len(ds))]),
    np.asarray([int(ds[i]["label"]) for i in range(len(ds))]),
  )


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("svhn_cropped", (32, 32, 3))])
def test_load_tfds_matches_records(mock_tfds, name, shape):
  del mock_tfds
  d = load_tfds(name, data_dir="/tmp/unused")
  ref_x, ref_y = _reference(name, "train")
  assert d.x_train.shape == (N,) + shape and d.x_train.dtype == np.float32
  np.testing.assert_allclose(d.x_train, ref_x.astype(np.float64) / 255.0, atol=1e-7)
  np.testing.assert_array_equal(d.y_train, ref_y)
  assert d.num_classes == 10 and d.y_train.dtype == np.int32
  test_x, test_y = _reference(name, "test")
  np.testing.assert_array_equal(d.y_test, test_y)
  np.testing.assert_allclose(d.x_test, test_x / 255.0, atol=1e-7)
  assert "tensorflow" not in sys.modules


def test_mnist_to_svhn_pair_with_resize_and_channels(mock_tfds):
  del mock_tfds
  src = load_tfds("mnist", size=32, channels=3, max_examples=8)
  tgt = load_tfds("svhn_cropped", max_examples=8)
  assert src.input_shape == tgt.input_shape == (32, 32, 3)
  assert src.num_train == 8
  np.testing.assert_array_equal(src.x_train[..., 0], src.x_train[..., 2])
  sampler = PairSampler(src, tgt, batch_size=8, num_devices=8)
  b = next(sampler)
  assert b.x_source.shape == (8, 1, 32, 32, 3) and b.x_target.shape == (8, 1, 32, 32, 3)
  gray = load_tfds("svhn_cropped", channels=1, max_examples=2)
  ref_x, _ = _reference("svhn_cropped", "train")
  lum = ref_x[:2].astype(np.float64) / 255.0 @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(gray.x_train[..., 0], lum, atol=1e-5)


def test_lazy_source_with_sampler_and_eval(mock_tfds):
  del mock_tfds
  src = TFDSSource("svhn_cropped", split="train")
  tgt = TFDSSource("mnist_corrupted/shot_noise", split="train", size=32, channels=3)
  ref_x, ref_y = _reference("svhn_cropped", "train")
  np.testing.assert_array_equal(src.labels, ref_y)
  s = PairSampler(src, tgt, batch_size=4, seed=2)
  b = next(s)
  idx = s.source_indices(0)
  np.testing.assert_allclose(b.x_source, ref_x[idx] / 255.0, atol=1e-7)
  np.testing.assert_array_equal(b.y_source, ref_y[idx])
  assert b.x_target.shape == (4, 32, 32, 3)
  ys = np.concatenate([y[m > 0] for _, y, m in eval_batches(src, batch_size=5)])
  np.testing.assert_array_equal(ys, ref_y)
  dn = TFDSSource("domainnet/clipart", split="train", size=16)
  assert dn.num_classes == 345 and dn.get(np.arange(3)).shape == (3, 16, 16, 3)
  c10c = TFDSSource("cifar10_corrupted/fog_1")
  assert c10c.split == "test[:50%]" and c10c.get(np.arange(2)).shape == (2, 32, 32, 3)


def test_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown TFDS dataset 'imagenette'.*pass image_key"):
    load_tfds("imagenette")
  # Not mocked: a data_dir without prepared data gives instructions, never a download.
  with pytest.raises(
    FileNotFoundError, match=r"'mnist'.*no prepared 'mnist' folder.*tfds build mnist"
  ):
    TFDSSource("mnist", data_dir=str(tmp_path))
  assert "tensorflow" not in sys.modules


def test_tfds_domain_streams_the_records(mock_tfds):
  """``tfds:mnist`` is a streaming domain: rows decoded from the records when read,
  resized to ``size`` and repeated to 3 channels; labels read at open."""
  del mock_tfds
  from PIL import Image

  from dtl_jax.data import load_domain
  from dtl_jax.data.streaming import LazyImages

  d = load_domain("tfds:mnist", size=16, data_dir="/tmp/unused")
  assert isinstance(d.x_train, LazyImages) and d.input_shape == (16, 16, 3)
  ref_x, ref_y = _reference("mnist", "train")
  np.testing.assert_array_equal(d.y_train, ref_y)
  for i in (0, 7):
    img = Image.fromarray(ref_x[i][..., 0]).resize((16, 16), Image.Resampling.BILINEAR)
    want = np.repeat(np.asarray(img, np.float32)[..., None] / 255.0, 3, axis=-1)
    np.testing.assert_allclose(d.x_train[i], want, atol=1e-7)
  assert np.asarray(d.x_test).shape == (N, 16, 16, 3)
