"""PyTorch side by side: the real-digit runs trained in PyTorch with TLlib's released modules.

For ``source_only``, ``dann``, ``cdan``, ``dan`` and ``mdd`` on the shifts of
``experiments/configs/real_digits.py``, each (pair, method, seed) run of the JAX study
(``experiments/real_digits.py``, its ``runs.jsonl``; trained here with
``dtl_jax.train.fit`` when missing) is trained again in PyTorch on the same work:

* the same arrays (``dtl_jax.train.load_domains`` and ``split_source_val`` of the run's
  config) and the same batches in the same order (``dtl_jax.data.PairSampler`` with the
  run's seed);
* the same network (``dann_mnist`` or LeNet, bottleneck, head, written in torch with
  NHWC flattening) and the same initial weights: the JAX run's initial parameters (and
  BatchNorm statistics, and CDAN's random-map matrices) are copied into the torch
  modules;
* the same optimizer (``torch.optim.SGD``: momentum, Nesterov, coupled weight decay) and
  learning-rate schedule (``LambdaLR``), the same number of steps and evaluation points;
* the losses are TLlib's (``dalib==0.2``): ``DomainAdversarialLoss`` (with
  ``dalib.modules.DomainDiscriminator`` or the DANN paper's fc-100 classifier),
  ``ConditionalDomainAdversarialLoss``, ``MultipleKernelMaximumMeanDiscrepancy`` with
  ``GaussianKernel(alpha=2^k), k = -3..1``, ``MarginDisparityDiscrepancy`` and
  ``WarmStartGradientReverseLayer`` (the DANN paper's ``2 / (1 + exp(-10 p)) - 1`` is its
  ``alpha = 10, max_iters = num_steps``);
* the same label-free selection: ``dtl_jax.train.selection`` criteria on the torch
  model's outputs at every evaluation point.

What necessarily differs: dropout masks (torch's generator, seeded with the run's seed),
the order of floating-point operations (so runs drift apart within a few hundred
steps), and DAN's estimator (dalib's quadratic MK-MMD weights the within-domain pairs
``1 / (n (n - 1))`` without the diagonal, the JAX run uses the biased estimator's
``1 / n^2``; ``mk_mmd(estimator="tllib")`` is dalib's). dalib 0.2's randomized CDAN map
multiplies ``mm(Rf, f)`` (wrong operand order, fails for a batch that is not
``randomized_dim`` long); the paper's ``mm(f, Rf)`` is patched in, as in
``tests/losses/test_adversarial_dalib.py``. The comparison is of means over seeds.

Writes ``--out`` (default ``experiments/results/torch_digits``): ``runs.jsonl`` (one
line per torch run), ``torch_digits.md`` / ``.json`` / ``.png`` with both frameworks'
accuracies per method and each run's wall-clock.

  python -m experiments.torch_digits [--pairs mnist->mnist_m] [--seeds 0,1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

np.float = float  # type: ignore[attr-defined]  # dalib 0.2's GRL calls np.float

import jax  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from dtl_jax import config as config_lib  # noqa: E402
from dtl_jax import data, methods, models, provenance, report  # noqa: E402
from dtl_jax import runs as runs_lib  # noqa: E402
from dtl_jax.train import create_train_state, fit, load_domains  # noqa: E402
from dtl_jax.train import selection as selection_lib  # noqa: E402
from dtl_jax.train.loop import initial_variables, split_source_val  # noqa: E402
from experiments import real_digits  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "torch_digits"
JAX_RUNS = HERE / "results" / "real_digits" / "runs.jsonl"
METHODS = ("source_only", "dann", "cdan", "dan", "mdd")
NAME = "torch_digits"


# ---------------------------------------------------------------------- the network


class Backbone(nn.Module):
  """``lenet`` / ``dann_mnist`` as in :mod:`dtl_jax.models.lenet`, NHWC flattening."""

  def __init__(self, name: str, in_channels: int, dropout: float = 0.5):
    super().__init__()
    self.name = name
    if name == "lenet":
      self.conv1 = nn.Conv2d(in_channels, 20, 5)
      self.conv2 = nn.Conv2d(20, 50, 5)
      self.drop2d = nn.Dropout2d(dropout)
      self.fc = nn.Linear(800, 500)
      self.drop = nn.Dropout(dropout)
    elif name == "dann_mnist":
      self.conv1 = nn.Conv2d(in_channels, 32, 5)
      self.conv2 = nn.Conv2d(32, 48, 5)
    else:
      raise ValueError(f"no torch backbone {name!r} (lenet, dann_mnist)")

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.name == "lenet":
      x = F.relu(F.max_pool2d(self.conv1(x), 2))
      x = F.relu(F.max_pool2d(self.drop2d(self.conv2(x)), 2))
      x = x.permute(0, 2, 3, 1).flatten(1)  # NHWC order, as the JAX model
      return self.drop(F.relu(self.fc(x)))
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    return x.permute(0, 2, 3, 1).flatten(1)


class Net(nn.Module):
  """backbone -> [Linear, BatchNorm, ReLU, Dropout bottleneck] -> [hidden] -> linear head."""

  def __init__(self, mc, in_channels: int, num_classes: int, features: int):
    super().__init__()
    unknown = sorted(set(mc["backbone_kwargs"]) - {"dropout"})
    if unknown:
      raise ValueError(f"the torch backbone takes no {unknown}")
    self.backbone = Backbone(mc["backbone"], in_channels, **dict(mc["backbone_kwargs"]))
    self.bottleneck = None
    if mc["bottleneck_dim"]:
      b = int(mc["bottleneck_dim"])
      layers: list[nn.Module] = [nn.Linear(features, b)]
      if mc["bottleneck_batch_norm"]:
        layers.append(nn.BatchNorm1d(b))
      layers.append(nn.ReLU())
      if mc["bottleneck_dropout"] > 0:
        layers.append(nn.Dropout(float(mc["bottleneck_dropout"])))
      self.bottleneck = nn.Sequential(*layers)
      features = b
    widths = [features, *mc["head_hidden"], num_classes]
    self.head = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

  def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
    f = self.backbone(x)
    b = f if self.bottleneck is None else self.bottleneck(f)
    z = b
    for i, layer in enumerate(self.head):
      z = layer(z)
      if i < len(self.head) - 1:
        z = F.relu(z)
    return {"features": f, "bottleneck": b, "logits": z}


def _t(x: Any) -> torch.Tensor:
  return torch.from_numpy(np.array(x, np.float32))


def _dense(layer: nn.Linear, p: dict) -> None:
  layer.weight.data.copy_(_t(p["kernel"]).T)
  layer.bias.data.copy_(_t(p["bias"]))


def _bn(layer: nn.BatchNorm1d, p: dict, s: dict) -> None:
  layer.weight.data.copy_(_t(p["scale"]))
  layer.bias.data.copy_(_t(p["bias"]))
  layer.running_mean.copy_(_t(s["mean"]))
  layer.running_var.copy_(_t(s["var"]))


def load_jax_params(net: Net, params: dict, stats: dict) -> None:
  """Copies the JAX model's parameters / BatchNorm statistics into ``net``."""
  bb = params["backbone"]
  for name in ("conv1", "conv2"):
    conv = getattr(net.backbone, name)
    conv.weight.data.copy_(_t(bb[name]["kernel"]).permute(3, 2, 0, 1))
    conv.bias.data.copy_(_t(bb[name]["bias"]))
  if "fc" in bb:
    _dense(net.backbone.fc, bb["fc"])
  if net.bottleneck is not None:
    _dense(net.bottleneck[0], params["bottleneck"]["fc"])
    if isinstance(net.bottleneck[1], nn.BatchNorm1d):
      _bn(net.bottleneck[1], params["bottleneck"]["bn"], stats["bottleneck"]["bn"])
  head = params["head"]
  names = [f"fc{i + 1}" for i in range(len(net.head) - 1)] + ["fc"]
  for layer, name in zip(net.head, names, strict=True):
    _dense(layer, head[name])


