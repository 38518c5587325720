"""The JAX side of the loss benchmarks: ``dtl_jax.losses`` as value-and-grad functions.

Every builder returns a pure function ``(*inputs) -> (loss, grads w.r.t. the features)``
to be ``jax.jit``-ed by the caller. The discriminators of DANN / CDAN are plain functions
of parameters copied from the PyTorch module (TLlib's DomainDiscriminator:
Linear-BN-ReLU x2, Linear, BatchNorm in training mode over the joint batch), so both
frameworks compute the same numbers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _loss(name: str, *modules: str) -> Callable[..., Any]:
  """``dtl_jax.losses.<name>``, or from one of the given submodules."""
  losses = importlib.import_module("dtl_jax.losses")
  if hasattr(losses, name):
    return getattr(losses, name)
  for mod in modules:
    try:
      m = importlib.import_module(f"dtl_jax.losses.{mod}")
    except ImportError:
      continue
    if hasattr(m, name):
      return getattr(m, name)
  raise ImportError(f"dtl_jax.losses.{name} is not available")


# ---------------------------------------------------------------- MK-MMD / JMMD (issue 2)

TILE = 1024  # rows per tile of the tiled MK-MMD ([TILE, 2n] kernel blocks)


def mk_mmd_fn(
  *, tiled: bool = False, n: int | None = None
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """TLlib's MK-MMD value (DAN's five kernels, non-linear estimator) via ``dtl_jax``."""
  mk_mmd = _loss("mk_mmd", "mmd")
  kwargs: dict[str, Any] = {"estimator": "tllib"}
  if tiled:
    kwargs["tile_size"] = TILE if n is None else min(TILE, 2 * n)

  def f(zs, zt):
    return mk_mmd(zs, zt, **kwargs)

  return f


def mk_mmd_value_and_grad(*, tiled: bool = False, n: int | None = None):
  return jax.value_and_grad(mk_mmd_fn(tiled=tiled, n=n), argnums=(0, 1))


def jmmd_fn() -> Callable[..., jax.Array]:
  """TLlib's JMMD value (JAN's default kernels on [features, softmax]), non-linear."""
  jmmd = _loss("jmmd", "mmd")

  def f(zs, zt, ps, pt):
    return jmmd((zs, ps), (zt, pt), estimator="tllib")

  return f


def jmmd_value_and_grad():
  return jax.value_and_grad(jmmd_fn(), argnums=(0, 1))


def coral_value_and_grad():
  coral = _loss("coral", "coral")
  return jax.value_and_grad(lambda zs, zt: coral(zs, zt), argnums=(0, 1))


# ---------------------------------------------------------------- DANN / CDAN (issue 3)


def discriminator_params(torch_disc: Any) -> dict[str, np.ndarray]:
  """Copies a dalib DomainDiscriminator's parameters (float32 NumPy)."""
  d = torch_disc
  get = lambda t: t.detach().cpu().numpy().astype(np.float32)
  return {
    "w1": get(d.layer1.weight).T,
    "b1": get(d.layer1.bias),
    "g1": get(d.bn1.weight),
    "be1": get(d.bn1.bias),
    "w2": get(d.layer2.weight).T,
    "b2": get(d.layer2.bias),
    "g2": get(d.bn2.weight),
    "be2": get(d.bn2.bias),
    "w3": get(d.layer3.weight).T,
    "b3": get(d.layer3.bias),
  }


def _batch_norm(x, gamma, beta, eps=1e-5):
  mean = x.mean(0)
  var = jnp.mean(jnp.square(x - mean), 0)
  return (x - mean) * jax.lax.rsqrt(var + eps) * gamma + beta


def discriminator_apply(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """TLlib DomainDiscriminator logits [m, 1] (BatchNorm in training mode)."""
  h = jax.nn.relu(_batch_norm(x @ p["w1"] + p["b1"], p["g1"], p["be1"]))
  h = jax.nn.relu(_batch_norm(h @ p["w2"] + p["b2"], p["g2"], p["be2"]))
  return h @ p["w3"] + p["b3"]


def dann_value_and_grad():
  """(params, f_s, f_t) -> (loss, (df_s, df_t)); the discriminator runs on [f_s; f_t]."""
  dann_loss = _loss("dann_loss", "adversarial")

  def f(fs, ft, p):
    logits = discriminator_apply(p, jnp.concatenate([fs, ft], 0))
    n = fs.shape[0]
    return dann_loss(logits[:n, 0], logits[n:, 0])

  return jax.value_and_grad(f, argnums=(0, 1))


def cdan_value_and_grad():
  """(g_s, f_s, g_t, f_t, params) -> (loss, (df_s, df_t)); full multilinear map."""
  cdan_features = _loss("cdan_features", "cdan", "adversarial")
  cdan_loss = _loss("cdan_loss", "cdan", "adversarial")

  def f(fs, ft, gs, gt, p):
    h = cdan_features(jnp.concatenate([fs, ft], 0), jnp.concatenate([gs, gt], 0))
    logits = discriminator_apply(p, h)
    n = fs.shape[0]
    return cdan_loss(logits[:n, 0], logits[n:, 0])

  return jax.value_and_grad(f, argnums=(0, 1))


# ---------------------------------------------------------------- the matmul limit


def mk_mmd_matmuls(x: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The unavoidable products of MK-MMD + gradient for X = [z_s; z_t] ([2n, d]).

  Forward: the Gram matrix X Xᵀ ([2n, 2n]). Backward: the cotangent of the Gram matrix
  G ([2n, 2n]) goes back through both factors, Gᵀ X and G X ([2n, d] each).
  """
  return x @ x.T, g @ x + g.T @ x
