"""Loss benchmarks: forward + gradient, JAX vs PyTorch, and the matmul bound.

For each loss and size, the implementations are

* ``jax``           -- ``dtl_jax.losses`` under ``jax.jit`` (AOT-compiled; compile time kept apart),
* ``torch_gram``    -- the strongest plain-autograd PyTorch of :mod:`benchmarks.torch_refs` (eager),
* ``torch_fn``      -- MK-MMD / JMMD as a ``torch.autograd.Function`` with a hand-written
  backward (eager; the strongest PyTorch for the kernel losses),
* ``torch_compile`` -- ``torch_gram`` under ``torch.compile`` (its first call, the compile
  time, is reported like JAX's),
* ``dalib``         -- the released TLlib code (``dalib==0.2``) where it has the loss; a
  missing dalib drops only this column.

Gradients: w.r.t. the features for MK-MMD, JMMD and CORAL; w.r.t. the features AND the
discriminator's parameters for DANN / CDAN (what a training step needs), in every
framework. DANN / CDAN use the library's :class:`dtl_jax.models.DomainDiscriminator` on
the JAX side and the same layers (same weights) in PyTorch.

Before anything is timed, all implementations are run once and compared with the JAX
value and gradient (float32; a mismatch is reported and that configuration is not timed).
TLlib's ``[2n, 2n, d]`` difference tensors are estimated first; a configuration whose
estimate exceeds the memory cap is reported as out of memory without being run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import harness, jax_losses, torch_refs

LOSSES = ("mk_mmd", "jmmd", "coral", "cdan", "dann")
NUM_CLASSES = 10
DISC_HIDDEN = 1024


@dataclasses.dataclass
class Problem:
  """Inputs and the implementations of one (loss, n, d) configuration."""

  loss: str
  n: int
  d: int
  jax_fn: Callable[..., Any]  # value_and_grad, to be jitted
  jax_args: tuple
  torch_fn: Callable[..., Any]  # strongest plain-autograd loss
  torch_args: tuple
  torch_wrt: tuple  # tensors the gradient is taken for (features [+ parameters])
  torch_fn_custom: Callable[..., Any] | None = None  # autograd.Function variant
  dalib_fn: Callable[..., Any] | None = None
  dalib_args: tuple = ()
  dalib_wrt: tuple = ()
  dalib_bytes: float = 0.0  # estimated peak bytes of dalib (its [2n, 2n, d] tensors)
  dalib_grad_check: bool = False  # dalib's GRL (warm start, coeff 0 at step 0) scales grads
  dalib_missing: str = ""  # why there is no dalib column ("" = it has one or never had)
  jax_grads_as_torch: Callable[[Any], list] = dataclasses.field(
    default=lambda g: list(g)
  )  # JAX gradient pytree -> list in the order of torch_wrt


def _inputs(n: int, d: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  zs = rng.standard_normal((n, d), dtype=np.float32)
  zt = (rng.standard_normal((n, d), dtype=np.float32) + 0.5).astype(np.float32)
  gs = rng.standard_normal((n, NUM_CLASSES), dtype=np.float32)
  gt = rng.standard_normal((n, NUM_CLASSES), dtype=np.float32)
  return zs, zt, gs, gt


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(1, keepdims=True))
  return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _leaf(a: np.ndarray, grad: bool = True) -> torch.Tensor:
  return torch.from_numpy(np.array(a)).requires_grad_(grad)


def _dalib(build: Callable[[], Any]) -> tuple[Any, str]:
  """``(dalib object, "")`` or ``(None, reason)`` when dalib cannot be imported."""
  try:
    return build(), ""
  except ImportError as err:
    return None, f"dalib not available: {err}"


def _disc_grads_torch_order(dparams: Any) -> list:
  """The library discriminator's parameter gradients in ``Discriminator.parameters()``
  order (layer1.weight, layer1.bias, bn1.weight, bn1.bias, ..., layer3.bias)."""
  out = []
  for name in ("fc1", "bn1", "fc2", "bn2", "fc3"):
    p = dparams[name]
    if name.startswith("fc"):
      out += [np.asarray(p["kernel"]).T, p["bias"]]
    else:
      out += [p["scale"], p["bias"]]
  return out


def make_problem(loss: str, n: int, d: int) -> Problem:
  zs, zt, gs, gt = _inputs(n, d)
  ts, tt = _leaf(zs), _leaf(zt)
  diff_bytes = 4.0 * (2 * n) ** 2 * d
  if loss == "mk_mmd":
    dal, why = _dalib(lambda: torch_refs.dalib_mk_mmd(n))
    return Problem(
      loss,
      n,
      d,
      jax_fn=jax_losses.mk_mmd_value_and_grad(),
      jax_args=(zs, zt),
      torch_fn=torch_refs.mk_mmd,
      torch_args=(ts, tt),
      torch_wrt=(ts, tt),
      torch_fn_custom=torch_refs.mk_mmd_fn,
      dalib_fn=dal,
      dalib_args=(ts, tt),
      dalib_wrt=(ts, tt),
      dalib_bytes=6 * diff_bytes,
      dalib_grad_check=True,
      dalib_missing=why,
    )
  if loss == "jmmd":
    ps, pt = _softmax(gs), _softmax(gt)
    tps, tpt = _leaf(ps, False), _leaf(pt, False)
    dal, why = _dalib(lambda: torch_refs.dalib_jmmd(n))
    return Problem(
      loss,
      n,
      d,
      jax_fn=jax_losses.jmmd_value_and_grad(),
      jax_args=(zs, zt, ps, pt),
      torch_fn=lambda a, b, c, e: torch_refs.jmmd((a, c), (b, e)),
      torch_args=(ts, tt, tps, tpt),
      torch_wrt=(ts, tt),
      torch_fn_custom=lambda a, b, c, e: torch_refs.jmmd_fn((a, c), (b, e)),
      dalib_fn=None if dal is None else (lambda a, b, c, e: dal((a, c), (b, e))),
      dalib_args=(ts, tt, tps, tpt),
      dalib_wrt=(ts, tt),
      dalib_bytes=6 * diff_bytes,
      dalib_grad_check=True,
      dalib_missing=why,
    )
  if loss == "coral":
    return Problem(
      loss,
      n,
      d,
      jax_fn=jax_losses.coral_value_and_grad(),
      jax_args=(zs, zt),
      torch_fn=torch_refs.coral,
      torch_args=(ts, tt),
      torch_wrt=(ts, tt),
    )
  if loss in ("dann", "cdan"):
    width = d if loss == "dann" else d * NUM_CLASSES
    disc = torch_refs.discriminator(width, DISC_HIDDEN)
    v = jax_losses.discriminator_variables(disc)
    wrt = (ts, tt, *disc.parameters())

    def grads(g):
      return [g[0], g[1], *_disc_grads_torch_order(g[2])]

    if loss == "dann":
      dal, why = _dalib(lambda: torch_refs.dalib_dann(torch_refs.WithSigmoid(disc)))
      return Problem(
        loss,
        n,
        d,
        jax_fn=jax_losses.dann_value_and_grad(DISC_HIDDEN),
        jax_args=(zs, zt, v["params"], v["batch_stats"]),
        torch_fn=lambda a, b: torch_refs.dann(disc, a, b),
        torch_args=(ts, tt),
        torch_wrt=wrt,
        dalib_fn=dal,
        dalib_args=(ts, tt),
        dalib_wrt=wrt,
        dalib_missing=why,
        jax_grads_as_torch=grads,
      )
    dal, why = _dalib(lambda: torch_refs.dalib_cdan(torch_refs.WithSigmoid(disc)))
    tgs, tgt = _leaf(gs, False), _leaf(gt, False)
    return Problem(
      loss,
      n,
      d,
      jax_fn=jax_losses.cdan_value_and_grad(DISC_HIDDEN),
      jax_args=(zs, zt, gs, gt, v["params"], v["batch_stats"]),
      torch_fn=lambda a, b, c, e: torch_refs.cdan(disc, c, a, e, b),
      torch_args=(ts, tt, tgs, tgt),
      torch_wrt=wrt,
      dalib_fn=None if dal is None else (lambda a, b, c, e: dal(c, a, e, b)),
      dalib_args=(ts, tt, tgs, tgt),
      dalib_wrt=wrt,
      dalib_missing=why,
      jax_grads_as_torch=grads,
    )
  raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")


def _torch_call(fn: Callable[..., Any], args: tuple, wrt: tuple) -> Callable[[], Any]:
  def call():
    loss = fn(*args)
    grads = torch.autograd.grad(loss, wrt)
    return loss, grads

  return call


def _to_np(x) -> np.ndarray:
  if isinstance(x, torch.Tensor):
    return x.detach().cpu().numpy().astype(np.float64)
  return np.asarray(x, dtype=np.float64)


def _rel_err(g0: Sequence[Any], g1: Sequence[Any]) -> float:
  num = math.sqrt(
    sum(float(np.sum((_to_np(a) - _to_np(b)) ** 2)) for a, b in zip(g0, g1, strict=True))
  )
  den = math.sqrt(sum(float(np.sum(_to_np(a) ** 2)) for a in g0)) + 1e-30
  return num / den


def _agree(
  ref, other, *, check_grads: bool, rtol: float, feature_grads: bool = True
) -> tuple[bool, str]:
  """Value within ``rtol``; gradients (features, then any parameters, as two groups)
  within ``10 rtol`` in relative L2 norm. ``feature_grads=False`` checks only the
  parameter group (dalib's warm-start reversal layer scales the feature gradients)."""
  (v0, g0), (v1, g1) = ref, other
  v0, v1 = float(_to_np(v0)), float(_to_np(v1))
  scale = max(abs(v0), 1e-3)
  ok = abs(v0 - v1) <= rtol * scale
  msg = f"value {v1:.6g} vs jax {v0:.6g}"
  if check_grads:
    g0, g1 = list(g0), list(g1)
    if len(g0) != len(g1):
      return False, msg + f", {len(g1)} gradients vs jax {len(g0)}"
    errs = {}
    if feature_grads:
      errs["features"] = _rel_err(g0[:2], g1[:2])
    if len(g0) > 2:
      errs["parameters"] = _rel_err(g0[2:], g1[2:])
    ok = ok and all(e <= 10 * rtol for e in errs.values())
    msg += ", grad rel. err " + ", ".join(f"{e:.2e} ({k})" for k, e in errs.items())
  return ok, msg


def run_config(
  loss: str,
  n: int,
  d: int,
  *,
  impls: Sequence[str],
  repeats: int,
  min_sample_s: float,
  cap_bytes: float,
  rtol: float = 2e-3,
  budget_s: float | None = None,
  slow_call_s: float | None = None,
) -> dict[str, Any]:
  """Checks and times one configuration; returns a row for the results file.

  ``impls``: any of ``jax``, ``torch_gram``, ``torch_fn``, ``torch_compile``, ``dalib``
  (``torch_fn`` exists for mk_mmd / jmmd only, ``dalib`` for all but coral).
  ``slow_call_s``: when dalib's checked first call takes longer than this, it is reported
  with that one call (status ``slow``), not timed further (TLlib's reference, not one of
  the baselines the targets compare with).
  """
  row: dict[str, Any] = {"loss": loss, "n": n, "d": d, "impls": {}}
  prob = make_problem(loss, n, d)
  jargs = jax.device_put(prob.jax_args)
  compiled, compile_s = harness.jax_compile_seconds(prob.jax_fn, *jargs)
  row["jax_compile_s"] = compile_s
  out = jax.block_until_ready(compiled(*jargs))
  ref = (out[0], prob.jax_grads_as_torch(out[1]))
  calls: dict[str, Callable[[], Any]] = {"jax": lambda: jax.block_until_ready(compiled(*jargs))}
  for impl in impls:
    if impl == "jax":
      continue
    if impl == "dalib":
      if prob.dalib_fn is None:
        if prob.dalib_missing:
          row["impls"]["dalib"] = {"status": "not available", "error": prob.dalib_missing}
        continue
      if prob.dalib_bytes > cap_bytes:
        row["impls"]["dalib"] = {
          "status": "oom",
          "error": f"out of memory: needs ~{prob.dalib_bytes / 2**30:.1f} GiB "
          f"for its [2n, 2n, d] tensors > cap {cap_bytes / 2**30:.1f} GiB; not run",
        }
        continue
      call = _torch_call(prob.dalib_fn, prob.dalib_args, prob.dalib_wrt)
      check_grads = prob.dalib_grad_check
    elif impl == "torch_gram":
      call = _torch_call(prob.torch_fn, prob.torch_args, prob.torch_wrt)
      check_grads = True
    elif impl == "torch_fn":
      if prob.torch_fn_custom is None:
        continue
      call = _torch_call(prob.torch_fn_custom, prob.torch_args, prob.torch_wrt)
      check_grads = True
    elif impl == "torch_compile":
      torch._dynamo.reset()
      cfn = torch.compile(prob.torch_fn, dynamic=False)
      call = _torch_call(cfn, prob.torch_args, prob.torch_wrt)
      check_grads = True
    else:
      raise ValueError(f"impls: unknown implementation {impl!r}")
    t0 = time.perf_counter()
    try:
      out = call()
    except (RuntimeError, MemoryError) as err:
      status = "oom" if harness_is_oom(err) else "error"
      row["impls"][impl] = {"status": status, "error": f"{type(err).__name__}: {err}"[:300]}
      continue
    first = time.perf_counter() - t0
    # dalib's warm-start GRL scales the feature gradients (by 0 at its first call):
    # for dalib's DANN / CDAN only the value and the parameter gradients are compared.
    ok, msg = _agree(
      ref,
      out,
      check_grads=check_grads or len(prob.torch_wrt) > 2,
      feature_grads=check_grads,
      rtol=rtol,
    )
    row["impls"][impl] = {"status": "ok" if ok else "mismatch", "check": msg, "first_call_s": first}
    if impl == "torch_compile":
      row["impls"][impl]["compile_s"] = first
    elif impl == "dalib" and ok and slow_call_s is not None and first > slow_call_s:
      row["impls"][impl].update(status="slow", median_s=first)
      continue
    if ok:
      calls[impl] = call
  timings = harness.time_alternating(
    calls, repeats=repeats, min_sample_s=min_sample_s, warmup=2, budget_s=budget_s
  )
  for name, t in timings.items():
    row["impls"].setdefault(name, {"status": "ok"}).update(t.as_dict())
  row["impls"]["jax"]["compile_s"] = compile_s
  return row


def harness_is_oom(err: BaseException) -> bool:
  text = str(err).lower()
  return isinstance(err, MemoryError) or "memory" in text or "alloc" in text


def run_matmul_limit(
  n: int, d: int, *, repeats: int, min_sample_s: float, budget_s: float | None = None
) -> dict[str, Any]:
  """mk_mmd (value + grad) time versus the two products it cannot avoid, alone.

  The bound: the Gram matrix ``X Xᵀ`` and ONE backward product ``(G + Gᵀ) X`` (the Gram
  matrix is symmetric), ``2 x 2 (2n)^2 d`` flops. The same products are also timed in
  PyTorch: when both frameworks are GEMM-bound, the ratio of their GEMM speeds bounds the
  loss speed-up that any implementation can reach.
  """
  zs, zt, _, _ = _inputs(n, d)
  rng = np.random.default_rng(1)
  x = jnp.asarray(np.concatenate([zs, zt], 0))
  g = jnp.asarray(rng.standard_normal((2 * n, 2 * n), dtype=np.float32))
  mm, _ = harness.jax_compile_seconds(jax_losses.mk_mmd_matmuls, x, g)
  jzs, jzt = jnp.asarray(zs), jnp.asarray(zt)
  mk, _ = harness.jax_compile_seconds(jax_losses.mk_mmd_value_and_grad(), jzs, jzt)
  tx_, tg = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(g))
  t = harness.time_alternating(
    {
      "mk_mmd": lambda: jax.block_until_ready(mk(jzs, jzt)),
      "matmuls": lambda: jax.block_until_ready(mm(x, g)),
      "torch_matmuls": lambda: (tx_ @ tx_.T, tg @ tx_),
    },
    repeats=repeats,
    min_sample_s=min_sample_s,
    budget_s=budget_s,
  )
  flops = 2 * (2 * n) ** 2 * d * 2
  return {
    "n": n,
    "d": d,
    "products": 2,
    "mk_mmd_s": t["mk_mmd"].median_s,
    "matmul_s": t["matmuls"].median_s,
    "ratio": t["mk_mmd"].median_s / t["matmuls"].median_s,
    "matmul_gflops": flops / t["matmuls"].median_s / 1e9,
    "torch_matmul_s": t["torch_matmuls"].median_s,
    "torch_matmul_gflops": flops / t["torch_matmuls"].median_s / 1e9,
    "timings": {k: v.as_dict() for k, v in t.items()},
  }
