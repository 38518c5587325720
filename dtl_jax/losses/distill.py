"""Knowledge distillation losses.

* :func:`distillation_loss` -- Hinton et al., "Distilling the Knowledge in a Neural
  Network" (2015): KL divergence between temperature-softened teacher and student.
* :func:`hint_loss` -- Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015):
  regression of (projected) student features onto teacher features.

The teacher side always enters under ``jax.lax.stop_gradient``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dtl_jax import _validation as V


def distillation_loss(
  student_logits: jax.typing.ArrayLike,
  teacher_logits: jax.typing.ArrayLike,
  *,
  temperature: float = 4.0,
  scale_by_t2: bool = True,
  weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Knowledge-distillation loss :math:`T^2\,\mathrm{KL}(p^T_\tau \,\|\, p^S_\tau)`.

  .. math::
      p^T_\tau = \mathrm{softmax}(z^T / \tau), \quad p^S_\tau = \mathrm{softmax}(z^S / \tau),
      \qquad
      \mathcal{L} = \tau^2 \frac1n \sum_i w_i \sum_c p^T_{\tau,ic}
        \big(\log p^T_{\tau,ic} - \log p^S_{\tau,ic}\big)

  (Hinton et al., 2015). The :math:`\tau^2` factor (``scale_by_t2``) keeps the gradient
  magnitude comparable across temperatures; it equals PyTorch's
  ``kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean") * T**2``. Computed
  from log-softmax, so it is exact even where teacher probabilities underflow to 0.

  Args:
    student_logits: ``[n, C]``.
    teacher_logits: ``[n, C]`` (no gradient flows into them).
    temperature: :math:`\tau > 0`.
    scale_by_t2: multiply by :math:`\tau^2`.
    weights: optional ``[n]`` per-example weights.

  Returns:
    Scalar loss (>= 0), dtype of ``student_logits``.
  """
  V.check_positive(temperature, "temperature")
  zs = V.check_class_logits(student_logits, "student_logits")
  zt = V.check_class_logits(teacher_logits, "teacher_logits")
  V.check_same_shape(zs, "student_logits", zt, "teacher_logits")
  w = V.check_weights(weights, "weights", zs.shape[0], zs.dtype)
  log_ps = jax.nn.log_softmax(zs / temperature, axis=-1)
  log_pt = jax.nn.log_softmax(jax.lax.stop_gradient(zt).astype(zs.dtype) / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1)
  loss = V.weighted_mean(kl, w)
  if scale_by_t2:
    loss = loss * jnp.asarray(temperature, zs.dtype) ** 2
  return loss


def hint_loss(
  student_features: jax.typing.ArrayLike,
  teacher_features: jax.typing.ArrayLike,
  *,
  weights: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""FitNets hint loss: mean squared error to the teacher's features.

  .. math::
      \mathcal{L}_{HT} = \frac1{n}\sum_i w_i \frac1{D}\lVert r(u_i) - v_i \rVert_2^2

  with :math:`u` the student's guided layer, :math:`v` the teacher's hint layer and
  :math:`D` the number of feature elements per example (Romero et al., ICLR 2015, Eq. 3,
  normalised per element like the common ``nn.MSELoss`` implementation). The regressor
  :math:`r` (e.g. a learned 1x1 conv / dense projection) is left to the caller: pass
  ``r(u)`` as ``student_features``.

  Args:
    student_features: ``[n, ...]`` (already projected to the teacher's shape).
    teacher_features: ``[n, ...]``, same shape (no gradient flows into them).
    weights: optional ``[n]`` per-example weights.

  Returns:
    Scalar loss.
  """
  s = V.as_float_array(student_features, "student_features")
  t = V.as_float_array(teacher_features, "teacher_features")
  if s.ndim < 1:
    raise ValueError(
      f"`student_features` must have a batch axis [n, ...], got shape {tuple(s.shape)}."
    )
  V.check_nonempty(s, "student_features")
  V.check_same_shape(s, "student_features", t, "teacher_features")
  w = V.check_weights(weights, "weights", s.shape[0], s.dtype)
  diff = s - jax.lax.stop_gradient(t).astype(s.dtype)
  per_example = jnp.mean((diff * diff).reshape(s.shape[0], -1), axis=-1)
  return V.weighted_mean(per_example, w)


__all__ = ["distillation_loss", "hint_loss"]
