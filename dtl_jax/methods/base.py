"""The method protocol: a transfer method composes losses on model outputs.

A method never touches the optimizer and never knows on how many devices it runs.
The train step (:func:`dtl_jax.train.make_train_step`) runs the model once on the
concatenated batch ``[x_s; x_t]``, splits the outputs, gathers them over the device
axis (so every method sees the **global** batch), and calls ``method.loss(inputs)``.

Extra trainable (or frozen) modules -- a domain discriminator, an adversarial head,
a teacher -- are declared by :meth:`Method.extra_modules`; their parameters live in the
same :class:`~dtl_jax.train.TrainState` under ``params["extra"][name]`` and get their
own optimizer label ``"extra/<name>"`` (or ``"frozen"``).

What a method needs before training -- the weights of a teacher or of ADDA's frozen
source encoder, per-example source weights -- it declares in :meth:`Method.setup`,
which the training loop calls once with a :class:`SetupContext`; the loop itself never
asks which method it runs.

Composing a method from your own loss takes a few lines::

  from dtl_jax.methods import LossMethod
  from dtl_jax.losses import coral

  def my_loss(inputs):
    ce = inputs.source_cross_entropy()
    transfer = coral(inputs.source["bottleneck"], inputs.target["bottleneck"])
    return ce + 0.5 * transfer, {"coral": transfer}

  method = LossMethod(my_loss, name="my_coral")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

Outputs = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Extra:
  """An extra module a method needs (discriminator, adversarial head, teacher).

  Attributes:
    module: a Flax Linen module called as ``module(x, train=bool)``.
    init_input: an example input (leading batch dim) used to initialize it.
    trainable: if False its parameters are labelled ``"frozen"`` (optax ``set_to_zero``)
      and it is always applied in inference mode (BatchNorm statistics stay fixed).
    lr_mult: learning-rate multiplier for its parameter group.
    train_mode: apply with ``train=True`` (BatchNorm batch statistics, dropout) when
      trainable.
  """

  module: nn.Module
  init_input: Any
  trainable: bool = True
  lr_mult: float = 1.0
  train_mode: bool = True


@dataclasses.dataclass
class MethodInputs:
  """What a method's loss sees for one step (global batch over all devices).

  Attributes:
    source: model outputs for the source batch, e.g. ``{"features": [n_s, f],
      "bottleneck": [n_s, b], "logits": [n_s, C]}``.
    target: model outputs for the target batch (``[n_t, ...]``).
    labels: source labels ``[n_s]`` (int).
    step: the optimizer step (scalar int array) before this update.
    rng: a PRNG key for the method's own randomness; identical on every device.
    source_weights: optional per-example source weights ``[n_s]``.
    total_steps: planned number of steps (for schedules), a Python int.
    target_pseudo_labels: ``[n_t]`` int pseudo-labels of the target batch when the
      method asks the loop for them (SHOT), else ``None``.
  """

  source: Outputs
  target: Outputs
  labels: jax.Array
  step: jax.Array
  rng: jax.Array
  source_weights: jax.Array | None
  total_steps: int
  target_pseudo_labels: jax.Array | None = None
  _apply: Any = dataclasses.field(repr=False, default=None)
  _apply_to_inputs: Any = dataclasses.field(repr=False, default=None)

  def apply(self, name: str, x: Any, *, stop_gradient_params: bool = False) -> Any:
    """Applies the extra module ``name`` to a global-batch input ``x``.

    With ``stop_gradient_params=True`` the module's parameters receive no gradient
    from this call (one-pass min-max games such as ADDA's encoder loss). When a
    trainable extra module is applied several times, the batch statistics of the
    last call are kept: apply it once to the concatenated ``[source; target]`` input.
    """
    return self._apply(name, x, stop_gradient_params=stop_gradient_params)

  def apply_to_inputs(self, name: str, domain: str) -> Any:
    """Applies extra module ``name`` to the raw ``domain`` ("source"/"target") inputs.

    Runs per device on the local inputs, then gathers the outputs to the global batch.
    Meant for frozen modules (teachers), whose BatchNorm runs in inference mode.
    """
    return self._apply_to_inputs(name, domain)

  def source_cross_entropy(self, *, label_smoothing: float = 0.0) -> jax.Array:
    """Mean (optionally ``source_weights``-weighted) cross-entropy on the source batch.

    With weights: ``sum_i w_i CE_i / sum_i w_i``, and 0 for a batch whose weights are all
    zero (importance weights such as KMM's can be zero for most source examples; the
    ratio would be 0 / 0 = NaN there)."""
    logits = self.source["logits"]
    num_classes = logits.shape[-1]
    onehot = jax.nn.one_hot(self.labels, num_classes, dtype=logits.dtype)
    if label_smoothing:
      onehot = optax.smooth_labels(onehot, label_smoothing)
    ce = optax.softmax_cross_entropy(logits, onehot)
    if self.source_weights is None:
      return jnp.mean(ce)
    w = self.source_weights.astype(ce.dtype)
    total = jnp.sum(w)
    return jnp.sum(w * ce) / jnp.where(total > 0, total, 1.0)

  def source_accuracy(self) -> jax.Array:
    """Accuracy of the source logits on the source labels."""
    return jnp.mean(jnp.argmax(self.source["logits"], -1) == self.labels)


@dataclasses.dataclass(frozen=True)
class SetupContext:
  """What the training loop offers a method before training (:meth:`Method.setup`).

  Attributes:
    model: the main model module (inference copy, no device axis).
    model_variables: its initial ``{"params", "batch_stats"}`` (after
      ``model.pretrained`` and ``init_from`` were applied).
    init_from: the run directory the model was initialized from (``""`` if none).
    source_inputs: ``[n_s, ...]`` source training inputs (the examples the sampler
      draws from, in its index order), as the model sees them at test time: an array,
      or for a streamed domain a lazy view whose rows are decoded when read
      (``np.asarray`` decodes them all; :class:`dtl_jax.data.streaming.LazyImages`).
    target_inputs: ``[n_t, ...]`` target training inputs (unlabelled), likewise.
    seed: the run's seed.
    load_run: ``workdir -> (model_module, variables)``: the model of another run at its
      latest checkpoint, rebuilt from that run's ``config.json`` (e.g. a teacher).
  """

  model: Any
  model_variables: Mapping[str, Any]
  init_from: str
  source_inputs: Any
  target_inputs: Any
  seed: int
  load_run: Callable[[str], tuple[Any, Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a method asks of the training loop (returned by :meth:`Method.setup`).

  Attributes:
    extra_variables: initial ``{"params", "batch_stats"}`` of extra modules, by name
      (a teacher's or a frozen source encoder's weights); the others are freshly
      initialized.
    source_weights: ``[n_s]`` per-example weights of the source training examples,
      fed to the step as ``batch["w_s"]`` (instance weighting), or ``None``.
  """

  extra_variables: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  source_weights: np.ndarray | None = None


class Method:
  """Base class of transfer methods.

  Subclasses override :meth:`loss` and, when they need extra modules,
  :meth:`extra_modules`. ``loss`` returns ``(scalar_loss, metrics_dict)``; the train
  step adds ``"loss"`` to the metrics. ``trade_off`` conventionally weights the
  transfer term: ``loss = CE_s + trade_off * transfer``.
  """

  name: str = "method"
  #: whether the method's loss uses target outputs; with False the train step runs the
  #: model on the source batch only and ``inputs.target`` raises when read.
  uses_target: bool = True

  def setup(self, context: SetupContext) -> Setup:
    """Prepares the method before training; returns what it needs from the loop.

    Called once by :func:`dtl_jax.train.fit` after the model is built and initialized
    and before the train state is created (so :meth:`extra_modules` may use what this
    method learned here, e.g. a teacher's architecture). The default needs nothing.
    """
    del context
    return Setup()

  def extra_modules(self, example: Mapping[str, jax.Array]) -> dict[str, Extra]:
    """Declares extra modules.

    Args:
      example: one-example arrays ``{"x": [1, ...], "features": [1, f],
        "bottleneck": [1, b], "logits": [1, C], ...}`` (all model outputs plus the
        raw input) to size the extra modules.
    """
    del example
    return {}

  def loss(self, inputs: MethodInputs) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(scalar loss, metrics)`` for one step's global batch."""
    raise NotImplementedError

  def freeze_patterns(self) -> tuple[str, ...]:
    """Regexes of model parameter paths (``"head/.*"``) the method needs frozen."""
    return ()

  def model_frozen(self) -> bool:
    """True if the main model must not be trained (e.g. ADDA stage 2 keeps it frozen)."""
    return False

  def __repr__(self) -> str:
    fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
    return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


class LossMethod(Method):
  """A method from a plain function ``fn(inputs: MethodInputs) -> (loss, metrics)``.

  Args:
    fn: the loss function; may also return a bare scalar.
    name: a name for logs.
    extra_modules: optional function ``example -> {name: Extra}``.
  """

  def __init__(
    self,
    fn: Callable[[MethodInputs], Any],
    *,
    name: str = "custom",
    extra_modules: Callable[[Mapping[str, jax.Array]], dict[str, Extra]] | None = None,
  ):
    self.fn = fn
    self.name = name
    self._extra = extra_modules

  def extra_modules(self, example):
    return {} if self._extra is None else self._extra(example)

  def loss(self, inputs):
    out = self.fn(inputs)
    if isinstance(out, tuple):
      return out
    return out, {}