# ----------------------------------------------------------------- the method losses


def discriminator(hidden: Sequence[int], batch_norm: bool, in_features: int) -> nn.Module:
  """dalib's DomainDiscriminator (hidden (h, h), BatchNorm), or the fc-ReLU stack."""
  from dalib.modules.domain_discriminator import DomainDiscriminator

  if batch_norm:
    if len(hidden) != 2 or hidden[0] != hidden[1]:
      raise ValueError(f"dalib's DomainDiscriminator has two equal hidden layers, got {hidden}")
    return DomainDiscriminator(in_features, hidden[0])
  layers: list[nn.Module] = []
  for a, b in zip([in_features, *hidden[:-1]], hidden, strict=True):
    layers += [nn.Linear(a, b), nn.ReLU()]
  return nn.Sequential(*layers, nn.Linear(hidden[-1], 1), nn.Sigmoid())


def load_discriminator(module: nn.Module, params: dict, stats: dict, batch_norm: bool) -> None:
  if batch_norm:
    for i, (lin, bn) in enumerate(((module.layer1, module.bn1), (module.layer2, module.bn2)), 1):
      _dense(lin, params[f"fc{i}"])
      _bn(bn, params[f"bn{i}"], stats[f"bn{i}"])
    _dense(module.layer3, params["fc3"])
    return
  linears = [m for m in module if isinstance(m, nn.Linear)]
  for i, lin in enumerate(linears, 1):
    _dense(lin, params[f"fc{i}"])


