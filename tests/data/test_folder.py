"""Image folders and TLlib image lists on a generated JPEG/PNG tree."""

import os

import numpy as np
import pytest
from PIL import Image

from dtl_jax.data import (
  CorruptImageError,
  ImageFolder,
  ImageList,
  PairSampler,
  check_same_classes,
  transforms,
)


def _write(path, arr):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(arr).save(path)


@pytest.fixture
def tree(tmp_path):
  """root/{ants,bees}/ with PNGs (exact pixels), a JPEG and a nested folder."""
  rng = np.random.default_rng(0)
  root = tmp_path / "office"
  pixels = {}
  for cls, n in (("ants", 3), ("bees", 2)):
    for i in range(n):
      arr = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
      sub = "nested" if (cls == "bees" and i == 1) else ""
      path = os.path.join(root, cls, sub, f"{cls}{i}.png")
      _write(path, arr)
      pixels[path] = arr
  jpg = os.path.join(root, "ants", "photo.JPG")
  _write(jpg, rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8))
  (root / "ants" / "notes.txt").write_text("not an image")
  return root, pixels, jpg


def test_classes_labels_and_exact_decoding(tree):
  root, pixels, jpg = tree
  ds = ImageFolder(root)
  assert ds.class_names == ("ants", "bees") and ds.num_classes == 2
  assert len(ds) == 6  # 3 PNG + 1 JPEG in ants, 2 PNG in bees; notes.txt ignored
  for i, p in enumerate(ds.paths):
    expected_label = 0 if os.sep + "ants" + os.sep in p else 1
    assert ds.labels[i] == expected_label
  idx = [ds.paths.index(p) for p in pixels]
  x = ds.get(np.array(idx))
  assert x.dtype == np.float32 and x.shape == (5, 12, 16, 3)
  np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), np.stack(list(pixels.values())))
  with Image.open(jpg) as im:
    ref = np.asarray(im.convert("RGB"))
  np.testing.assert_array_equal(ds.decode(ds.paths.index(jpg)), ref)
  gray = ImageFolder(root, channels=1)
  assert gray.get(np.array([0])).shape == (1, 12, 16, 1)


def test_missing_root(tmp_path):
  with pytest.raises(FileNotFoundError, match="image folder root .*nowhere.* does not exist"):
    ImageFolder(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="no class sub-folders"):
    ImageFolder(tmp_path)


def test_empty_class_folder(tree):
  root, _, _ = tree
  os.makedirs(root / "wasps")
  with pytest.raises(ValueError, match=r"without images .*\['wasps'\].*allow_empty_classes"):
    ImageFolder(root)
  ds = ImageFolder(root, allow_empty_classes=True)
  assert ds.class_names == ("ants", "bees", "wasps") and ds.empty_classes == ("wasps",)
  assert ds.num_classes == 3 and set(ds.labels) == {0, 1}


def test_corrupt_image_error_names_file_or_counted_skip(tree):
  root, _, _ = tree
  bad = os.path.join(root, "bees", "broken.jpg")
  with open(bad, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 definitely not a jpeg")
  ds = ImageFolder(root)
  assert len(ds) == 7
  with pytest.raises(CorruptImageError, match="broken.jpg"):
    ds.get(np.array([ds.paths.index(bad)]))
  sampler = PairSampler(ds, batch_size=7, seed=0)  # every batch contains the bad file
  with pytest.raises(CorruptImageError, match="broken.jpg"):
    next(sampler)
  skipping = ImageFolder(root, on_corrupt="skip")
  assert skipping.num_skipped == 1 and skipping.skipped == [bad]
  assert len(skipping) == 6 and bad not in skipping.paths
  assert skipping.get(np.arange(6)).shape == (6, 12, 16, 3)


def test_mismatched_class_lists(tree, tmp_path):
  root, _, _ = tree
  other = tmp_path / "webcam"
  rng = np.random.default_rng(1)
  for cls in ("ants", "wasps"):
    _write(os.path.join(other, cls, "x.png"), rng.integers(0, 256, (12, 16, 3), np.uint8))
  src, tgt = ImageFolder(root), ImageFolder(other)
  with pytest.raises(ValueError, match=r"only in source: \['bees'\]; only in target: \['wasps'\]"):
    PairSampler(src, tgt, batch_size=2)
  with pytest.raises(ValueError, match=r"only in expected classes: \['bees'\].*\['wasps'\]"):
    ImageFolder(other, classes=src.class_names)
  with pytest.raises(ValueError, match="different order: label 0 is 'a'"):
    check_same_classes(["a", "b"], ["b", "a"])


def test_image_list(tree):
  root, pixels, _ = tree
  rel = [os.path.relpath(p, root) for p in pixels]
  lines = [f"{r} {0 if r.startswith('ants') else 1}" for r in rel]
  list_file = root / "list.txt"
  list_file.write_text("\n".join(lines) + "\n\n")
  ds = ImageList(list_file, classes=("ants", "bees"))
  assert len(ds) == 5 and ds.class_names == ("ants", "bees")
  np.testing.assert_array_equal(ds.labels, [int(l.split()[-1]) for l in lines])
  np.testing.assert_array_equal(
    np.round(ds.get(np.arange(5)) * 255).astype(np.uint8), np.stack(list(pixels.values()))
  )
  assert ImageList(list_file).class_names == ("0", "1")
  (root / "bad_label.txt").write_text(f"{rel[0]} 5\n")
  with pytest.raises(ValueError, match=r"label 5 .* outside \[0, 2\)"):
    ImageList(root / "bad_label.txt", classes=("ants", "bees"))
  (root / "missing.txt").write_text("ants/nope.png 0\n")
  with pytest.raises(FileNotFoundError, match="nope.png"):
    ImageList(root / "missing.txt")
  (root / "garbled.txt").write_text("justapath\n")
  with pytest.raises(ValueError, match=r"garbled.txt:1: expected '<path> <label>'"):
    ImageList(root / "garbled.txt")
  with pytest.raises(FileNotFoundError, match="image list file"):
    ImageList(root / "absent.txt")


def test_folder_sampler_with_transforms_workers_and_prefetch(tree):
  root, _, _ = tree
  tf = transforms.train_transform(resize_size=16, crop_size=8)
  src = ImageFolder(root, transform=tf)
  tgt = ImageFolder(root, transform=tf)
  a = PairSampler(src, tgt, batch_size=4, target_batch_size=2, seed=1, num_workers=2)
  b = PairSampler(src, tgt, batch_size=4, target_batch_size=2, seed=1)
  with a.prefetch(2) as it:
    got = [next(it) for _ in range(3)]
  for g in got:
    r = next(b)
    assert g.x_source.shape == (4, 8, 8, 3) and g.x_target.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(g.x_source, r.x_source)  # same seed, same crops
    np.testing.assert_array_equal(g.x_target, r.x_target)
  # Each example's transform uses its documented per-example seed.
  step = 1
  idx = b.source_indices(step)
  seeds = np.random.default_rng([1, 2, step]).integers(2**63 - 1, size=4, dtype=np.int64)
  ref = np.stack(
    [tf(src.decode(i), np.random.default_rng(int(s))) for i, s in zip(idx, seeds, strict=True)]
  )
  np.testing.assert_array_equal(got[step].x_source, ref)
  with pytest.raises(ValueError, match="different shapes"):
    nested = ImageFolder(root)
    _write(os.path.join(root, "ants", "big.png"), np.zeros((5, 5, 3), np.uint8))
    ImageFolder(root).get(np.arange(len(nested) + 1))
