"""Gradient reversal layer (GRL) and its coefficient schedules.

The GRL of Ganin & Lempitsky (ICML 2015) / Ganin et al. (JMLR 2016) is the identity in
the forward pass and multiplies the incoming gradient by ``-coeff`` in the backward pass,
so a feature extractor is trained to *maximise* a domain classifier's loss while the
classifier minimises it, all with one ``jax.grad``.

Schedules are optax-style callables ``step -> coeff`` that can be evaluated inside
``jax.jit`` on a traced step counter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dtl_jax import _validation as V

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]


@jax.custom_vjp
def _reverse(x: Any, coeff: jax.Array) -> Any:
  return x


def _reverse_fwd(x, coeff):
  return x, coeff


def _scale_cotangent(g, coeff):
  if g.dtype == jax.dtypes.float0:  # integer leaves: nothing to reverse
    return g
  return (-coeff).astype(g.dtype) * g


def _reverse_bwd(coeff, g):
  return (jax.tree.map(lambda leaf: _scale_cotangent(leaf, coeff), g), jnp.zeros_like(coeff))


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reverse(x: Any, coeff: jax.typing.ArrayLike = 1.0) -> Any:
  r"""Gradient reversal: identity forward, gradient times :math:`-\lambda` backward.

  .. math::
      R_\lambda(x) = x, \qquad \frac{\partial R_\lambda}{\partial x} = -\lambda I.

  (Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015.)

  Args:
    x: any pytree of arrays (e.g. features ``[n, d]`` or a dict of them). Integer
      leaves pass through unchanged.
    coeff: the scalar :math:`\lambda`; may be a traced value (e.g. a schedule evaluated
      on the step counter inside ``jit``). It receives a zero gradient.

  Returns:
    ``x`` unchanged (same pytree, dtypes and values).

  Raises:
    ValueError: if ``coeff`` is not a scalar.
  """
  coeff = jnp.asarray(coeff)
  if coeff.ndim != 0:
    raise ValueError(f"`coeff` must be a scalar, got shape {tuple(coeff.shape)}.")
  if not jnp.issubdtype(coeff.dtype, jnp.floating):
    coeff = coeff.astype(jnp.result_type(float))
  return _reverse(x, coeff)


def warm_start_schedule(
  *, hi: float = 1.0, lo: float = 0.0, alpha: float = 1.0, max_iters: float = 1000
) -> Schedule:
  r"""TLlib's warm-start GRL coefficient, as ``WarmStartGradientReverseLayer`` computes it.

  .. math::
      \lambda(i) = \frac{2(hi - lo)}{1 + \exp(-\alpha\, i / N)} - (hi - lo) + lo

  with :math:`i` the step and :math:`N` = ``max_iters``. It starts at ``lo`` and tends
  to ``hi``; it is not clipped (past ``max_iters`` it keeps approaching ``hi``).

  Args:
    hi: final value.
    lo: initial value.
    alpha: steepness :math:`\alpha`.
    max_iters: :math:`N` (> 0).

  Returns:
    A function ``step -> coeff`` (float scalar; works on traced steps).
  """
  V.check_positive(max_iters, "max_iters")
  span = hi - lo

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    i = jnp.asarray(step, dtype=jnp.result_type(float))
    return 2.0 * span / (1.0 + jnp.exp(-alpha * i / max_iters)) - span + lo

  return schedule


def dann_schedule(*, total_steps: float, gamma: float = 10.0) -> Schedule:
  r"""DANN's GRL coefficient (Ganin et al., JMLR 2016, Sec. 5.2.2).

  .. math::
      \lambda(p) = \frac{2}{1 + \exp(-\gamma p)} - 1, \qquad
      p = \min(\max(\mathrm{step} / \mathrm{total\_steps}, 0), 1).

  The training progress :math:`p` is clipped to [0, 1], so the coefficient stays at its
  final value after ``total_steps``.

  Args:
    total_steps: number of steps over which :math:`p` goes from 0 to 1 (> 0).
    gamma: :math:`\gamma` (10 in the paper).

  Returns:
    A function ``step -> coeff`` in [0, 1) (works on traced steps).
  """
  V.check_positive(total_steps, "total_steps")

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    p = jnp.clip(jnp.asarray(step, dtype=jnp.result_type(float)) / total_steps, 0.0, 1.0)
    return 2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0

  return schedule


__all__ = ["gradient_reverse", "warm_start_schedule", "dann_schedule", "Schedule"]