def _patched_randomized_map(self, f, g):
  return torch.mm(f, self.Rf) * torch.mm(g, self.Rg) / np.sqrt(float(self.output_dim))


class TorchMethod(nn.Module):
  """The transfer loss of one method with TLlib's modules, initialized from the JAX state."""

  def __init__(self, name: str, method: Any, state: Any, num_steps: int, feat_dim: int, c: int):
    super().__init__()
    from dalib.adaptation.cdan import ConditionalDomainAdversarialLoss
    from dalib.adaptation.dan import MultipleKernelMaximumMeanDiscrepancy
    from dalib.adaptation.dann import DomainAdversarialLoss
    from dalib.adaptation.mdd import MarginDisparityDiscrepancy
    from dalib.modules.grl import WarmStartGradientReverseLayer
    from dalib.modules.kernels import GaussianKernel

    self.name = name
    self.trade_off = float(getattr(method, "trade_off", 0.0))
    extra_p = jax.tree.map(np.asarray, state.params["extra"])
    extra_s = jax.tree.map(np.asarray, state.batch_stats["extra"])

    def grl(schedule: str, hi: float, max_iters: float):
      if schedule == "dann":
        return WarmStartGradientReverseLayer(
          alpha=10.0, lo=0.0, hi=1.0, max_iters=num_steps, auto_step=True
        )
      if schedule != "warm_start":
        raise ValueError(f"no torch GRL schedule {schedule!r}")
      return WarmStartGradientReverseLayer(
        alpha=1.0, lo=0.0, hi=hi, max_iters=max_iters, auto_step=True
      )

    if name == "dann":
      d = discriminator(method.hidden, method.batch_norm, feat_dim)
      load_discriminator(d, extra_p["discriminator"], extra_s["discriminator"], method.batch_norm)
      self.loss = DomainAdversarialLoss(d)
      self.loss.grl = grl(method.schedule, method.hi, method.max_iters)
    elif name == "cdan":
      use_random = method._use_random(feat_dim, c)
      in_dim = method.randomized_dim if use_random else feat_dim * c
      d = discriminator(method.hidden, method.batch_norm, in_dim)
      load_discriminator(d, extra_p["discriminator"], extra_s["discriminator"], method.batch_norm)
      self.loss = ConditionalDomainAdversarialLoss(
        d,
        entropy_conditioning=method.entropy_conditioning,
        randomized=use_random,
        num_classes=c,
        features_dim=feat_dim,
        randomized_dim=method.randomized_dim,
      )
      self.loss.grl = grl(method.schedule, method.hi, method.max_iters)
      if use_random:  # the JAX run's matrices, and dalib's operand order fixed
        from dtl_jax import losses

        r_f, r_g = losses.randomized_map_matrices(  # as CDAN draws them for float32 features
          jax.random.key(method.map_seed), feat_dim, c, method.randomized_dim, dtype=np.float32
        )
        self.loss.map.Rf, self.loss.map.Rg = _t(r_f), _t(r_g)
        self.loss.map.forward = _patched_randomized_map.__get__(self.loss.map)
    elif name == "dan":
      alphas = [float(m) for m in method.multipliers]
      self.kernels = [GaussianKernel(alpha=a) for a in alphas]
      self.loss = MultipleKernelMaximumMeanDiscrepancy(self.kernels, linear=False)
    elif name == "mdd":
      self.adv_head = nn.Linear(feat_dim, c)
      _dense(self.adv_head, extra_p["adversarial_head"]["fc"])
      self.grl = grl(method.schedule, method.hi, method.max_iters)
      self.loss = MarginDisparityDiscrepancy(margin=method.margin)
    elif name != "source_only":
      raise ValueError(f"no torch version of {name!r}")

  def transfer(self, out_s: dict, out_t: dict) -> torch.Tensor:
    f_s, f_t = out_s["bottleneck"], out_t["bottleneck"]
    if self.name == "dann":
      return self.loss(f_s, f_t)
    if self.name == "cdan":
      return self.loss(out_s["logits"], f_s, out_t["logits"], f_t)
    if self.name == "dan":
      return self.loss(f_s, f_t)
    adv = self.adv_head(self.grl(torch.cat([f_s, f_t])))
    n = f_s.shape[0]
    return self.loss(out_s["logits"], adv[:n], out_t["logits"], adv[n:])


