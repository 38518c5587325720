"""Target-output regularizers as methods: minimum class confusion and entropy minimization.

Both add a term on the target batch's class predictions to the source cross-entropy,
``L = CE_s + trade_off * R(z_t)``, computed on the **global** target batch (the pure
losses are :func:`dtl_jax.losses.mcc_loss` and
:func:`dtl_jax.losses.entropy_minimization_loss`).
"""

from __future__ import annotations

from dtl_jax import losses
from dtl_jax.methods.base import Method, MethodInputs


class _TargetRegularizer(Method):
  def __init__(self, *, trade_off: float):
    if trade_off < 0:
      raise ValueError(f"trade_off must be >= 0, got {trade_off}")
    self.trade_off = trade_off

  def regularizer(self, inputs: MethodInputs):
    raise NotImplementedError

  def loss(self, inputs: MethodInputs):
    ce = inputs.source_cross_entropy()
    r = self.regularizer(inputs)
    return ce + self.trade_off * r, {
      "ce": ce,
      "transfer": r,
      "source_acc": inputs.source_accuracy(),
    }


class MCC(_TargetRegularizer):
  """Minimum Class Confusion (Jin et al., ECCV 2020) as TLlib trains it:
  ``L = CE_s + trade_off * mcc(z_t / T)`` with TLlib's ``mcc.py`` defaults
  (``--trade-off 1``, ``--temperature 2.5``)."""

  name = "mcc"

  def __init__(self, *, trade_off: float = 1.0, temperature: float = 2.5):
    super().__init__(trade_off=trade_off)
    if temperature <= 0:
      raise ValueError(f"temperature must be > 0, got {temperature}")
    self.temperature = temperature

  def regularizer(self, inputs):
    return losses.mcc_loss(inputs.target["logits"], temperature=self.temperature)


class EntropyMinimization(_TargetRegularizer):
  """Entropy minimization (Grandvalet & Bengio, NIPS 2004) on unlabeled target data:
  ``L = CE_s + trade_off * mean_i H(softmax(z_t,i))``. The default ``trade_off = 0.1``
  is a conservative weight, not tuned on any benchmark."""

  name = "entropy_min"

  def __init__(self, *, trade_off: float = 0.1):
    super().__init__(trade_off=trade_off)

  def regularizer(self, inputs):
    return losses.entropy_minimization_loss(inputs.target["logits"])
