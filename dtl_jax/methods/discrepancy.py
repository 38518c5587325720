"""Source-only and mapping-based (discrepancy) methods: DDC, DAN, JAN, Deep CORAL.

Each loss is ``CE_s + trade_off * D(source, target)`` with ``D`` computed on the
**global** batch of adapted features (``"bottleneck"`` by default, the TLlib
adaptation layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from dtl_jax import losses
from dtl_jax.methods.base import Method, MethodInputs


def _feature(outputs, key: str) -> jax.Array:
  if key not in outputs:
    raise ValueError(f"the model has no output {key!r} (outputs: {sorted(outputs)})")
  f = outputs[key]
  return f.reshape(f.shape[0], -1)


class SourceOnly(Method):
  """Train on labeled source data only: ``L = CE_s`` (the no-adaptation baseline)."""

  name = "source_only"
  uses_target = False

  def __init__(self, *, label_smoothing: float = 0.0):
    self.label_smoothing = label_smoothing

  def loss(self, inputs: MethodInputs):
    ce = inputs.source_cross_entropy(label_smoothing=self.label_smoothing)
    return ce, {"ce": ce, "source_acc": inputs.source_accuracy()}


class _Discrepancy(Method):
  feature_key = "bottleneck"

  def __init__(self, *, trade_off: float = 1.0, feature_key: str = "bottleneck"):
    self.trade_off = trade_off
    self.feature_key = feature_key

  def discrepancy(self, inputs: MethodInputs) -> jax.Array:
    raise NotImplementedError

  def loss(self, inputs: MethodInputs):
    ce = inputs.source_cross_entropy()
    d = self.discrepancy(inputs)
    return ce + self.trade_off * d, {
      "ce": ce,
      "transfer": d,
      "source_acc": inputs.source_accuracy(),
    }


class DDC(_Discrepancy):
  """Deep Domain Confusion (Tzeng et al., 2014): single-kernel MMD on the adaptation layer.

  ``L = CE_s + trade_off * MMD^2_k(f_s, f_t)`` with ``f`` the ``feature_key`` output
  (the bottleneck is DDC's low-dimensional adaptation layer) and ``k`` one Gaussian
  kernel with the mean-heuristic bandwidth (``multipliers=(1.0,)``); the paper used
  ``trade_off = 0.25``.
  """

  name = "ddc"

  def __init__(self, *, trade_off: float = 0.25, feature_key: str = "bottleneck"):
    super().__init__(trade_off=trade_off, feature_key=feature_key)

  def discrepancy(self, inputs):
    fs, ft = _feature(inputs.source, self.feature_key), _feature(inputs.target, self.feature_key)
    return losses.mk_mmd(fs, ft, multipliers=(1.0,))


class DAN(_Discrepancy):
  """Deep Adaptation Network (Long et al., ICML 2015): MK-MMD on the adapted features.

  ``L = CE_s + trade_off * MK-MMD^2(f_s, f_t)``, five Gaussian kernels with bandwidths
  ``{1/8, 1/4, 1/2, 1, 2} * mean squared distance`` (TLlib defaults, ``trade_off=1``).
  """

  name = "dan"

  def __init__(
    self,
    *,
    trade_off: float = 1.0,
    feature_key: str = "bottleneck",
    multipliers: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0),
    estimator: str = "biased",
  ):
    super().__init__(trade_off=trade_off, feature_key=feature_key)
    self.multipliers = tuple(multipliers)
    self.estimator = estimator

  def discrepancy(self, inputs):
    fs, ft = _feature(inputs.source, self.feature_key), _feature(inputs.target, self.feature_key)
    return losses.mk_mmd(fs, ft, multipliers=self.multipliers, estimator=self.estimator)


class JAN(_Discrepancy):
  """Joint Adaptation Network (Long et al., ICML 2017): JMMD on (features, softmax).

  ``L = CE_s + trade_off * JMMD^2([f_s, softmax(z_s)], [f_t, softmax(z_t)])`` with JAN's
  default kernels (five mean-heuristic Gaussians on ``f``, one ``sigma = 0.92``
  Gaussian on the probabilities).
  """

  name = "jan"

  def __init__(
    self, *, trade_off: float = 1.0, feature_key: str = "bottleneck", estimator: str = "biased"
  ):
    super().__init__(trade_off=trade_off, feature_key=feature_key)
    self.estimator = estimator

  def discrepancy(self, inputs):
    fs, ft = _feature(inputs.source, self.feature_key), _feature(inputs.target, self.feature_key)
    ps = jax.nn.softmax(inputs.source["logits"], -1)
    pt = jax.nn.softmax(inputs.target["logits"], -1)
    return losses.jmmd([fs, ps], [ft, pt], estimator=self.estimator)


class DeepCORAL(_Discrepancy):
  """Deep CORAL (Sun & Saenko, ECCV-W 2016): ``L = CE_s + trade_off * ||C_s - C_t||_F^2 / (4 d^2)``.

  Applied to the ``feature_key`` output (the paper aligns the last layer's
  activations; ``feature_key="logits"`` reproduces that).
  """

  name = "deep_coral"

  def discrepancy(self, inputs):
    fs, ft = _feature(inputs.source, self.feature_key), _feature(inputs.target, self.feature_key)
    return losses.coral(fs, ft)


class Finetune(SourceOnly):
  """Network-based transfer (fine-tuning): ``L = CE`` on the labeled task data.

  The pretrained backbone, frozen groups and learning-rate multipliers are set in the
  config (``model.pretrained``, ``model.freeze``, ``optim.multipliers.backbone``; see
  :func:`dtl_jax.params.train_rules`), not in the loss. Optional L2-SP (Li et al.,
  ICML 2018): ``alpha/2 * ||w - w0||^2`` on the params of the frozen-at-start copy
  given as ``reference`` is not applied here.
  """

  name = "finetune"


WEIGHTINGS = ("kmm", "domain_classifier", "kliep")


class InstanceWeighted(Method):
  """Instance-based transfer: any method with per-example source weights.

  The source cross-entropy of the wrapped method becomes
  ``sum_i w_i CE_i / sum_i w_i`` with importance weights ``w_i ~ p_t(x_i) / p_s(x_i)``
  of the source training examples, estimated once before training (:meth:`setup`) on
  the flattened inputs by :mod:`dtl_jax.instance`:

  * ``"kmm"`` -- kernel mean matching (Huang et al., NeurIPS 2006);
  * ``"domain_classifier"`` -- a calibrated source-vs-target classifier's odds;
  * ``"kliep"`` -- KLIEP (Sugiyama et al., NeurIPS 2007).

  The loop puts them in each batch as ``"w_s"``. With ``weights=None`` the batch must
  carry ``"w_s"`` itself (a custom loop).

  Args:
    base: the method whose source loss is weighted: a :class:`Method` or a name of
      :data:`dtl_jax.methods.METHODS` (default ``"source_only"``).
    base_kwargs: hyperparameters of a base given by name.
    weights: the estimator, one of :data:`WEIGHTINGS`, or ``None``.
  """

  name = "instance_weighted"

  def __init__(
    self,
    base: Method | str | None = None,
    *,
    base_kwargs: dict | None = None,
    weights: str | None = "kmm",
  ):
    if weights is not None and weights not in WEIGHTINGS:
      raise ValueError(f"weights must be one of {WEIGHTINGS} or None, got {weights!r}")
    if isinstance(base, str) or base is None:
      from dtl_jax.methods import build

      base = build(base or "source_only", **dict(base_kwargs or {}))
    elif base_kwargs:
      raise ValueError("base_kwargs is for a base given by name")
    self.base = base
    self.weights = weights
    self.uses_target = self.base.uses_target

  def setup(self, context):
    """Estimates the source weights (and sets up the base method)."""
    base_setup = self.base.setup(context)
    if self.weights is None:
      return base_setup
    import jax

    from dtl_jax import instance

    xs = np.asarray(context.source_inputs, np.float32).reshape(len(context.source_inputs), -1)
    xt = np.asarray(context.target_inputs, np.float32).reshape(len(context.target_inputs), -1)
    key = jax.random.key(context.seed)
    if self.weights == "kmm":
      w = instance.kmm_weights(xs, xt)
    elif self.weights == "domain_classifier":
      w = instance.domain_classifier_weights(xs, xt, key=key)
    else:
      w = instance.kliep_weights(xs, xt, key=key)
    return dataclasses.replace(base_setup, source_weights=np.asarray(w, np.float32))

  def extra_modules(self, example):
    return self.base.extra_modules(example)

  def freeze_patterns(self):
    return self.base.freeze_patterns()

  def model_frozen(self):
    return self.base.model_frozen()

  def loss(self, inputs: MethodInputs):
    if inputs.source_weights is None:
      raise ValueError(
        "instance_weighted needs source weights: batch['w_s'] [n_s] "
        "(fit estimates them with method_kwargs.weights)"
      )
    return self.base.loss(inputs)
