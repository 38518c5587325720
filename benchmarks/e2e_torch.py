"""The PyTorch side of the end-to-end benchmark: one whole training run, as a subprocess.

``python -m benchmarks.e2e_torch --method dann --data DATA.npz --workdir DIR --threads 1``

The strongest reasonable eager PyTorch training loop for the protocol of
:mod:`benchmarks.e2e` (same network and initialization, batches, schedules and evaluation as the
dtl_jax run): DANN's MNIST network (conv5-32, ReLU, max-pool, conv5-48, ReLU, max-pool) and its
label predictor (100, 100, 10); DANN: GRL (``autograd.Function``) + domain classifier
(100, 1) on the 768 features, paper schedule ``2 / (1 + exp(-10 p)) - 1``; DAN: MK-MMD on
the features with the hand-written backward of :func:`benchmarks.torch_refs.mk_mmd_fn`;
CDAN: the randomized multilinear map (1024, as TLlib when ``C F > 4096``), TLlib's warm-start
GRL; SGD momentum 0.9, lr ``0.01 (1 + 10 p)^-0.75``; one forward of ``[x_s; x_t]`` (the
source only for source_only). Evaluation every ``eval_every`` steps: source validation,
source test and target test accuracy (``torch.no_grad``, ``eval()``); a checkpoint of model,
discriminator and optimizer then (``latest.pth``, copied to ``best.pth`` when the source
validation accuracy improves, as TLlib's scripts keep their best checkpoint); a log line and a
JSON record every ``log_every`` steps.

Data: the arrays of the dtl_jax run (``benchmarks.e2e`` exports them once, untimed, to an
``.npz``: a dataset on disk, as a PyTorch user has). Prints one JSON line with the phases:
``imports_s, data_s, build_s, first_step_s, steps_s, eval_s, checkpoint_s, finish_s,
total_s`` (exclusive, in-process), plus accuracies.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

from benchmarks import harness  # noqa: E402  (stdlib only: pins threads before torch)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m benchmarks.e2e_torch", description=__doc__)
  p.add_argument("--method", required=True, choices=("source_only", "dann", "dan", "cdan"))
  p.add_argument("--data", required=True, help=".npz written by benchmarks.e2e")
  p.add_argument("--workdir", required=True)
  p.add_argument("--threads", type=int, default=None)
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--eval-every", type=int, default=100)
  p.add_argument("--log-every", type=int, default=50)
  p.add_argument("--eval-batch-size", type=int, default=500)
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


class Clock:
  """Exclusive phases, as :class:`dtl_jax.train.timing.PhaseClock` (PyTorch CPU is
  synchronous: nothing to wait for)."""

  def __init__(self, start: float):
    self.mark = start
    self.totals: dict[str, float] = {}
    self.inner = 0.0

  def lap(self, name):
    now = time.perf_counter()
    self.totals[name] = self.totals.get(name, 0.0) + now - self.mark - self.inner
    self.mark, self.inner = now, 0.0

  def timed(self, name, fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t
    self.totals[name] = self.totals.get(name, 0.0) + dt
    self.inner += dt
    return out


def build_training(
  method: str,
  *,
  num_classes: int,
  channels: int,
  n: int,
  steps: int,
  seed: int = 0,
  uses_target: bool | None = None,
):
  """The protocol's network, domain classifier, optimizer and eager train step.

  Returns ``(model, disc, opt, train_step)`` with ``train_step(step, x_s, y_s, x_t)``
  (NCHW float32 tensors, ``n`` rows each). ``uses_target`` (default: every method but
  source_only) runs the network on ``[x_s; x_t]``; source_only with ``uses_target=True``
  is the DANN step without its domain classifier (the profile of ``benchmarks.e2e``).
  """
  import torch
  import torch.nn.functional as F

  from benchmarks import torch_refs

  if uses_target is None:
    uses_target = method != "source_only"
  torch.manual_seed(seed)

  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.conv1 = torch.nn.Conv2d(channels, 32, 5)
      self.conv2 = torch.nn.Conv2d(32, 48, 5)
      self.fc1 = torch.nn.Linear(768, 100)
      self.fc2 = torch.nn.Linear(100, 100)
      self.fc = torch.nn.Linear(100, num_classes)

    def forward(self, x):
      x = F.max_pool2d(F.relu(self.conv1(x)), 2)
      x = F.max_pool2d(F.relu(self.conv2(x)), 2)
      # NHWC flattening order, as dtl_jax (same function of the same weights)
      f = x.permute(0, 2, 3, 1).flatten(1)
      h = F.relu(self.fc2(F.relu(self.fc1(f))))
      return self.fc(h), f

  model = Net()
  params = list(model.parameters())
  disc = None
  if method in ("dann", "cdan"):
    width = 768 if method == "dann" else 1024
    disc = torch.nn.Sequential(
      torch.nn.Linear(width, 100), torch.nn.ReLU(), torch.nn.Linear(100, 1)
    )
    params += list(disc.parameters())
  # Flax's initialization (lecun_normal: truncated normal, variance 1 / fan_in; zero
  # biases), so that both frameworks train the same network from the same distribution.
  for mod in [*model.modules(), *(disc.modules() if disc is not None else [])]:
    if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
      fan_in = mod.weight[0].numel()
      std = (1.0 / fan_in) ** 0.5 / 0.87962566103423978
      torch.nn.init.trunc_normal_(mod.weight, std=std, a=-2 * std, b=2 * std)
      torch.nn.init.zeros_(mod.bias)
  if method == "cdan":
    gen = torch.Generator().manual_seed(seed)
    r_f = torch.randn(768, 1024, generator=gen)
    r_g = torch.randn(num_classes, 1024, generator=gen)
  opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=0.0)
  gamma = 10.0 / steps
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (1.0 + gamma * i) ** -0.75)
  ones, zeros = torch.ones(n), torch.zeros(n)
  domain_labels = torch.cat([ones, zeros])

  def coeff(step):
    if method == "dann":  # the paper's schedule
      p = min(max(step / steps, 0.0), 1.0)
      return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0
    return 2.0 / (1.0 + math.exp(-step / 1000.0)) - 1.0  # TLlib's warm start

  def train_step(step, x_s, y_s, x_t):
    model.train()
    if not uses_target:
      logits, _ = model(x_s)
      loss = F.cross_entropy(logits, y_s)
    else:
      logits, f = model(torch.cat([x_s, x_t]))
      loss = F.cross_entropy(logits[:n], y_s)
      if method == "dan":
        loss = loss + torch_refs.mk_mmd_fn(f[:n], f[n:])
      elif method != "source_only":
        h = f
        if method == "cdan":
          g = F.softmax(logits, 1).detach()
          h = (f @ r_f) * (g @ r_g) / math.sqrt(1024.0)
        d_logits = disc(torch_refs.gradient_reverse(h, coeff(step)))[:, 0]
        loss = loss + F.binary_cross_entropy_with_logits(d_logits, domain_labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.detach()

  return model, disc, opt, train_step


def main(argv=None) -> dict:
  args = parse_args(argv)
  harness.pin_threads(args.threads)
  clock = Clock(T_START)
  import numpy as np
  import torch

  harness.set_torch_threads(len(os.sched_getaffinity(0)))
  clock.lap("imports")

  # ------------------------------------------------------------------ data
  d = np.load(args.data)

  def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))

  xs, ys = nchw(d["source_x_train"]), torch.from_numpy(d["source_y_train"].astype(np.int64))
  xt = nchw(d["target_x_train"])
  evals = {
    "source_val": (nchw(d["source_x_val"]), d["source_y_val"]),
    "source_test": (nchw(d["source_x_test"]), d["source_y_test"]),
    "target_test": (nchw(d["target_x_test"]), d["target_y_test"]),
  }
  num_classes = int(d["num_classes"])
  clock.lap("data")

  # ------------------------------------------------------------------ build
  channels = xs.shape[1]
  n = args.batch_size
  method = args.method
  model, disc, opt, train_step = build_training(
    method,
    num_classes=num_classes,
    channels=channels,
    n=n,
    steps=args.steps,
    seed=args.seed,
  )

  # PairSampler's order: epoch e of stream s visits default_rng([seed, s, e]).permutation
  def indices(stream, size, step):
    per_epoch = size // n
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([args.seed, stream, epoch]).permutation(size)
    return torch.from_numpy(perm[k * n : (k + 1) * n])

  os.makedirs(args.workdir, exist_ok=True)
  log = open(os.path.join(args.workdir, "metrics.jsonl"), "w")
  clock.lap("build")

  @torch.no_grad()
  def accuracy(x, y):
    model.eval()
    correct = 0
    for i in range(0, len(x), args.eval_batch_size):
      logits, _ = model(x[i : i + args.eval_batch_size])
      correct += int((logits.argmax(1).numpy() == y[i : i + args.eval_batch_size]).sum())
    return correct / len(x)

  history, best = [], [-1.0]

  def evaluate(step):
    rec = {"step": step, **{k: accuracy(x, y) for k, (x, y) in evals.items()}}
    history.append(rec)
    log.write(json.dumps({"kind": "eval", **rec}) + "\n")
    return rec

  def checkpoint(step, val_acc):
    state = {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict()}
    if disc is not None:
      state["discriminator"] = disc.state_dict()
    path = os.path.join(args.workdir, "latest.pth")
    torch.save(state, path)
    if val_acc > best[0]:
      best[0] = val_acc
      shutil.copyfile(path, os.path.join(args.workdir, "best.pth"))

  # ------------------------------------------------------------------ loop
  window = []
  for step in range(args.steps):
    x_s, y_s = xs[indices(0, len(xs), step)], ys[indices(0, len(xs), step)]
    x_t = xt[indices(1, len(xt), step)]
    window.append(train_step(step, x_s, y_s, x_t))
    done = step + 1
    if done == 1:
      clock.lap("first_step")
    if done % args.log_every == 0 or done == args.steps:
      loss = float(torch.stack(window).mean())
      if not math.isfinite(loss):
        raise RuntimeError(f"loss is NaN/Inf at step {done}")
      log.write(json.dumps({"kind": "train", "step": done, "loss": loss}) + "\n")
      print(f"[{done}/{args.steps}] loss {loss:.4f}", file=sys.stderr, flush=True)
      window = []
    if done % args.eval_every == 0 or done == args.steps:
      rec = clock.timed("eval", evaluate, done)
      clock.timed("checkpoint", checkpoint, done, rec["source_val"])
  clock.lap("steps")
  log.close()
  last = history[-1]
  result = {
    "framework": "torch",
    "method": method,
    "steps": args.steps,
    "last": last,
    "best_source_val_step": max(history, key=lambda r: (r["source_val"], r["step"]))["step"],
    "torch": torch.__version__,
    "torch_threads": torch.get_num_threads(),
  }
  clock.lap("finish")
  timings = {f"{k}_s": round(v, 4) for k, v in clock.totals.items()}
  timings["total_s"] = round(time.perf_counter() - T_START, 4)
  result["timings"] = timings
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