# ----------------------------------------------------------------------- one run


def jax_initial_state(config):
  """What ``dtl_jax.train.fit`` builds before its first step (same calls, same keys)."""
  source, target = load_domains(config)
  source_train, source_val = split_source_val(source, config.data.source_val_fraction, config.seed)
  eval_model = models.build(config.model, num_classes=source.num_classes)
  method = methods.build(config.method, **dict(config.method_kwargs))
  key = jax.random.key(config.seed)
  variables = initial_variables(config, eval_model, key, source_train.x_train[:1])
  setup = method.setup(
    methods.SetupContext(
      model=eval_model,
      model_variables=variables,
      init_from=config.init_from,
      source_inputs=source_train.x_train,
      target_inputs=target.x_train,
      seed=config.seed,
      load_run=None,
    )
  )
  state, _ = create_train_state(
    eval_model,
    method,
    key=key,
    example_x=source_train.x_train[:2],
    model_variables=variables,
    extra_variables=setup.extra_variables,
    freeze=tuple(config.model.freeze),
    **dict(config.optim),
  )
  return state, method, source, target, source_train, source_val


def _nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


@torch.no_grad()
def _predict(net: Net, x: np.ndarray, batch: int = 500) -> dict[str, np.ndarray]:
  net.eval()
  outs: dict[str, list] = {}
  for i in range(0, len(x), batch):
    o = net(_nchw(x[i : i + batch]))
    o["probs"] = F.softmax(o["logits"], -1)
    for k, v in o.items():
      outs.setdefault(k, []).append(v.numpy())
  net.train()
  return {k: np.concatenate(v) for k, v in outs.items()}


def build_torch(config) -> dict[str, Any]:
  """The torch network, loss, optimizer, schedule and sampler of a run of ``config``,
  initialized from the JAX run's initial state (see the module docstring)."""
  torch.manual_seed(int(config.seed))
  state, method, source, target, source_train, source_val = jax_initial_state(config)
  c = source.num_classes
  params = jax.tree.map(np.asarray, state.params["model"])
  stats = jax.tree.map(np.asarray, state.batch_stats["model"])
  with torch.no_grad():
    feat = (
      Backbone(config.model.backbone, source.input_shape[-1])
      .eval()(_nchw(source.x_train[:2]))
      .shape[1]
    )
  net = Net(config.model, source.input_shape[-1], c, feat)
  load_jax_params(net, params, stats)
  feat_dim = int(config.model.bottleneck_dim) or feat
  tm = TorchMethod(config.method, method, state, int(config.train.num_steps), feat_dim, c)
  o = config.optim
  if o.kind != "sgd" or dict(o.multipliers) not in ({"backbone": 1.0}, {}):
    raise ValueError("the torch runner covers the SGD protocols without lr multipliers")
  opt = torch.optim.SGD(
    list(net.parameters()) + list(tm.parameters()),
    lr=o.learning_rate,
    momentum=o.momentum,
    nesterov=bool(o.nesterov),
    weight_decay=o.weight_decay,
  )
  sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda i: (1.0 + o.lr_gamma * i) ** (-o.lr_decay) if o.lr_gamma else 1.0
  )
  sampler = data.PairSampler(
    source_train,
    target,
    batch_size=config.data.batch_size,
    target_batch_size=config.data.target_batch_size or config.data.batch_size,
    seed=config.seed,
  )
  net.train()
  tm.train()
  return dict(
    net=net,
    method=tm,
    opt=opt,
    sched=sched,
    sampler=sampler,
    source=source,
    target=target,
    source_val=source_val,
  )


