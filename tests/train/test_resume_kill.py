"""kill -9 mid-epoch, then resume: bit-identical to an uninterrupted run, with augmentation.

A child process trains on two generated image folders with TLlib's augmentation
(``data.augment = "tllib_imagenet"``: random-resized crops and flips drawn per (seed,
step, example)), decoding in 2 threads with 2 batches prefetched, and saves a checkpoint
at step 4 (epoch 1 of 3 steps, so mid-epoch); after it logged step 6 it is killed with
SIGKILL. Another child continues that run from its checkpoint and, in the same process,
trains the same config without interruption. Parameters, optimizer state, every line of
``metrics.jsonl`` (but the wall-clock speed) and the evaluation history must be equal,
for the ``jit`` and the ``sharded`` (2 CPU devices) drivers.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

TIMEOUT = 300  # seconds per child process

CHILD = textwrap.dedent("""
    import faulthandler, sys
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)  # a hang prints its stacks
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_disable_most_optimizations", True)  # compile time dominates
    import json, time
    import numpy as np
    from dtl_jax.config import default_config
    from dtl_jax.train import fit, writer

    mode, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
    drivers = sys.argv[4].split(",")

    def config(driver):
      c = default_config()
      c.method = "dann"
      c.method_kwargs = {"hidden": (16,)}
      c.data.source, c.data.target = "folder:" + data + "/src", "folder:" + data + "/tgt"
      c.data.image_size = 16
      c.data.augment = "tllib_imagenet"
      c.data.batch_size = 8
      c.data.eval_batch_size = 16
      c.data.threads = 2
      c.data.prefetch = 2
      c.model.bottleneck_dim = 8
      c.train.driver = driver
      c.train.num_steps = 8
      c.train.log_every = 2
      c.train.eval_every = 4
      c.train.checkpoint_every = 4
      c.train.keep_checkpoints = 2
      c.train.progress = False
      c.train.tensorboard = False
      c.train.keep_selected = False
      return c

    def save(r, path):
      leaves = jax.tree.leaves((r["state"].params, r["state"].opt_state, r["state"].batch_stats))
      np.savez(path, *[np.asarray(x) for x in leaves])

    if mode == "killed":
      original = writer.MetricWriter.write

      def write(self, record):
        original(self, record)
        if record.get("kind") == "train" and record["step"] == 6:
          open(out + "/" + drivers[0] + ".ready", "w").close()
          time.sleep(3600)  # the parent kills us with SIGKILL here

      writer.MetricWriter.write = write
      fit(config(drivers[0]), out + "/" + drivers[0] + "_resumed")
    else:
      for driver in drivers:
        c = config(driver)
        c.train.resume = True
        r = fit(c, out + "/" + driver + "_resumed")
        assert r["steps"] == 8 and not r["interrupted"]
        save(r, out + "/" + driver + "_resumed.npz")
        save(fit(config(driver), out + "/" + driver + "_full"), out + "/" + driver + "_full.npz")
    print("done", flush=True)
""").replace("TIMEOUT", str(TIMEOUT))

DRIVERS = ("jit", "sharded")


def _folder(root, n, seed):
  rng = np.random.default_rng(seed)
  for c, cls in enumerate(("cat", "dog")):
    os.makedirs(root / cls)
    for i in range(n):
      img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
      img[:, : 8 + 8 * c] //= 2  # a class-dependent pattern
      Image.fromarray(img).save(root / cls / f"{i}.png")


def _run(args, env):
  return subprocess.Popen(
    [sys.executable, "-c", CHILD, *args],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _records(path):
  lines = [json.loads(x) for x in open(path)]
  for r in lines:
    r.pop("steps_per_second", None)  # wall-clock speed, the one thing that may differ
  return lines


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
  _folder(tmp_path / "data" / "src", 15, seed=0)  # 26 training images: 3 steps per epoch
  _folder(tmp_path / "data" / "tgt", 12, seed=1)
  out = tmp_path / "runs"
  out.mkdir()
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  data = str(tmp_path / "data")
  killed = {d: _run(["killed", data, str(out), d], env) for d in DRIVERS}
  try:
    deadline = time.monotonic() + TIMEOUT
    for d, p in killed.items():
      while not (out / f"{d}.ready").exists():
        assert p.poll() is None, f"{d}: the child exited early:\n{p.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, f"{d}: the child never reached step 6"
        time.sleep(0.2)
      os.kill(p.pid, signal.SIGKILL)
      p.communicate(timeout=30)
      assert p.returncode == -signal.SIGKILL
  finally:
    for p in killed.values():
      if p.poll() is None:
        p.kill()
  for d in DRIVERS:  # killed after the checkpoint of step 4 and the log of step 6
    assert sorted(os.listdir(out / f"{d}_resumed" / "checkpoints")) == ["4"]
    assert _records(out / f"{d}_resumed" / "metrics.jsonl")[-1]["step"] == 6
  rest = _run(["resume_and_full", data, str(out), ",".join(DRIVERS)], env)
  try:
    log = rest.communicate(timeout=TIMEOUT + 30)[0]
  finally:
    if rest.poll() is None:
      rest.kill()
  assert rest.returncode == 0, log[-3000:]
  for d in DRIVERS:
    full, resumed = np.load(out / f"{d}_full.npz"), np.load(out / f"{d}_resumed.npz")
    assert len(full.files) == len(resumed.files) > 10
    for k in full.files:
      np.testing.assert_array_equal(resumed[k], full[k], err_msg=f"{d}: leaf {k}")
    want = _records(out / f"{d}_full" / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in want] == [
      ("train", 2),
      ("train", 4),
      ("eval", 4),
      ("train", 6),
      ("train", 8),
      ("eval", 8),
    ]
    assert _records(out / f"{d}_resumed" / "metrics.jsonl") == want
    history = json.loads((out / f"{d}_full" / "history.json").read_text())
    assert json.loads((out / f"{d}_resumed" / "history.json").read_text()) == history
  # the two drivers trained the same model on the same augmented batches
  jit, sharded = np.load(out / "jit_full.npz"), np.load(out / "sharded_full.npz")
  for k in jit.files:
    np.testing.assert_allclose(sharded[k], jit[k], rtol=1e-4, atol=1e-5)
