"""Margin disparity discrepancy (MDD).

Zhang et al., "Bridging Theory and Algorithm for Domain Adaptation", ICML 2019; computed
as TLlib's ``MarginDisparityDiscrepancy`` (dalib 0.2).

Training (the original MDD code and dalib 0.2's example): the adversarial head reads
``gradient_reverse(features, coeff)`` and the total loss is
``cls_loss + trade_off * mdd_loss(...)``. The adversarial head minimises the loss (agree
with the main head on source, disagree on target); through the reversal the features
maximise it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dtl_jax import _validation as V

SHIFT_LOG_OFFSET = 1e-6


def _pair(logits, name: str, adv_logits, name_adv: str) -> tuple[jax.Array, jax.Array]:
  y = V.check_class_logits(logits, name)
  y_adv = V.check_class_logits(adv_logits, name_adv)
  V.check_same_shape(y, name, y_adv, name_adv)
  return y, y_adv


def mdd_loss(
  logits_source: jax.typing.ArrayLike,
  adversarial_logits_source: jax.typing.ArrayLike,
  logits_target: jax.typing.ArrayLike,
  adversarial_logits_target: jax.typing.ArrayLike,
  *,
  margin: float = 4.0,
  source_weights: jax.typing.ArrayLike | None = None,
  target_weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Margin disparity discrepancy between the main and the adversarial head.

  With :math:`h^s_i = \arg\max_c y^s_{ic}` and :math:`h^t_j = \arg\max_c y^t_{jc}` the
  main head's predictions (no gradient), :math:`p' = \mathrm{softmax}(y')` the
  adversarial head's probabilities and :math:`\gamma` the margin:

  .. math::
      \mathcal{D}_\gamma = \gamma\,\frac1{n_s}\sum_i -\log p'^s_{i, h^s_i}
        \;+\; \frac1{n_t}\sum_j -\log\big(\min(1 - p'^t_{j, h^t_j} + 10^{-6},\ 1)\big)

  The second term is TLlib's ``shift_log`` (shift by ``1e-6``, clamp at 1), which keeps
  :math:`\log(1 - p')` finite when :math:`p' \to 1`. The value is exactly what dalib
  0.2's module returns.

  Args:
    logits_source: main-head logits on source ``[n_s, C]``.
    adversarial_logits_source: adversarial-head logits on source ``[n_s, C]``.
    logits_target: main-head logits on target ``[n_t, C]``.
    adversarial_logits_target: adversarial-head logits on target ``[n_t, C]``.
    margin: :math:`\gamma > 0` (TLlib default 4).
    source_weights: optional ``[n_s]`` weights (``mean(w * loss)``).
    target_weights: optional ``[n_t]`` weights.

  Returns:
    Scalar.
  """
  V.check_positive(margin, "margin")
  y_s, y_s_adv = _pair(
    logits_source, "logits_source", adversarial_logits_source, "adversarial_logits_source"
  )
  y_t, y_t_adv = _pair(
    logits_target, "logits_target", adversarial_logits_target, "adversarial_logits_target"
  )
  if y_s.shape[1] != y_t.shape[1]:
    raise ValueError(
      "`logits_source` and `logits_target` must have the same number of "
      f"classes, got shapes {tuple(y_s.shape)} and {tuple(y_t.shape)}."
    )
  ws = V.check_weights(source_weights, "source_weights", y_s.shape[0], y_s_adv.dtype)
  wt = V.check_weights(target_weights, "target_weights", y_t.shape[0], y_t_adv.dtype)
  pred_s = jnp.argmax(jax.lax.stop_gradient(y_s), axis=-1)
  pred_t = jnp.argmax(jax.lax.stop_gradient(y_t), axis=-1)
  log_p_s = jax.nn.log_softmax(y_s_adv, axis=-1)
  ce_s = -jnp.take_along_axis(log_p_s, pred_s[:, None], axis=-1)[:, 0]
  p_t = jnp.take_along_axis(jax.nn.softmax(y_t_adv, axis=-1), pred_t[:, None], axis=-1)[:, 0]
  nll_t = -jnp.log(jnp.minimum(1.0 - p_t + SHIFT_LOG_OFFSET, 1.0))
  return margin * V.weighted_mean(ce_s, ws) + V.weighted_mean(nll_t, wt)


__all__ = ["mdd_loss"]