def torch_step(parts: dict[str, Any], step: int) -> float:
  """One training step (``step`` counts from 0) on the run's ``step``-th batch; the loss."""
  net, tm = parts["net"], parts["method"]
  b = parts["sampler"].batch(step)
  x_s, x_t = _nchw(b.x_source), _nchw(b.x_target)
  y_s = torch.from_numpy(np.asarray(b.y_source, np.int64))
  n = x_s.shape[0]
  out = net(torch.cat([x_s, x_t]))  # one forward of [x_s; x_t], as the JAX step
  out_s = {k: v[:n] for k, v in out.items()}
  out_t = {k: v[n:] for k, v in out.items()}
  loss = F.cross_entropy(out_s["logits"], y_s)
  if tm.name != "source_only":
    loss = loss + tm.trade_off * tm.transfer(out_s, out_t)
  if not torch.isfinite(loss):
    raise FloatingPointError(f"torch loss is {loss.item()} at step {step + 1}")
  parts["opt"].zero_grad()
  loss.backward()
  parts["opt"].step()
  parts["sched"].step()
  return float(loss.item())


def train_torch(config) -> dict[str, Any]:
  """One torch run of ``config``; returns the accuracies (%) and timings."""
  t0 = time.perf_counter()
  parts = build_torch(config)
  net, source, target, source_val = (
    parts["net"],
    parts["source"],
    parts["target"],
    parts["source_val"],
  )
  t_build = time.perf_counter() - t0
  steps, every = int(config.train.num_steps), int(config.train.eval_every)
  history, t_loop, t_eval = [], 0.0, 0.0
  for step in range(1, steps + 1):
    ts = time.perf_counter()
    torch_step(parts, step - 1)
    t_loop += time.perf_counter() - ts
    if step % every == 0 or step == steps:
      te = time.perf_counter()
      val = _predict(net, source_val[0])
      tt = _predict(net, target.x_train)
      scores = selection_lib.criteria_scores(
        source_val_logits=val["logits"],
        source_val_labels=source_val[1],
        source_val_features=val["bottleneck"],
        target_probs=tt["probs"],
        target_features=tt["bottleneck"],
        seed=int(config.seed),
      )
      acc_t = float(np.mean(_predict(net, target.x_test)["logits"].argmax(-1) == target.y_test))
      acc_s = float(np.mean(_predict(net, source.x_test)["logits"].argmax(-1) == source.y_test))
      history.append(
        {"step": step, "scores": scores, "oracle_target_acc": acc_t, "source_test_acc": acc_s}
      )
      t_eval += time.perf_counter() - te
  picks = selection_lib.select(history, tuple(config.train.selection))
  sel = picks[runs_lib.DEFAULT_SELECTION]
  return {
    "selected": 100 * sel["target_acc"],
    "selected_step": sel["step"],
    "last": 100 * history[-1]["oracle_target_acc"],
    "oracle": 100 * max(h["oracle_target_acc"] for h in history),
    "source_acc": 100 * history[-1]["source_test_acc"],
    "by_criterion": {k: 100 * v["target_acc"] for k, v in picks.items() if k != "last"},
    "history": [
      {
        "step": h["step"],
        "scores": h["scores"],
        "target_acc": 100 * h["oracle_target_acc"],
        "source_acc": 100 * h["source_test_acc"],
      }
      for h in history
    ],
    "seconds": time.perf_counter() - t0,
    "seconds_build": t_build,
    "seconds_train_loop": t_loop,
    "seconds_eval": t_eval,
    "steps": steps,
  }


# ----------------------------------------------------------------------- the study


def _load(path: Path) -> dict[tuple, dict]:
  out = {}
  if path.exists():
    for line in path.read_text().splitlines():
      r = runs_lib.reselect(json.loads(line))
      out[(r["pair"], r["method"], r["seed"])] = r
  return out


