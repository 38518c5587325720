"""Loss benchmarks: forward + gradient w.r.t. the features, JAX vs PyTorch, and the matmul limit.

For each loss and size, the implementations are

* ``jax``           -- ``dtl_jax.losses`` under ``jax.jit`` (AOT-compiled; compile time kept apart),
* ``torch_gram``    -- the Gram-form PyTorch reference of :mod:`benchmarks.torch_refs` (eager),
* ``torch_compile`` -- the same under ``torch.compile`` (first call = compile time),
* ``dalib``         -- the released TLlib code (``dalib==0.2``) where it has the loss.

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
  torch_fn: Callable[..., Any]  # Gram-form loss
  torch_args: tuple  # leaves requiring grad first (the features)
  dalib_fn: Callable[..., Any] | None
  dalib_args: tuple
  dalib_bytes: float  # estimated peak bytes of dalib (its [2n, 2n, d] tensors)
  dalib_grad_check: bool  # dalib's GRL (warm start, coeff 0 at step 0) scales its grads


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


def make_problem(loss: str, n: int, d: int) -> Problem:
  zs, zt, gs, gt = _inputs(n, d)
  ts, tt = _leaf(zs), _leaf(zt)
  diff_bytes = 4.0 * (2 * n) ** 2 * d
  if loss == "mk_mmd":
    return Problem(
      loss,
      n,
      d,
      jax_losses.mk_mmd_value_and_grad(),
      (zs, zt),
      torch_refs.mk_mmd,
      (ts, tt),
      torch_refs.dalib_mk_mmd(n),
      (ts, tt),
      6 * diff_bytes,
      True,
    )
  if loss == "jmmd":
    ps, pt = _softmax(gs), _softmax(gt)
    tps, tpt = _leaf(ps, False), _leaf(pt, False)
    dal = torch_refs.dalib_jmmd(n)
    return Problem(
      loss,
      n,
      d,
      jax_losses.jmmd_value_and_grad(),
      (zs, zt, ps, pt),
      lambda a, b, c, e: torch_refs.jmmd((a, c), (b, e)),
      (ts, tt, tps, tpt),
      lambda a, b, c, e: dal((a, c), (b, e)),
      (ts, tt, tps, tpt),
      6 * diff_bytes,
      True,
    )
  if loss == "coral":
    return Problem(
      loss,
      n,
      d,
      jax_losses.coral_value_and_grad(),
      (zs, zt),
      torch_refs.coral,
      (ts, tt),
      None,
      (),
      0.0,
      False,
    )
  if loss == "dann":
    disc = torch_refs.dalib_discriminator(d, DISC_HIDDEN)
    p = jax_losses.discriminator_params(disc)
    logit_disc = torch_refs.Discriminator(disc)
    dal = torch_refs.dalib_dann(disc)
    return Problem(
      loss,
      n,
      d,
      jax_losses.dann_value_and_grad(),
      (zs, zt, p),
      lambda a, b: torch_refs.dann(logit_disc, a, b),
      (ts, tt),
      dal,
      (ts, tt),
      0.0,
      False,
    )
  if loss == "cdan":
    disc = torch_refs.dalib_discriminator(d * NUM_CLASSES, DISC_HIDDEN)
    p = jax_losses.discriminator_params(disc)
    logit_disc = torch_refs.Discriminator(disc)
    dal = torch_refs.dalib_cdan(disc)
    tgs, tgt = _leaf(gs, False), _leaf(gt, False)
    return Problem(
      loss,
      n,
      d,
      jax_losses.cdan_value_and_grad(),
      (zs, zt, gs, gt, p),
      lambda a, b, c, e: torch_refs.cdan(logit_disc, c, a, e, b),
      (ts, tt, tgs, tgt),
      lambda a, b, c, e: dal(c, a, e, b),
      (ts, tt, tgs, tgt),
      0.0,
      False,
    )
  raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")


def _torch_call(fn: Callable[..., Any], args: tuple) -> Callable[[], Any]:
  feats = args[:2]

  def call():
    loss = fn(*args)
    grads = torch.autograd.grad(loss, feats)
    return loss, grads

  return call


def _to_np(x) -> np.ndarray:
  if isinstance(x, torch.Tensor):
    return x.detach().cpu().numpy().astype(np.float64)
  return np.asarray(x, dtype=np.float64)


def _agree(ref, other, *, check_grads: bool, rtol: float) -> tuple[bool, str]:
  (v0, g0), (v1, g1) = ref, other
  v0, v1 = float(_to_np(v0)), float(_to_np(v1))
  scale = max(abs(v0), 1e-3)
  ok = abs(v0 - v1) <= rtol * scale
  msg = f"value {v1:.6g} vs jax {v0:.6g}"
  if check_grads:
    num = math.sqrt(
      sum(float(np.sum((_to_np(a) - _to_np(b)) ** 2)) for a, b in zip(g0, g1, strict=True))
    )
    den = math.sqrt(sum(float(np.sum(_to_np(a) ** 2)) for a in g0)) + 1e-30
    ok = ok and num / den <= 10 * rtol
    msg += f", grad rel. err {num / den:.2e}"
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
) -> dict[str, Any]:
  """Checks and times one configuration; returns a row for the results file."""
  row: dict[str, Any] = {"loss": loss, "n": n, "d": d, "impls": {}}
  try:
    prob = make_problem(loss, n, d)
  except ImportError as err:
    row["error"] = f"not available: {err}"
    return row
  jargs = jax.device_put(prob.jax_args)
  compiled, compile_s = harness.jax_compile_seconds(prob.jax_fn, *jargs)
  row["jax_compile_s"] = compile_s
  ref = jax.block_until_ready(compiled(*jargs))
  ref = (ref[0], ref[1])
  calls: dict[str, Callable[[], Any]] = {"jax": lambda: jax.block_until_ready(compiled(*jargs))}
  for impl in impls:
    if impl == "jax":
      continue
    if impl == "dalib":
      if prob.dalib_fn is None:
        continue
      if prob.dalib_bytes > cap_bytes:
        row["impls"]["dalib"] = {
          "status": "oom",
          "error": f"out of memory: needs ~{prob.dalib_bytes / 2**30:.1f} GiB "
          f"for its [2n, 2n, d] tensors > cap {cap_bytes / 2**30:.1f} GiB; not run",
        }
        continue
      call = _torch_call(prob.dalib_fn, prob.dalib_args)
      check_grads = prob.dalib_grad_check
    elif impl == "torch_gram":
      call = _torch_call(prob.torch_fn, prob.torch_args)
      check_grads = True
    elif impl == "torch_compile":
      torch._dynamo.reset()
      cfn = torch.compile(prob.torch_fn, dynamic=False)
      call = _torch_call(cfn, prob.torch_args)
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
    ok, msg = _agree(ref, out, check_grads=check_grads, rtol=rtol)
    row["impls"][impl] = {"status": "ok" if ok else "mismatch", "check": msg, "first_call_s": first}
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
  """mk_mmd (value + grad) time versus its Gram forward and two backward products alone.

  The same products are also timed in PyTorch: when both frameworks are GEMM-bound, the
  ratio of their GEMM speeds bounds the loss speed-up that any implementation can reach.
  """
  zs, zt, _, _ = _inputs(n, d)
  rng = np.random.default_rng(1)
  x = jnp.asarray(np.concatenate([zs, zt], 0))
  g = jnp.asarray(rng.standard_normal((2 * n, 2 * n), dtype=np.float32))
  mm, mm_compile = harness.jax_compile_seconds(jax_losses.mk_mmd_matmuls, x, g)
  jzs, jzt = jnp.asarray(zs), jnp.asarray(zt)
  mk, _ = harness.jax_compile_seconds(jax_losses.mk_mmd_value_and_grad(), jzs, jzt)
  tx_, tg = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(g))
  t = harness.time_alternating(
    {
      "mk_mmd": lambda: jax.block_until_ready(mk(jzs, jzt)),
      "matmuls": lambda: jax.block_until_ready(mm(x, g)),
      "torch_matmuls": lambda: (tx_ @ tx_.T, tg @ tx_ + tg.T @ tx_),
    },
    repeats=repeats,
    min_sample_s=min_sample_s,
    budget_s=budget_s,
  )
  flops = 2 * (2 * n) ** 2 * d * 3
  return {
    "n": n,
    "d": d,
    "mk_mmd_s": t["mk_mmd"].median_s,
    "matmul_s": t["matmuls"].median_s,
    "ratio": t["mk_mmd"].median_s / t["matmuls"].median_s,
    "matmul_gflops": flops / t["matmuls"].median_s / 1e9,
    "torch_matmul_s": t["torch_matmuls"].median_s,
    "torch_matmul_gflops": flops / t["torch_matmuls"].median_s / 1e9,
    "timings": {k: v.as_dict() for k, v in t.items()},
  }
