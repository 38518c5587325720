"""fit never holds a whole domain in memory: peak memory does not grow with the number of
images.

Two child processes run the same config (2 source classes of 100 images; DAN, LeNet, 3
steps, one evaluation over every image) on a target image folder of 1,000 and of 10,000
32x32 PNGs (each image is ``32 * 32 * 3 * 4 = 12 KiB`` once decoded at
``data.image_size = 32``), same batch size, threads and prefetch. Each child reports the
peak of its resident memory during ``fit`` over its resident memory just before
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``; compiled code and the
runtime are the same in both). The peak may grow only by the per-image bookkeeping: file
paths, labels, index arrays, the predicted class of each test image, and the label-free
criteria's target features (``[n_t, 8 + 2]`` with an 8-wide bottleneck, float64 in the
criteria), about 1.2 KiB per image as measured on the development machine (11 MiB for
the 9,000 extra images). The bound asserted is 3 KiB per extra image, a quarter of one
decoded image: holding the 9,000 extra target images of one split would add 105 MiB
(twice that for the train and test splits), streaming may add at most 26 MiB.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

SIZE = 32
BOUND_PER_IMAGE = 3072  # bytes
TIMEOUT = 400  # seconds per child process

CHILD = (
  textwrap.dedent("""
    import faulthandler, sys
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)  # a hang prints its stacks
    from dtl_jax.config import default_config
    from dtl_jax.train import fit

    source, target, workdir = sys.argv[1:4]

    def status(key):
      for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
          return int(line.split()[1]) * 1024

    c = default_config()
    c.method = "dan"
    c.data.source, c.data.target = "folder:" + source, "folder:" + target
    c.data.image_size = SIZE
    c.data.batch_size = 16
    c.data.eval_batch_size = 250
    c.data.threads = 2
    c.data.prefetch = 2
    c.model.bottleneck_dim = 8
    c.train.num_steps = 3
    c.train.eval_every = 3
    c.train.checkpoint_every = 3
    c.train.keep_selected = False
    c.train.progress = False
    c.train.tensorboard = False
    c.train.chance_check = 0.0
    before = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
    r = fit(c, workdir)
    assert r["steps"] == 3 and len(r["history"]) == 1
    print("growth", status("VmHWM") - before, flush=True)
""")
  .replace("TIMEOUT", str(TIMEOUT))
  .replace("SIZE", str(SIZE))
)


def _folder(root, n):
  """``n`` PNG files in two class folders (a few distinct images, written as bytes)."""
  import io

  rng = np.random.default_rng(0)
  encoded = []
  for _ in range(8):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buf, "PNG")
    encoded.append(buf.getvalue())
  for c in ("a", "b"):
    os.makedirs(root / c)
  for i in range(n):
    (root / "ab"[i % 2] / f"{i:05d}.png").write_bytes(encoded[i % len(encoded)])
  return str(root)


def _growth(tmp_path, n):
  source = tmp_path / "src"
  if not source.exists():
    _folder(source, 200)
  out = subprocess.run(
    [
      sys.executable,
      "-c",
      CHILD,
      str(source),
      _folder(tmp_path / f"t{n}", n),
      str(tmp_path / f"r{n}"),
    ],
    env={**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"},  # compile time dominates
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    timeout=TIMEOUT + 30,
  )
  assert out.returncode == 0, out.stdout[-3000:]
  return int(out.stdout.split("growth")[-1].split()[0])


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
  small = _growth(tmp_path, 1_000)
  large = _growth(tmp_path, 10_000)
  extra = 9_000
  decoded = extra * SIZE * SIZE * 3 * 4
  print(f"growth during fit: {small / 2**20:.1f} MiB (1k images), {large / 2**20:.1f} MiB (10k)")
  assert large - small < extra * BOUND_PER_IMAGE, (
    f"peak grew by {(large - small) / 2**20:.1f} MiB from 1,000 to 10,000 images (growth "
    f"during fit {small / 2**20:.1f} and {large / 2**20:.1f} MiB); the extra decoded "
    f"images are {decoded / 2**20:.0f} MiB"
  )
