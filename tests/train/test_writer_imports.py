"""The TensorBoard writer does not import PyTorch (start-up time, issue 15), and still
writes readable events."""

import os
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import sys
from dtl_jax.train.writer import MetricWriter
w = MetricWriter(sys.argv[1], tensorboard=True)
w.write({"kind": "train", "step": 3, "loss": 0.25})
w.close()
print("torch" in sys.modules)
import torch  # a later import of PyTorch still works
print(torch.ones(2).sum().item())
"""


def _events(path):
  """The Event protos of a TFRecord event file (tensorboardX's own proto classes)."""
  from tensorboardX.proto.event_pb2 import Event

  data = open(path, "rb").read()
  out, i = [], 0
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i : i + 8])
    event = Event()
    event.ParseFromString(data[i + 12 : i + 12 + n])
    out.append(event)
    i += 12 + n + 4
  return out


def test_writer_imports_no_torch_and_writes_scalars(tmp_path):
  out = subprocess.run(
    [sys.executable, "-c", SCRIPT, str(tmp_path)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
    env={**os.environ, "PYTHONPATH": ROOT},
  )
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.split()
  assert lines[0] == "False"  # tensorboardX did not pull in PyTorch
  assert float(lines[1]) == 2.0
  (tb_file,) = [os.path.join(dp, f) for dp, _, fs in os.walk(tmp_path / "tb") for f in fs]
  scalars = [(e.step, v.tag, v.simple_value) for e in _events(tb_file) for v in e.summary.value]
  assert scalars == [(3, "train/loss", 0.25)]