def run(
  study, methods_: Sequence[str], *, out: Path, jax_runs: Path, train_jax: bool = True
) -> tuple[dict, dict]:
  """Trains the missing torch runs (and, with ``train_jax``, the JAX runs absent from
  ``jax_runs``)."""
  torch.set_num_threads(1)
  torch_done = _load(out / "runs.jsonl")
  jax_done = _load(jax_runs)
  jax_done.update(_load(out / "jax_runs.jsonl"))
  for pair in study.pairs:
    label = pair.replace("->", "→")
    source, _, target = pair.partition("->")
    for seed in study.seeds:
      for m in methods_:
        key = (label, m, int(seed))
        config = real_digits.run_config(m, pair, seed, study)
        if train_jax and (key not in jax_done or "error" in jax_done[key]):
          print(f"JAX   {label} seed {seed} {m}", flush=True)
          t0 = time.perf_counter()
          wd = out / "runs" / f"{source}-{target}" / f"{m}_seed{seed}"
          result = fit(config, wd, overwrite=True)
          s = runs_lib.result_summary(result)
          rec = {"pair": label, "method": m, "seed": int(seed), **s}
          rec.update(seconds=time.perf_counter() - t0, git_commit=provenance.git_commit())
          rec["history"] = real_digits._history(result)
          rec.pop("steps", None)
          jax_done[key] = rec
          with open(out / "jax_runs.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if key in torch_done:
          continue
        print(f"torch {label} seed {seed} {m}", flush=True)
        load = os.getloadavg()[0]
        try:
          r = train_torch(config)
        except Exception as e:  # one failing run must not lose the others
          r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
          print(f"    FAILED: {r['error']}", flush=True)
        rec = {"pair": label, "method": m, "seed": int(seed), **r, "load_average_at_start": load}
        rec["git_commit"] = provenance.git_commit()
        if "error" not in r:
          j = jax_done.get(key)
          print(
            f"    torch selected {r['selected']:.1f} last {r['last']:.1f} ({r['seconds']:.0f} s)"
            + (
              f"; JAX selected {j['selected']:.1f} last {j['last']:.1f} ({j['seconds']:.0f} s)"
              if j and "error" not in j
              else ""
            ),
            flush=True,
          )
        torch_done[key] = rec
        with open(out / "runs.jsonl", "a") as f:
          f.write(json.dumps(rec) + "\n")
  return jax_done, torch_done


def _ms(vals: list[float]) -> tuple[float, float] | None:
  return report.mean_std(vals) if vals else None


def write_results(study, methods_, jax_done, torch_done, *, out: Path) -> dict[str, Path]:
  rows = []
  for pair in study.pairs:
    label = pair.replace("->", "→")
    for m in methods_:
      j = [jax_done.get((label, m, int(s))) for s in study.seeds]
      t = [torch_done.get((label, m, int(s))) for s in study.seeds]
      both = [
        (a, b)
        for a, b in zip(j, t, strict=True)
        if a and b and "error" not in a and "error" not in b
      ]
      if not both:
        continue
      ja, tb = [a for a, _ in both], [b for _, b in both]
      row = {"pair": label, "method": m, "n_seeds": len(both)}
      for k in ("selected", "last", "oracle"):
        row[f"jax_{k}"] = _ms([a[k] for a in ja])
        row[f"torch_{k}"] = _ms([b[k] for b in tb])
      row["diff_last"] = f"{row['jax_last'][0] - row['torch_last'][0]:+.1f}"
      row["jax_s"] = round(float(np.mean([a["seconds"] for a in ja])))
      row["torch_s"] = round(float(np.mean([b["seconds"] for b in tb])))
      row["torch_loop_s"] = round(float(np.mean([b["seconds_train_loop"] for b in tb])))
      rows.append(row)
  columns = [
    ("pair", "shift"),
    ("method", "method"),
    ("jax_selected", f"dtl_jax selected ({runs_lib.DEFAULT_SELECTION})"),
    ("torch_selected", f"torch selected ({runs_lib.DEFAULT_SELECTION})"),
    ("jax_last", "dtl_jax last"),
    ("torch_last", "torch last"),
    ("diff_last", "Δ last (jax − torch)"),
    ("jax_oracle", "dtl_jax ORACLE"),
    ("torch_oracle", "torch ORACLE"),
    ("n_seeds", "seeds"),
    ("jax_s", "dtl_jax s/run"),
    ("torch_s", "torch s/run"),
    ("torch_loop_s", "torch train-loop s"),
  ]
  per_run = []
  for (pair, m, seed), b in sorted(torch_done.items()):
    a = jax_done.get((pair, m, seed))
    if not a or "error" in a or "error" in b:
      continue
    per_run.append(
      {
        "pair": pair,
        "method": m,
        "seed": seed,
        "jax_last": a["last"],
        "torch_last": b["last"],
        "jax_selected": a["selected"],
        "torch_selected": b["selected"],
        "jax_s": round(a["seconds"]),
        "torch_s": round(b["seconds"]),
      }
    )
  example = real_digits.run_config("dann", study.pairs[0], study.seeds[0], study)
  meta = provenance.run_metadata(config=example, seeds=study.seeds)
  meta["torch_threads"] = 1
  meta["study"] = config_lib.config_to_dict(study)
  labels = [f"{r['pair']} {r['method']}" for r in rows]
  report.bar_plot(
    out / f"{NAME}.png",
    labels,
    {
      "dtl_jax (last step)": [r["jax_last"][0] for r in rows],
      "PyTorch + TLlib (last step)": [r["torch_last"][0] for r in rows],
    },
    errors={
      "dtl_jax (last step)": [r["jax_last"][1] for r in rows],
      "PyTorch + TLlib (last step)": [r["torch_last"][1] for r in rows],
    },
    ylabel="target test accuracy (%)",
    title="same network, data, batches, schedules, seeds and initial weights",
    footer=report.footer_text(meta),
  )
  notes = [
    "Each row: the runs of `experiments/real_digits.py` (dtl_jax, `fit`) and the same "
    "runs in PyTorch with TLlib's dalib 0.2 losses (`experiments/torch_digits.py`): same "
    "arrays, same batches in the same order (dtl_jax's PairSampler), same network and "
    "initial weights (copied from the JAX run's initial state, CDAN's random map "
    "included), same SGD, learning-rate and GRL schedules, same evaluation points and "
    "label-free criteria. Necessarily different: dropout masks, floating-point "
    "operation order, and DAN's within-domain MMD weights (dalib's quadratic estimator "
    "drops the diagonal). Target test accuracy (%), mean ± std over the seeds both "
    "frameworks finished.",
    "Wall-clock per run (s) includes building the data and model, training, and the "
    "evaluations with all five label-free criteria; `torch train-loop s` is the "
    "training loop alone. Both frameworks ran on one CPU core of the shared 2-core "
    "machine (JAX: XLA single-threaded; torch: torch.set_num_threads(1)) next to other "
    "users' jobs; each run's load average is in the JSON.",
  ]
  return report.write_report(
    out,
    NAME,
    title="dtl_jax vs PyTorch + TLlib (dalib 0.2) on the real digit shifts",
    rows=rows,
    columns=columns,
    metadata=meta,
    notes=notes,
    figures=[f"{NAME}.png"],
    extra={"per_run": per_run, "torch_runs": list(torch_done.values())},
  )


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default=str(DEFAULT_OUT))
  p.add_argument("--jax-runs", default=str(JAX_RUNS), help="runs.jsonl of the JAX study")
  p.add_argument("--methods", default=",".join(METHODS))
  p.add_argument("--pairs", default=None)
  p.add_argument("--seeds", default=None)
  p.add_argument("--quick", action="store_true", help="tiny CI smoke size")
  p.add_argument("--report-only", action="store_true")
  p.add_argument(
    "--no-jax",
    action="store_true",
    help="train only the torch runs (the JAX study fills --jax-runs separately)",
  )
  args = p.parse_args(argv)
  study = config_lib.load_config(
    f"{real_digits.STUDY}:quick" if args.quick else str(real_digits.STUDY)
  )
  if args.pairs:
    study.pairs = tuple(x.strip() for x in args.pairs.split(","))
  if args.seeds:
    study.seeds = tuple(int(s) for s in args.seeds.split(","))
  methods_ = tuple(m.strip() for m in args.methods.split(","))
  bad = sorted(set(methods_) - set(METHODS))
  if bad:
    print(f"torch_digits: error: no torch version of {bad}; choose from {METHODS}", file=sys.stderr)
    return 2
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.report_only:
    jax_done = _load(Path(args.jax_runs))
    jax_done.update(_load(out / "jax_runs.jsonl"))
    torch_done = _load(out / "runs.jsonl")
  else:
    real_digits.enable_compilation_cache()
    jax_done, torch_done = run(
      study, methods_, out=out, jax_runs=Path(args.jax_runs), train_jax=not args.no_jax
    )
  paths = write_results(study, methods_, jax_done, torch_done, out=out)
  print(Path(paths["md"]).read_text().split("## Provenance")[0])
  return 0


if __name__ == "__main__":
  sys.exit(main())
