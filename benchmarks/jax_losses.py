"""The JAX side of the loss benchmarks: ``dtl_jax.losses`` as value-and-grad functions.

Every builder returns a pure function ``(*inputs) -> (loss, grads)`` to be ``jax.jit``-ed
by the caller: gradients w.r.t. the features for the kernel losses and CORAL, w.r.t. the
features AND the discriminator's parameters for DANN / CDAN (what training needs; the
PyTorch side computes the same). The discriminator of DANN / CDAN is the library's
:class:`dtl_jax.models.DomainDiscriminator` (TLlib's layers: Linear-BN-ReLU x2, Linear,
BatchNorm in training mode over the joint batch) with the weights of the PyTorch module,
so both frameworks compute the same numbers.
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


def discriminator_variables(torch_disc: Any, dtype: Any = np.float32) -> dict[str, Any]:
  """``{"params", "batch_stats"}`` of :class:`dtl_jax.models.DomainDiscriminator` with the
  weights of a PyTorch TLlib discriminator (:class:`benchmarks.torch_refs.Discriminator`
  or dalib's; both name their layers ``layer1, bn1, layer2, bn2, layer3``)."""
  d = torch_disc

  def get(t):
    return t.detach().cpu().numpy().astype(dtype)

  def dense(layer):
    return {"kernel": get(layer.weight).T, "bias": get(layer.bias)}

  def bn(layer):
    return {"scale": get(layer.weight), "bias": get(layer.bias)}

  def stats(layer):
    return {"mean": get(layer.running_mean), "var": get(layer.running_var)}

  return {
    "params": {
      "fc1": dense(d.layer1),
      "bn1": bn(d.bn1),
      "fc2": dense(d.layer2),
      "bn2": bn(d.bn2),
      "fc3": dense(d.layer3),
    },
    "batch_stats": {"bn1": stats(d.bn1), "bn2": stats(d.bn2)},
  }


def library_discriminator(hidden: int = 1024):
  """The library's module: ``dtl_jax.models.DomainDiscriminator`` (TLlib's layers)."""
  from dtl_jax.models import DomainDiscriminator

  return DomainDiscriminator(hidden=(hidden, hidden), batch_norm=True)


def _disc_logits(module, params, batch_stats, x):
  """Training-mode logits ``[m]`` (BatchNorm over the joint batch, as in the train step)."""
  logits, _ = module.apply(
    {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
  )
  return logits


def dann_value_and_grad(hidden: int = 1024):
  """``(f_s, f_t, params, batch_stats) -> (loss, (df_s, df_t, dparams))``.

  The library's discriminator runs on ``[f_s; f_t]``; the gradient covers the features
  AND the discriminator's parameters, as training needs (and as the PyTorch side
  computes).
  """
  dann_loss = _loss("dann_loss", "adversarial")
  module = library_discriminator(hidden)

  def f(fs, ft, params, batch_stats):
    logits = _disc_logits(module, params, batch_stats, jnp.concatenate([fs, ft], 0))
    n = fs.shape[0]
    return dann_loss(logits[:n], logits[n:])

  return jax.value_and_grad(f, argnums=(0, 1, 2))


def cdan_value_and_grad(hidden: int = 1024):
  """``(f_s, f_t, g_s, g_t, params, batch_stats) -> (loss, (df_s, df_t, dparams))``; full
  multilinear map, the library's discriminator."""
  cdan_features = _loss("cdan_features", "cdan", "adversarial")
  cdan_loss = _loss("cdan_loss", "cdan", "adversarial")
  module = library_discriminator(hidden)

  def f(fs, ft, gs, gt, params, batch_stats):
    h = cdan_features(jnp.concatenate([fs, ft], 0), jnp.concatenate([gs, gt], 0))
    logits = _disc_logits(module, params, batch_stats, h)
    n = fs.shape[0]
    return cdan_loss(logits[:n], logits[n:])

  return jax.value_and_grad(f, argnums=(0, 1, 4))


# ---------------------------------------------------------------- the matmul bound


def mk_mmd_matmuls(x: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The products MK-MMD + gradient cannot avoid, for X = [z_s; z_t] ([2n, d]).

  Forward: the Gram matrix X Xᵀ ([2n, 2n]). Backward: the Gram matrix is symmetric, so
  its cotangent G reaches X as (G + Gᵀ) X -- ONE [2n, 2n] x [2n, d] product (autodiff of
  a general product would spend two, G X and Gᵀ X). ``g`` stands for G + Gᵀ.
  """
  return x @ x.T, g @ x
