"""Training-step benchmarks: LeNet DANN / DAN on 28x28 digits, JAX ``jit`` vs PyTorch.

TLlib's digits protocol: 128 source + 128 target images ``[28, 28, 1]``, LeNet backbone
(conv5-20, pool, ReLU, conv5-50, Dropout2d, pool, ReLU, fc-500, ReLU, Dropout),
bottleneck Linear-256 + BatchNorm + ReLU, linear head (10 classes), SGD (lr 0.01,
Nesterov momentum 0.9, weight decay 1e-3). DANN adds TLlib's DomainDiscriminator
(1024, 1024, BatchNorm) behind a gradient reversal layer; DAN adds MK-MMD on the
bottleneck. One step = forward of ``[x_s; x_t]`` (one fused batch in both frameworks),
backward, optimizer update.

JAX variants (all use :func:`dtl_jax.train.make_train_step` and the library's
``TransferModel`` / ``Bottleneck`` / ``Classifier`` / methods; only the backbone varies):

* ``jax``            -- the library's ``dtl_jax.models.LeNet`` (``nn.Conv`` and
  :func:`dtl_jax.models.max_pool_2x2`, 2x2 max-pooling as reshape + max).
* ``jax_flax_pool``  -- LeNet with ``nn.max_pool`` (``reduce_window``, whose backward is
  XLA's ``select_and_scatter``): the library's LeNet before the pooling change, kept as
  the "before" of the before/after ratio.
* ``jax_patches``    -- ``LeNet(patch_convs=("conv1", "conv2"))``: both convolutions as
  im2col (shifted slices) + one matmul (:class:`dtl_jax.models.PatchConv`).
* ``jax_conv1_patches`` -- ``LeNet(patch_convs=("conv1",))``: im2col for ``conv1`` only
  (1 input channel: XLA's direct convolution is worst there).
* ``jax_bf16``       -- the library's LeNet computing in bfloat16 (parameters float32).
* ``jax_xla_default`` -- the library's LeNet compiled with XLA's default options (jaxlib
  0.10.2 hands convolutions to YNNPACK): the library before issue 15, the "before" of the
  before/after ratio. Every other variant is compiled as the library's ``jit`` driver
  compiles (:mod:`dtl_jax.xla_options`).

The library's step already fuses the domains (one forward of ``[x_s; x_t]``) and uses
NHWC, XLA's native convolution layout on CPU.

The variants live here as experiments; the report proposes the winner for
``dtl_jax.models``. :func:`profile` times each LeNet stage (forward + backward) alone in
both frameworks to show where the time goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import harness
from dtl_jax.models import LeNet, PatchConv, max_pool_2x2

N_PER_DOMAIN = 128
NUM_CLASSES = 10
LR, MOMENTUM, WD = 0.01, 0.9, 1e-3


# ------------------------------------------------------------------ JAX backbone variants


class FlaxPoolLeNet(nn.Module):
  """``dtl_jax.models.LeNet`` before the pooling change: ``nn.max_pool`` (same parameters)."""

  features: int = 500
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    def pool(y):
      return nn.max_pool(y, (2, 2), strides=(2, 2))

    x = nn.Conv(20, (5, 5), padding="VALID", name="conv1")(x)
    x = nn.relu(pool(x))
    x = nn.Conv(50, (5, 5), padding="VALID", name="conv2")(x)
    x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
    x = nn.relu(pool(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.features, name="fc")(x))
    return nn.Dropout(self.dropout, deterministic=not train)(x)


# JAX backbone variants: the library's LeNet with its options, plus the "before" model.
VARIANTS = {
  "jax": {},  # the library's LeNet
  "jax_flax_pool": None,  # the library's LeNet before the pooling change
  "jax_patches": {"patch_convs": ("conv1", "conv2")},
  "jax_conv1_patches": {"patch_convs": ("conv1",)},
  "jax_bf16": {"dtype": jnp.bfloat16},  # bfloat16 compute (precision experiment)
  "jax_xla_default": {},  # the library's LeNet compiled with XLA's defaults (YNNPACK convs)
}
# Variants compiled WITHOUT the library's CPU compiler options (dtl_jax.xla_options): the
# library before issue 15.
XLA_DEFAULT_VARIANTS = ("jax_xla_default",)


def _backbone(variant: str) -> nn.Module:
  if VARIANTS[variant] is None:
    return FlaxPoolLeNet()
  return LeNet(**VARIANTS[variant])


def _method(name: str):
  from dtl_jax import methods

  if name == "dann":
    return methods.DANN()
  return methods.DAN()


def make_jax_step(method: str, variant: str, *, n: int = N_PER_DOMAIN):
  """(jitted step, state, batch) for one JAX variant."""
  from dtl_jax.models import Bottleneck, Classifier, TransferModel
  from dtl_jax.train import create_train_state
  from dtl_jax.train.step import jit_step, make_train_step

  model = TransferModel(_backbone(variant), Bottleneck(256, dropout=0.0), Classifier(NUM_CLASSES))
  meth = _method(method)
  batch = _batch(n)
  # TLlib's SGD: coupled weight decay, Nesterov momentum, constant learning rate here.
  st, tx = create_train_state(
    model,
    meth,
    key=jax.random.key(0),
    example_x=batch["x_s"],
    learning_rate=LR,
    momentum=MOMENTUM,
    nesterov=True,
    weight_decay=WD,
  )
  body = make_train_step(model, meth, tx)
  if variant in XLA_DEFAULT_VARIANTS:
    step = jax.jit(body, donate_argnums=0)
  else:  # as the library compiles it (fit's jit driver)
    step = jit_step(body)
  return step, st, batch


def _batch(n: int, seed: int = 0) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  return {
    "x_s": jnp.asarray(rng.random((n, 28, 28, 1), dtype=np.float32)),
    "y_s": jnp.asarray(rng.integers(0, NUM_CLASSES, n).astype(np.int32)),
    "x_t": jnp.asarray(rng.random((n, 28, 28, 1), dtype=np.float32)),
  }


# ------------------------------------------------------------------ PyTorch side


class TorchLeNetTransfer(torch.nn.Module):
  """TLlib digits LeNet + bottleneck (Linear-256, BN, ReLU) + head, NCHW."""

  def __init__(self):
    super().__init__()
    self.backbone = torch.nn.Sequential(
      torch.nn.Conv2d(1, 20, 5),
      torch.nn.MaxPool2d(2),
      torch.nn.ReLU(),
      torch.nn.Conv2d(20, 50, 5),
      torch.nn.Dropout2d(0.5),
      torch.nn.MaxPool2d(2),
      torch.nn.ReLU(),
      torch.nn.Flatten(),
      torch.nn.Linear(800, 500),
      torch.nn.ReLU(),
      torch.nn.Dropout(0.5),
    )
    self.bottleneck = torch.nn.Sequential(
      torch.nn.Linear(500, 256), torch.nn.BatchNorm1d(256), torch.nn.ReLU()
    )
    self.head = torch.nn.Linear(256, NUM_CLASSES)

  def forward(self, x):
    b = self.bottleneck(self.backbone(x))
    return self.head(b), b


def make_torch_step(
  method: str, *, n: int = N_PER_DOMAIN, compile_model: bool = False, dalib: bool = False
):
  """A zero-argument PyTorch step (TLlib's training loop body) on a fixed batch.

  The strongest eager PyTorch by default: DANN with a two-line gradient reversal
  ``autograd.Function`` and TLlib's discriminator (logits + BCE-with-logits), DAN with the
  hand-written-backward MK-MMD (:func:`benchmarks.torch_refs.mk_mmd_fn`).
  ``dalib=True``: dalib's own losses (its DANN GRL + sigmoid discriminator, its
  ``[2n, 2n, d]`` MK-MMD). ``compile_model=True``: ``torch.compile`` of the model, and
  of the plain-autograd loss (:func:`benchmarks.torch_refs.mk_mmd` for DAN).
  """
  from benchmarks import torch_refs

  torch.manual_seed(0)
  model = TorchLeNetTransfer()
  params = list(model.parameters())
  if method == "dann":
    disc = torch_refs.discriminator(256, 1024)
    params += list(disc.parameters())
    if dalib:
      harness.patch_dalib_numpy()
      domain_loss = torch_refs.dalib_dann(torch_refs.WithSigmoid(disc))
    else:

      def domain_loss(f_s, f_t):
        return torch_refs.dann(disc, *torch_refs.gradient_reverse(torch.cat([f_s, f_t])).chunk(2))

  elif dalib:
    domain_loss = torch_refs.dalib_mk_mmd(n)
  elif compile_model:
    domain_loss = torch_refs.mk_mmd
  else:
    domain_loss = torch_refs.mk_mmd_fn
  opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD, nesterov=True)
  fwd = torch.compile(model) if compile_model else model
  if compile_model:
    domain_loss = torch.compile(domain_loss)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.random((2 * n, 1, 28, 28), dtype=np.float32))
  y = torch.from_numpy(rng.integers(0, NUM_CLASSES, n))
  model.train()

  def step():
    logits, b = fwd(x)
    loss = F.cross_entropy(logits[:n], y) + domain_loss(b[:n], b[n:])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  return step


# ------------------------------------------------------------------ profile


# Per-image input shapes (H, W, C) of each stage and the convolutions' output channels.
LENET_CONVS = {"conv1": ((28, 28, 1), 20), "conv2": ((12, 12, 20), 50)}
LENET_POOLS = {"pool1": (24, 24, 20), "pool2": (8, 8, 50)}


def profile(
  *,
  m: int = 2 * N_PER_DOMAIN,
  repeats: int,
  min_sample_s: float,
  log=print,
  convs: dict[str, tuple[tuple[int, int, int], int]] = LENET_CONVS,
  pools: dict[str, tuple[int, int, int]] = LENET_POOLS,
) -> dict[str, float]:
  """Forward + backward of each stage alone (fused ``m``-image batch), both frameworks.

  The stages are LeNet's by default (``convs``: name -> (input H, W, C), output channels,
  5x5 valid; ``pools``: name -> input H, W, C, 2x2). Convolutions: ``nn.Conv`` as the
  library compiles it (:mod:`dtl_jax.xla_options`), the same with XLA's defaults (YNNPACK),
  and im2col (``patches``); the first convolution sees the data (no input gradient)."""
  from dtl_jax.xla_options import step_compiler_options

  rng = np.random.default_rng(0)
  shapes = {name: ((m, *hwc), cout) for name, (hwc, cout) in convs.items()}
  first = next(iter(convs))
  fns: dict[str, Callable[[], Any]] = {}
  for name, (shape, cout) in shapes.items():
    x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
    lib_options = step_compiler_options()
    for kind, mod, options in (
      ("nn.Conv", nn.Conv(cout, (5, 5), padding="VALID"), lib_options),
      ("nn.Conv xla-default", nn.Conv(cout, (5, 5), padding="VALID"), None),
      ("patches", PatchConv(cout, (5, 5)), lib_options),
    ):
      p = mod.init(jax.random.key(0), x)
      # conv1 sees the data: no input gradient (as in the step); conv2 needs both.
      argnums = (0,) if name == first else (0, 1)
      f = jax.jit(
        jax.grad(lambda p, x, mod=mod: jnp.sum(mod.apply(p, x) ** 2), argnums=argnums),
        compiler_options=options,
      )
      fns[f"jax {name} {kind}"] = lambda f=f, p=p, x=x: jax.block_until_ready(f(p, x))
    tconv = torch.nn.Conv2d(shape[3], cout, 5)
    tx = torch.from_numpy(np.array(np.asarray(x).transpose(0, 3, 1, 2)))
    wrt = list(tconv.parameters()) + ([tx.requires_grad_(True)] if name != first else [])

    def tcall(tconv=tconv, tx=tx, wrt=wrt):
      out = tconv(tx)
      return torch.autograd.grad((out * out).sum(), wrt)

    fns[f"torch {name}"] = tcall
  for name, hwc in pools.items():
    shape = (m, *hwc)
    x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
    for kind, pool in (
      ("nn.max_pool", lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))),
      ("reshape", max_pool_2x2),
    ):
      f = jax.jit(jax.grad(lambda x, pool=pool: jnp.sum(pool(x) ** 2)))
      fns[f"jax {name} {kind}"] = lambda f=f, x=x: jax.block_until_ready(f(x))
    tx = torch.from_numpy(np.array(np.asarray(x).transpose(0, 3, 1, 2))).requires_grad_(True)
    fns[f"torch {name}"] = lambda tx=tx: torch.autograd.grad((F.max_pool2d(tx, 2) ** 2).sum(), tx)
  t = harness.time_alternating(fns, repeats=repeats, min_sample_s=min_sample_s)
  out = {k: v.median_s for k, v in t.items()}
  for k, v in out.items():
    log(f"    profile {k:28s} {v * 1e3:8.3f} ms")
  return out


# ------------------------------------------------------------------ fit loop


def fit_throughput(
  *, steps: int, n: int = N_PER_DOMAIN, compiled: Any = None, state: Any = None, log=print
) -> dict[str, Any]:
  """Steps/s of sampler (prefetched) + jitted DANN step, versus the step alone.

  ``compiled`` / ``state``: an already compiled library DANN step and its state (reused
  from :func:`run` to save a compilation); built here when not given.
  """
  from dtl_jax.data.sampler import PairSampler

  batch = _batch(n)
  if compiled is None:
    step, state, batch = make_jax_step("dann", "jax", n=n)
    compiled = step.lower(state, batch).compile()
  step, st = compiled, state
  rng = np.random.default_rng(0)
  xs = rng.random((4096, 28, 28, 1), dtype=np.float32)
  ys = rng.integers(0, NUM_CLASSES, 4096).astype(np.int32)
  xt = rng.random((4096, 28, 28, 1), dtype=np.float32)
  sampler = PairSampler((xs, ys), (xt, ys), batch_size=n, seed=0)
  st, _ = step(st, batch)
  jax.block_until_ready(st)
  t0 = time.perf_counter()
  for _ in range(steps):
    st, metrics = step(st, batch)
  jax.block_until_ready(metrics)
  step_only = steps / (time.perf_counter() - t0)
  it = sampler.prefetch(buffer_size=2)
  t0 = time.perf_counter()
  for _ in range(steps):
    b = next(it)
    st, metrics = step(st, {"x_s": b.x_source, "y_s": b.y_source, "x_t": b.x_target})
  jax.block_until_ready(metrics)
  with_data = steps / (time.perf_counter() - t0)
  if hasattr(it, "close"):
    it.close()
  log(
    f"    fit loop: {with_data:.1f} steps/s with PairSampler.prefetch, "
    f"{step_only:.1f} steps/s step only"
  )
  return {
    "steps_per_s": with_data,
    "step_only_per_s": step_only,
    "detail": f"{steps} DANN LeNet steps ({n}+{n}), PairSampler over in-memory arrays, prefetch 2",
  }


# ------------------------------------------------------------------ driver


def run(
  *, repeats: int, quick: bool, compile_torch: bool, fit_steps: int, log=print
) -> dict[str, Any]:
  """All step benchmarks. ``quick``: 32 + 32 images, two JAX variants, no torch.compile."""
  rows, notes = [], []
  kept: dict[str, Any] = {}
  n = 32 if quick else N_PER_DOMAIN
  min_sample = 0.01 if quick else 0.1
  for method in ("dann", "dan"):
    fns: dict[str, Callable[[], Any]] = {}
    compile_s: dict[str, float] = {}
    variants = ("jax", "jax_xla_default") if quick else tuple(VARIANTS)
    for v in variants:
      step, st, batch = make_jax_step(method, v, n=n)
      t0 = time.perf_counter()
      holder = [step.lower(st, batch).compile()]
      compile_s[v] = time.perf_counter() - t0
      holder.append(st)

      def call(holder=holder, batch=batch):
        new_state, metrics = holder[0](holder[1], batch)
        holder[1] = new_state
        return jax.block_until_ready(metrics)

      fns[v] = call
      if method == "dann" and v == "jax":
        kept["holder"] = holder
    fns["torch_eager"] = make_torch_step(method, n=n)
    try:
      fns["torch_eager_dalib"] = make_torch_step(method, n=n, dalib=True)
    except ImportError as err:
      notes.append(f"{method}: no dalib variant ({err})")
    if compile_torch and not quick:
      torch._dynamo.reset()
      fns["torch_compile"] = make_torch_step(method, n=n, compile_model=True)
    t = harness.time_alternating(fns, repeats=repeats, min_sample_s=min_sample, warmup=2)
    if "torch_compile" in t:  # its first call compiles (forward and backward graphs)
      compile_s["torch_compile"] = t["torch_compile"].warmup_s
    eager = [k for k in t if k.startswith("torch_eager")]
    best_eager = min(eager, key=lambda k: t[k].median_s)
    torch_t = t[best_eager].median_s
    variants_out = []
    for name, timing in t.items():
      d = {
        "variant": name,
        "status": "ok",
        **timing.as_dict(),
        "torch_over_this": torch_t / timing.median_s,
        "compile_s": compile_s.get(name),
      }
      variants_out.append(d)
      log(
        f"    step {method} {name:24s} {timing.median_s * 1e3:8.2f} ms "
        f"(best torch eager / this = {torch_t / timing.median_s:.2f})"
      )
    jax_names = [v for v in t if v.startswith("jax")]
    best = min(jax_names, key=lambda k: t[k].median_s)
    rows.append(
      {
        "name": f"LeNet {method.upper()} {n}+{n}",
        "variants": variants_out,
        "best_jax": best,
        "best_torch_eager": best_eager,
        "ratio_torch_eager_over_baseline_jax": torch_t / t["jax_xla_default"].median_s,
        "ratio_torch_eager_over_library_jax": torch_t / t["jax"].median_s,
        "ratio_torch_eager_over_best_jax": torch_t / t[best].median_s,
      }
    )
  notes.append(
    "Variants: jax = library LeNet (nn.Conv + reshape max-pool) compiled as the library "
    "compiles its steps (dtl_jax.xla_options: XLA's own convolutions on CPU); "
    "jax_xla_default = the same with XLA's defaults (YNNPACK convolutions), the library "
    "before issue 15 ('before' ratio); jax_flax_pool = LeNet with nn.max_pool (before "
    "issue 8's pooling change); "
    "jax_patches = both convolutions as im2col + matmul; jax_conv1_patches = im2col "
    "for conv1 only; jax_bf16 = library LeNet in bfloat16. torch_eager = the strongest "
    "eager PyTorch (DANN: GRL autograd.Function + logits discriminator; DAN: MK-MMD with "
    "a hand-written backward); torch_eager_dalib = TLlib's (dalib) losses; torch_compile "
    "= torch.compile of the model and the plain-autograd loss (its compile time is the "
    "first call's). Ratios are against the best PyTorch eager step."
  )
  prof = profile(m=2 * n, repeats=repeats, min_sample_s=min_sample, log=log)
  holder = kept["holder"]
  fit = fit_throughput(steps=fit_steps, n=n, compiled=holder[0], state=holder[1], log=log)
  return {
    "rows": rows,
    "notes": notes,
    "profile": prof,
    "fit": fit,
    "gpu": "not run here: no GPU (ResNet-50 224x224 32+32 DANN step is GPU-only)",
  }
