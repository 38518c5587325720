"""Multi-process training on CPU: 2 local processes (gloo collectives), 1 device each.

``fit`` with ``train.multihost=True`` and the pmap, shard_map or sharded driver must give
the same final parameters as a single-process jit run on the same global batches (each
process decodes only its slice of every batch); only process 0 writes the result
files; a multi-process run interrupted after a checkpoint resumes from it (save and
restore with two processes).

One CPU device per process: with two devices per process, XLA:CPU's gloo collectives
hung intermittently (CI, and about 1 run in 4 here under load): process 0 stayed blocked
in a gloo AllReduce after process 1 had finished its run. The devices within one process
are covered by the single-process multi-device tests (tests/train/test_step.py,
test_loop.py::test_fit_drivers_agree).
"""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

TIMEOUT = 360  # seconds per child process (the multi-process children run 6 fits)


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


CHILD = textwrap.dedent("""
    import faulthandler, sys
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)  # a hang prints its stacks
    import jax
    mode, out, port, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "multi":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.config.update("jax_num_cpu_devices", 1)
    import numpy as np
    from dtl_jax.config import default_config
    from dtl_jax.train import fit

    def config(driver):
      c = default_config()
      c.method = "dan"
      c.data.source, c.data.target = "moons", "moons_rot"
      c.data.batch_size = 16
      c.model.backbone = "mlp"
      c.model.backbone_kwargs = {"hidden": (16,), "batch_norm": True}
      c.model.bottleneck_dim = 8
      c.model.bottleneck_dropout = 0.0
      c.optim.learning_rate = 0.05
      c.train.num_steps = 6
      c.train.log_every = 3
      c.train.eval_every = 6
      c.train.checkpoint_every = 3
      c.train.keep_checkpoints = 2
      c.train.progress = False
      c.train.driver = driver
      if mode == "multi":
        c.train.multihost = True
        c.train.coordinator_address = "localhost:" + port
        c.train.num_processes = 2
        c.train.process_id = pid
      return c

    for driver in (["jit"] if mode == "single" else ["pmap", "shard_map", "sharded"]):
      c = config(driver)
      # stopped after the checkpoint of step 3, then resumed (shard_map feeds and saves
      # as sharded does: it runs straight through)
      if mode == "multi" and driver != "shard_map":
        c.train.stop_at_step = 3
        r = fit(c, out + "/" + driver)
        assert r["interrupted"] and r["steps"] == 3, r["steps"]
        c = config(driver)
        c.train.resume = True
      r = fit(c, out + "/" + driver)
      leaves = [np.asarray(x) for x in jax.tree.leaves(r["state"].params)]
      np.savez(out + f"/{driver}/params_{jax.process_index()}.npz", *leaves)
    print("devices", jax.process_count(), jax.device_count(), flush=True)
""")


def test_two_processes_stop_and_resume_equal_single_process_jit(tmp_path):
  """pmap, shard_map and sharded, 2 processes x 1 device == 6 uninterrupted jit steps
  in one process; pmap and sharded stop at step 3 (checkpoint saved from two processes)
  and resume to step 6 (restored in two processes)."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # compile time dominates (6 fits per child)
  port = str(_free_port())
  child = CHILD.replace("TIMEOUT", str(TIMEOUT))
  ref = subprocess.run(
    [sys.executable, "-c", child, "single", str(tmp_path / "single"), port, "0"],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    timeout=TIMEOUT + 30,
  )
  assert ref.returncode == 0, ref.stdout[-3000:]
  multi = tmp_path / "multi"
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", child, "multi", str(multi), port, str(i)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT + 30)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, o) in enumerate(zip(procs, outs, strict=True)):
    assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{o[-3000:]}"
  assert "devices 2 2" in outs[0]
  want = np.load(tmp_path / "single" / "jit" / "params_0.npz")
  for driver in ("pmap", "shard_map", "sharded"):
    got0 = np.load(multi / driver / "params_0.npz")
    got1 = np.load(multi / driver / "params_1.npz")
    assert len(got0.files) == len(want.files)
    for k in want.files:
      np.testing.assert_allclose(got0[k], want[k], rtol=1e-4, atol=1e-6)
      np.testing.assert_array_equal(got0[k], got1[k])
    # process 0 wrote the results; checkpoints were saved once per step
    assert (multi / driver / "result.json").exists()
    assert (multi / driver / "metrics.jsonl").exists()
    assert sorted(d for d in os.listdir(multi / driver / "checkpoints") if d.isdigit()) == [
      "3",
      "6",
    ]
