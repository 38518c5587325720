"""GPU / multi-device items: ResNet-50 DANN step (224x224, 32 + 32) and pmap scaling.

Both run only where the hardware exists; on a CPU-only machine :func:`run_resnet50` and
:func:`run_scaling` return ``{"status": "not run here: ..."}``.

* ResNet-50 (TLlib Office protocol): ``dtl_jax.models.ResNet50`` + bottleneck 256 +
  31-class head + DANN, one ``jit`` step (float32 and, as an option, bfloat16 compute)
  vs the same network in PyTorch eager (channels-last, optional autocast bf16) and
  ``torch.compile``. The target is JAX >= 1.3x faster than PyTorch eager.
* Scaling: the LeNet DANN step under ``jax.pmap`` (``dtl_jax.train.step.pmap_step``)
  with a fixed per-device batch (64 + 64) on 1, 2, 4, ... devices (weak scaling).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import harness

NUM_CLASSES = 31


# ------------------------------------------------------------------ PyTorch ResNet-50
# (torchvision does not import in this environment, so the architecture is written out.)


class _TorchBottleneck(torch.nn.Module):
  expansion = 4

  def __init__(self, cin: int, planes: int, stride: int):
    super().__init__()
    nn = torch.nn
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.down = None
    if stride != 1 or cin != planes * 4:
      self.down = nn.Sequential(
        nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
      )

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (x if self.down is None else self.down(x)))


class TorchResNet50Transfer(torch.nn.Module):
  """torchvision-equivalent ResNet-50 backbone + bottleneck (256, BN, ReLU) + head."""

  def __init__(self, num_classes: int = NUM_CLASSES):
    super().__init__()
    nn = torch.nn
    layers: list[torch.nn.Module] = [
      nn.Conv2d(3, 64, 7, 2, 3, bias=False),
      nn.BatchNorm2d(64),
      nn.ReLU(),
      nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
      for b in range(blocks):
        layers.append(_TorchBottleneck(cin, planes, (1 if i == 0 else 2) if b == 0 else 1))
        cin = planes * 4
    self.backbone = nn.Sequential(*layers)
    self.bottleneck = nn.Sequential(nn.Linear(2048, 256), nn.BatchNorm1d(256), nn.ReLU())
    self.head = nn.Linear(256, num_classes)

  def forward(self, x):
    f = self.backbone(x).mean(dim=(2, 3))
    b = self.bottleneck(f)
    return self.head(b), b


def make_torch_resnet_step(
  n: int, *, size: int = 224, device: str = "cuda", bf16: bool = False, compile_model: bool = False
) -> Callable[[], Any]:
  from benchmarks import torch_refs

  harness.patch_dalib_numpy()
  torch.manual_seed(0)
  model = TorchResNet50Transfer().to(device).to(memory_format=torch.channels_last)
  disc = torch_refs.dalib_discriminator(256, 1024).to(device)
  domain_loss = torch_refs.dalib_dann(disc)
  opt = torch.optim.SGD(
    list(model.parameters()) + list(disc.parameters()),
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-3,
    nesterov=True,
  )
  fwd = torch.compile(model) if compile_model else model
  x = torch.rand(2 * n, 3, size, size, device=device).to(memory_format=torch.channels_last)
  y = torch.randint(0, NUM_CLASSES, (n,), device=device)

  def step():
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
      logits, b = fwd(x)
      loss = F.cross_entropy(logits[:n].float(), y) + domain_loss(b[:n].float(), b[n:].float())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device.startswith("cuda"):
      torch.cuda.synchronize()
    return loss

  return step


def make_jax_resnet_step(n: int, *, size: int = 224, bf16: bool = False):
  from dtl_jax import methods
  from dtl_jax.models import Bottleneck, Classifier, ResNet50, TransferModel
  from dtl_jax.train import create_train_state
  from dtl_jax.train.step import make_train_step

  dtype = jnp.bfloat16 if bf16 else None
  model = TransferModel(
    ResNet50(dtype=dtype), Bottleneck(256, dropout=0.0), Classifier(NUM_CLASSES)
  )
  meth = methods.DANN()
  rng = np.random.default_rng(0)
  batch = {
    "x_s": jnp.asarray(rng.random((n, size, size, 3), dtype=np.float32)),
    "y_s": jnp.asarray(rng.integers(0, NUM_CLASSES, n).astype(np.int32)),
    "x_t": jnp.asarray(rng.random((n, size, size, 3), dtype=np.float32)),
  }
  st, tx = create_train_state(
    model,
    meth,
    key=jax.random.key(0),
    example_x=batch["x_s"],
    learning_rate=0.01,
    momentum=0.9,
    nesterov=True,
    weight_decay=1e-3,
  )
  step = jax.jit(make_train_step(model, meth, tx), donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step.lower(st, batch).compile()
  compile_s = time.perf_counter() - t0
  holder = [st]

  def call():
    holder[0], metrics = compiled(holder[0], batch)
    return jax.block_until_ready(metrics)

  return call, compile_s


def run_resnet50(
  *, repeats: int = 10, n: int = 32, size: int = 224, force: bool = False, log=print
) -> dict[str, Any]:
  """ResNet-50 DANN step, JAX vs PyTorch; needs a GPU in both frameworks (or ``force``)."""
  has_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
  if not (has_gpu or force):
    return {"status": "not run here: no GPU"}
  device = "cuda" if has_gpu else "cpu"
  fns: dict[str, Callable[[], Any]] = {}
  compile_s = {}
  for bf16 in (False, True):
    name = "jax_bf16" if bf16 else "jax"
    fns[name], compile_s[name] = make_jax_resnet_step(n, size=size, bf16=bf16)
    fns["torch_eager_bf16" if bf16 else "torch_eager"] = make_torch_resnet_step(
      n, size=size, device=device, bf16=bf16
    )
  if has_gpu:
    fns["torch_compile"] = make_torch_resnet_step(n, size=size, device=device, compile_model=True)
  t = harness.time_alternating(fns, repeats=repeats, min_sample_s=0.0, warmup=3)
  eager = t["torch_eager"].median_s
  out = {
    "status": "ok",
    "device": device,
    "n": n,
    "size": size,
    "compile_s": compile_s,
    "timings": {k: v.as_dict() for k, v in t.items()},
    "speedup_jax_vs_torch_eager": eager / t["jax"].median_s,
    "speedup_jax_bf16_vs_torch_eager": eager / t["jax_bf16"].median_s,
    "speedup_jax_bf16_vs_torch_eager_bf16": t["torch_eager_bf16"].median_s / t["jax_bf16"].median_s,
  }
  for k, v in t.items():
    log(f"    resnet50 {k:18s} {v.median_s * 1e3:8.2f} ms")
  best = max(out["speedup_jax_vs_torch_eager"], out["speedup_jax_bf16_vs_torch_eager_bf16"])
  out["target"] = "PASS" if best >= 1.3 else "FAIL"
  return out


def run_scaling(
  *, repeats: int = 10, per_device: int = 64, force: bool = False, log=print
) -> dict[str, Any]:
  """LeNet DANN pmap step time on 1, 2, 4, ... devices (fixed per-device batch)."""
  from benchmarks import steps
  from dtl_jax.models import Bottleneck, Classifier, TransferModel
  from dtl_jax.train import create_train_state
  from dtl_jax.train.step import make_train_step, pmap_step, replicate, shard_batch_for_pmap

  devices = jax.local_devices()
  if (len(devices) < 2 or jax.default_backend() == "cpu") and not force:
    return {"status": "not run here: single device (CPU)"}
  rows = []
  k = 1
  while k <= len(devices):
    devs = devices[:k]
    model = TransferModel(steps.LeNet(), Bottleneck(256, dropout=0.0), Classifier(10))
    meth = steps._method("dann")
    batch = steps._batch(per_device * k)
    st, tx = create_train_state(
      model, meth, key=jax.random.key(0), example_x=batch["x_s"], learning_rate=0.01, momentum=0.9
    )
    step = pmap_step(make_train_step(model, meth, tx, axis_name="batch"), devices=devs)
    holder = [replicate(st, devs)]
    pbatch = shard_batch_for_pmap(batch, k)

    def call(holder=holder, step=step, pbatch=pbatch):
      holder[0], metrics = step(holder[0], pbatch)
      return jax.block_until_ready(metrics)

    t = harness.time_alternating({"pmap": call}, repeats=repeats, min_sample_s=0.05, warmup=2)
    rows.append({"devices": k, "global_batch": 2 * per_device * k, **t["pmap"].as_dict()})
    log(f"    pmap {k} devices: {t['pmap'].median_s * 1e3:.2f} ms/step")
    k *= 2
  base = rows[0]["median_s"]
  for r in rows:
    r["weak_scaling_efficiency"] = base / r["median_s"]
  return {"status": "ok", "rows": rows}
