"""Source-free adaptation methods: AdaBN, Tent, SHOT (adapt a trained model, target only).

These methods start from a trained source model and see **unlabeled target data only**:
``uses_source = False`` (the loop feeds no source batch; their losses read
``inputs.target`` only) and ``uses_target = True``.

* :class:`AdaBN` (Li et al., "Revisiting Batch Normalization For Practical Domain
  Adaptation", ICLR-W 2017 / arXiv 2016): no gradient step; :func:`adabn` replaces the
  BatchNorm statistics by the target population's. ``takes_gradient_steps = False``:
  the loop calls ``method.adapt(model, variables, batches)`` instead of training.
* :class:`Tent` (Wang et al., ICLR 2021): minimise the prediction entropy
  (:func:`dtl_jax.losses.tent_loss`) on target batches, updating **only** the
  BatchNorm scale and bias, with BatchNorm normalising by the target batch statistics
  (model in train mode) and dropout off (:func:`tent_apply_fn`).
* :class:`SHOT` (Liang et al., ICML 2020): the source classifier head is frozen; the
  feature extractor is trained with the information-maximisation loss plus
  ``beta`` x the cross-entropy to self-supervised pseudo-labels
  (:func:`dtl_jax.losses.shot_loss`), recomputed once per epoch over the whole target
  set by :meth:`SHOT.refresh` and looked up by example index.

What a loop must provide (see each class): BN-affine-only optimizer labels for Tent
(:meth:`Tent.freeze_patterns`, or :func:`tent_optimizer`); the per-epoch pseudo-label
refresh and per-example pseudo-labels for SHOT (``batch["pl_t"]``); a statistics pass
instead of training for AdaBN. :func:`dtl_jax.train.adapt` is that loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dtl_jax import losses, models
from dtl_jax import params as params_lib
from dtl_jax.losses import source_free as sf_losses
from dtl_jax.methods.base import Method, MethodInputs

BN_LABEL = "bn"
FROZEN = params_lib.FROZEN

#: Module paths of the library's BatchNorm layers by name: ``bn``, ``bn1``, ``bn_fc``, ...
#: (LeNet/DTN/MLP/ResNet/heads) and a ResNet ``downsample/1``. :class:`Tent` uses it when
#: it is not given the exact ``bn_modules`` (see :func:`bn_modules`).
DEFAULT_BN_MODULE_PATTERN = r"(?:.*/)?(?:bn[^/]*|downsample/1)"


# ------------------------------------------------------------------------ BN helpers


def bn_modules(batch_stats: Mapping[str, Any]) -> tuple[str, ...]:
  """Paths (``"backbone/layer1/0/bn1"``) of the BatchNorm layers in a ``batch_stats`` tree.

  A BatchNorm layer is a sub-tree holding exactly the leaves ``mean`` and ``var``
  (:class:`dtl_jax.models.BatchNorm`; Flax's ``nn.BatchNorm`` the same). The paths are
  those of the layers' ``scale`` / ``bias`` in the ``params`` tree.

  Raises:
    ValueError: ``batch_stats`` holds no BatchNorm layer.
  """
  out: list[str] = []

  def rec(tree, prefix):
    if (
      isinstance(tree, Mapping)
      and set(tree) == {"mean", "var"}
      and not any(isinstance(v, Mapping) for v in tree.values())
    ):
      out.append("/".join(prefix))
      return
    if isinstance(tree, Mapping):
      for k, v in tree.items():
        rec(v, prefix + (str(k),))

  rec(batch_stats, ())
  if not out:
    raise ValueError(
      "batch_stats holds no BatchNorm layer (no {'mean', 'var'} sub-tree); "
      "Tent and AdaBN need a model with BatchNorm"
    )
  return tuple(sorted(out))


def bn_affine_rules(modules: Sequence[str], *, prefix: str = "") -> list[tuple[str, str]]:
  """Label rules: BatchNorm ``scale`` / ``bias`` -> ``"bn"``, everything else ``"frozen"``.

  Args:
    modules: BatchNorm module paths (:func:`bn_modules`).
    prefix: path of the model inside the labelled tree (``"model/"`` for the train
      engine's ``{"model", "extra"}`` tree).

  Returns:
    Rules for :func:`dtl_jax.params.label_params` / :func:`dtl_jax.params.make_optimizer`.
  """
  if isinstance(modules, str) or not modules:
    raise ValueError(f"modules must be a non-empty sequence of BatchNorm paths, got {modules!r}")
  alts = "|".join(re.escape(m) for m in modules)
  return [(f"{re.escape(prefix)}(?:{alts})/(?:scale|bias)", BN_LABEL), (".*", FROZEN)]


def tent_param_labels(params: Any, batch_stats: Mapping[str, Any]) -> Any:
  """Labels ``params`` for Tent: ``"bn"`` on every BatchNorm scale / bias, else ``"frozen"``.

  Raises:
    ValueError: a BatchNorm layer of ``batch_stats`` has no ``scale`` / ``bias`` in
      ``params`` (the trees do not belong together).
  """
  mods = bn_modules(batch_stats)
  labels = params_lib.label_params(params, bn_affine_rules(mods), allow_unused=True)
  got = {
    params_lib.path_str(p)
    for p, lab in jax.tree_util.tree_flatten_with_path(labels)[0]
    if lab == BN_LABEL
  }
  want = {f"{m}/{v}" for m in mods for v in ("scale", "bias")}
  if got != want:
    raise ValueError(
      f"params lack the affine parameters of BatchNorm layers "
      f"{sorted(want - got)} found in batch_stats"
    )
  return labels


def tent_optimizer(
  variables: Mapping[str, Any],
  *,
  learning_rate: float = 1e-3,
  base_tx: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
  """Tent's optimizer over ``variables["params"]``: only BatchNorm scale / bias move.

  Every other leaf gets :func:`optax.set_to_zero` (no update, no optimizer state), so it
  stays bit-identical. The default base is Adam at ``learning_rate`` (Tent's CIFAR
  setting: Adam, lr 1e-3, no weight decay; its ImageNet setting is SGD, lr 2.5e-4,
  momentum 0.9: pass ``base_tx``).

  Args:
    variables: ``{"params", "batch_stats"}`` of the source model.
    learning_rate: Adam's learning rate (ignored with ``base_tx``).
    base_tx: the transformation for the BatchNorm affine parameters.

  Returns:
    An ``optax.GradientTransformation`` over the ``params`` tree.
  """
  labels = tent_param_labels(variables["params"], variables.get("batch_stats", {}))
  if base_tx is None:
    base_tx = optax.adam(learning_rate)
  return params_lib.make_optimizer(labels, base_tx=base_tx)


def _no_dropout(next_fun, args, kwargs, context):
  if context.method_name == "__call__" and isinstance(context.module, nn.Dropout):
    return args[0]
  return next_fun(*args, **kwargs)


def tent_apply_fn(model: nn.Module) -> models.transfer.ApplyFn:
  """``apply_fn(variables, x, *, train, rngs=None)`` with every ``nn.Dropout`` off.

  Tent's model mode: with ``train=True`` BatchNorm normalises with the batch statistics
  (and updates its running averages) while dropout is the identity, so the prediction
  is deterministic (Tent's models have no dropout; the digit LeNet does). Parameters and
  outputs are those of :func:`dtl_jax.models.make_apply_fn` (the DESIGN apply contract),
  so the result can be passed as ``model`` to the train step.
  """
  apply = models.make_apply_fn(model)

  def apply_fn(variables, x, *, train, rngs=None):
    with nn.intercept_methods(_no_dropout):
      return apply(variables, x, train=train, rngs=rngs)

  return apply_fn


# -------------------------------------------------------------------------- AdaBN


def _bn_interceptor(moments: dict, order: list, single_pass: bool):

  def interceptor(next_fun, args, kwargs, context):
    mod = context.module
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if isinstance(mod, nn.BatchNorm):
      raise TypeError(
        f"adabn supports dtl_jax.models.BatchNorm layers; "
        f"{'/'.join(mod.path)!r} is a flax.linen.BatchNorm"
      )
    if not isinstance(mod, models.BatchNorm):
      return next_fun(*args, **kwargs)
    x = args[0] if args else kwargs["x"]
    path = "/".join(mod.path)
    if path in moments:
      raise ValueError(
        f"BatchNorm {path!r} is called more than once per forward pass; "
        "adabn needs one call per layer"
      )
    xs = x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape(-1, x.shape[-1])
    mean = jnp.mean(xs, axis=0)
    m2 = jnp.sum(jnp.square(xs - mean), axis=0)
    moments[path] = (mean, m2, jnp.asarray(xs.shape[0]))
    order.append(path)
    if not single_pass:
      return next_fun(*args, **kwargs)
    var = m2 / xs.shape[0]
    scale = mod.get_variable("params", "scale").astype(xs.dtype)
    bias = mod.get_variable("params", "bias").astype(xs.dtype)
    y = (xs - mean) * jax.lax.rsqrt(var + mod.epsilon) * scale + bias
    return y.reshape(x.shape).astype(x.dtype)

  return interceptor


def _set_stats(batch_stats: Mapping[str, Any], path: str, mean, var) -> dict:
  out = dict(batch_stats)
  node = out
  keys = path.split("/")
  for k in keys[:-1]:
    node[k] = dict(node[k])
    node = node[k]
  old = node[keys[-1]]
  node[keys[-1]] = {
    "mean": jnp.asarray(mean, old["mean"].dtype),
    "var": jnp.asarray(var, old["var"].dtype),
  }
  return out


def _batch_iterable(batches: Any, passes: int) -> Callable[[], Iterable[Any]]:
  if callable(batches):
    return batches
  if iter(batches) is batches and passes > 1:
    raise ValueError(
      "batches is a one-shot iterator but adabn(mode='sequential') passes "
      "over the target data once per BatchNorm layer: give a list or a "
      "callable that returns a fresh iterable"
    )
  return lambda: batches


def adabn(
  model: nn.Module,
  variables: Mapping[str, Any],
  batches: Any,
  *,
  mode: str = "sequential",
  unbiased: bool = True,
) -> dict[str, Any]:
  r"""AdaBN: replaces every BatchNorm layer's statistics by the target population's.

  Li, Wang, Shi, Liu & Hou, "Revisiting Batch Normalization For Practical Domain
  Adaptation" (ICLR-W 2017, arXiv:1603.04779): for each BatchNorm channel :math:`j`,
  the mean and variance of its input over **all** target examples (and spatial
  positions),

  .. math::
      \mu_j = \frac1M \sum_{m} x_{mj}, \qquad
      \sigma_j^2 = \frac1{M - 1} \sum_m (x_{mj} - \mu_j)^2

  (``unbiased=True``, the library's convention for stored running variances, as
  PyTorch; ``unbiased=False`` divides by :math:`M`). These are exact population
  moments, not an exponential moving average: per-batch means and centred sums of
  squares are merged in float64 on the host (Chan et al.'s pairwise update), so the
  result does not depend on how the target set is cut into batches. Parameters are
  unchanged.

  What the layer inputs are (``mode``):

  * ``"sequential"`` (default): the inputs each layer sees at inference once every
    earlier layer (in call order) is adapted -- the statistics the adapted model
    actually uses. One pass over ``batches`` per BatchNorm layer.
  * ``"single_pass"``: one pass in which every layer normalises with the statistics of
    the current batch (as in training mode, dropout off) while the population moments
    of its inputs are accumulated. Cheaper; differs from ``"sequential"`` after the
    first layer.

  Both coincide for a model with one BatchNorm layer. Every BatchNorm layer is
  re-estimated, including layers frozen by ``frozen_bn``.

  Args:
    model: a Flax Linen module called as ``model(x, train=...)`` whose BatchNorm layers
      are :class:`dtl_jax.models.BatchNorm` (e.g. a
      :class:`~dtl_jax.models.TransferModel`).
    variables: ``{"params", "batch_stats"}`` of the source model.
    batches: the unlabeled target inputs, an iterable of arrays ``[n_b, ...]`` (a list,
      or a zero-argument callable returning a fresh iterable; ``"sequential"`` iterates
      it once per BatchNorm layer).
    mode: ``"sequential"`` or ``"single_pass"``.
    unbiased: store :math:`M/(M-1)` times the population variance.

  Returns:
    New variables: the same ``params``, new ``batch_stats`` (dtype of the old ones).

  Raises:
    ValueError: no BatchNorm layer, no target example, a one-shot iterator with
      ``"sequential"``.
    TypeError: ``model`` is not a Linen module, or holds a ``flax.linen.BatchNorm``.
  """
  if mode not in ("sequential", "single_pass"):
    raise ValueError(f"mode must be 'sequential' or 'single_pass', got {mode!r}")
  if not isinstance(model, nn.Module):
    raise TypeError(f"model must be a flax.linen.Module, got {type(model).__name__}")
  if "params" not in variables:
    raise ValueError(f"variables must hold 'params' and 'batch_stats', got {sorted(variables)}")
  stats_paths = bn_modules(variables.get("batch_stats", {}))
  single = mode == "single_pass"

  call_order: list[str] = []  # BatchNorm call order, recorded while tracing

  @jax.jit
  def moments_fn(v, x):
    moments: dict = {}
    order: list = []
    with nn.intercept_methods(_bn_interceptor(moments, order, single)):
      model.apply(v, x, train=False)
    call_order[:] = order
    return moments  # a dict: jit returns it with sorted keys

  def collect(v, get_batches):
    acc: dict[str, list] = {}
    n_total = 0
    for x in get_batches():
      x = jnp.asarray(x)
      if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(
          f"every target batch must be a non-empty array [n, ...], got shape {tuple(x.shape)}"
        )
      n_total += x.shape[0]
      got = jax.device_get(moments_fn(v, x))
      for path, (mean, m2, rows) in got.items():
        mean, m2, rows = np.asarray(mean, np.float64), np.asarray(m2, np.float64), int(rows)
        if path not in acc:
          acc[path] = [rows, mean, m2]
          continue
        n_a, mean_a, m2_a = acc[path]
        n = n_a + rows
        delta = mean - mean_a
        acc[path] = [n, mean_a + delta * (rows / n), m2_a + m2 + delta**2 * (n_a * rows / n)]
    if n_total == 0:
      raise ValueError("batches holds no target example")
    return acc

  def finish(entry):
    n, mean, m2 = entry
    if unbiased and n < 2:
      raise ValueError(f"an unbiased variance needs at least 2 values per channel, got {n}")
    return mean, m2 / (n - 1 if unbiased else n)

  v = dict(variables)
  if single:
    acc = collect(v, _batch_iterable(batches, 1))
    order = list(call_order)
    new_stats = v["batch_stats"]
    for path in order:
      new_stats = _set_stats(new_stats, path, *finish(acc[path]))
  else:
    get = _batch_iterable(batches, len(stats_paths))
    new_stats = v["batch_stats"]
    acc = collect(v, get)
    order = list(call_order)
    for i, path in enumerate(order):
      if i:
        acc = collect({**v, "batch_stats": new_stats}, get)
      new_stats = _set_stats(new_stats, path, *finish(acc[path]))
  missing = sorted(set(stats_paths) - set(order))
  if missing:
    raise ValueError(
      f"BatchNorm layers {missing} have statistics but were not called by the model's forward pass"
    )
  return {**variables, "batch_stats": new_stats}


# ------------------------------------------------------------------ method objects


class _SourceFree(Method):
  uses_target = True
  #: the loop must not feed source data: the loss reads ``inputs.target`` only.
  uses_source = False
  #: False: no optimizer step (AdaBN); the loop calls ``adapt`` instead.
  takes_gradient_steps = True


class Tent(_SourceFree):
  r"""Tent: test-time entropy minimisation on BatchNorm affine parameters only.

  Wang, Shelhamer, Liu, Olshausen & Darrell, "Tent: Fully Test-Time Adaptation by
  Entropy Minimization", ICLR 2021.
  ``L = mean_i H(softmax(z_i))`` (:func:`dtl_jax.losses.tent_loss`) on the target batch.

  What the loop provides:

  * optimizer labels: every parameter frozen except the BatchNorm ``scale`` / ``bias``:
    :meth:`freeze_patterns` (one regex that matches every other parameter path, for
    ``dtl_jax.params.train_rules(freeze=...)``), or :func:`tent_optimizer` /
    :func:`tent_param_labels` directly;
  * the model in train mode so that BatchNorm normalises with the target batch
    statistics (Tent's ``track_running_stats = False``), with dropout off:
    :func:`tent_apply_fn` (``dropout_off = True``);
  * target batches only (``uses_source = False``); online use (each batch predicted
    before its update): :func:`dtl_jax.methods.test_time.online_tta`.

  Args:
    bn_modules: exact BatchNorm module paths (:func:`bn_modules` of the model's
      ``batch_stats``); ``None`` uses :data:`DEFAULT_BN_MODULE_PATTERN` (the library's
      BatchNorm names).
  """

  name = "tent"
  #: the loop applies the model through :func:`tent_apply_fn` (dropout off).
  dropout_off = True

  def __init__(self, *, bn_modules: Sequence[str] | None = None):
    if bn_modules is not None and (isinstance(bn_modules, str) or not bn_modules):
      raise ValueError(
        f"bn_modules must be a non-empty sequence of module paths, got {bn_modules!r}"
      )
    self.bn_modules = None if bn_modules is None else tuple(bn_modules)

  def bn_module_pattern(self) -> str:
    """A regex fullmatching exactly the BatchNorm module paths."""
    if self.bn_modules is None:
      return DEFAULT_BN_MODULE_PATTERN
    return "|".join(re.escape(m) for m in self.bn_modules)

  def freeze_patterns(self) -> tuple[str, ...]:
    """One regex that fullmatches every parameter path except BN ``scale`` / ``bias``.

    It matches no BatchNorm module path either (nor ``.../mean``, ``.../var``), so a loop
    that also passes the freeze patterns to ``TransferModel(frozen_bn=...)`` keeps every
    BatchNorm layer on batch statistics, as Tent needs.
    """
    return (f"(?!(?:{self.bn_module_pattern()})(?:/(?:scale|bias|mean|var))?$).*",)

  def loss(self, inputs: MethodInputs):
    ent = losses.tent_loss(inputs.target["logits"])
    return ent, {"entropy": ent}


class SHOT(_SourceFree):
  r"""SHOT: source hypothesis transfer (Liang, Hu & Feng, ICML 2020).

  The classifier head (the source hypothesis) is frozen; the feature extractor and
  bottleneck train on target batches with

  .. math::
      \mathcal{L} = \beta\, \mathrm{CE}(z, \tilde y) + \gamma\, \mathcal{L}_{\mathrm{IM}}(z)

  (:func:`dtl_jax.losses.shot_loss`; the paper's :math:`\beta = 0.3`, :math:`\gamma = 1`),
  :math:`\tilde y` the self-supervised pseudo-labels of
  :func:`dtl_jax.losses.shot_pseudo_labels`.

  What the loop provides:

  * ``freeze_patterns() = (head_pattern,)``: the head gets no update (SHOT's code also
    keeps it in eval mode; the library's linear head has no dropout or BatchNorm);
  * at the start of every epoch over the target training set (SHOT: before steps
    ``0, E, 2E, ...`` with ``E`` the number of target batches per epoch), a pass over
    the **whole** target training set in order, model in inference mode, then
    ``pseudo = method.refresh(outputs[method.feature_key], outputs["logits"])``
    (``[N_t]`` int32), kept with the train state (checkpointed, so a resumed run uses
    the labels of the epoch it stopped in);
  * each target batch's example indices into that set, and ``batch["pl_t"] =
    pseudo[indices]`` (the step gathers it over devices into
    ``inputs.target_pseudo_labels``);
  * target batches only, model in train mode (as SHOT: BatchNorm batch statistics,
    dropout on).

  Args:
    beta: weight of the pseudo-label cross-entropy (0.3; 0 = SHOT-IM, then no
      pseudo-labels are needed).
    im_weight: weight of the IM loss (SHOT's ``ent_par``, 1).
    diversity_weight: weight of the diversity term inside IM (1).
    epsilon: the IM loss's epsilon (1e-5).
    distance, threshold, rounds: of :func:`dtl_jax.losses.shot_pseudo_labels`.
    feature_key: model output the centroids are built on (``"bottleneck"``, the head's
      input, as SHOT's ``netB`` output).
    head_pattern: regex of the frozen head's parameter paths.
  """

  name = "shot"

  def __init__(
    self,
    *,
    beta: float = sf_losses.SHOT_BETA,
    im_weight: float = 1.0,
    diversity_weight: float = 1.0,
    epsilon: float = sf_losses.SHOT_EPSILON,
    distance: str = "cosine",
    threshold: float = 0,
    rounds: int = 2,
    feature_key: str = "bottleneck",
    head_pattern: str = "head/.*",
  ):
    if beta < 0 or im_weight < 0:
      raise ValueError(f"beta and im_weight must be >= 0, got beta={beta}, im_weight={im_weight}")
    if distance not in ("cosine", "euclidean"):
      raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")
    self.beta = beta
    self.im_weight = im_weight
    self.diversity_weight = diversity_weight
    self.epsilon = epsilon
    self.distance = distance
    self.threshold = threshold
    self.rounds = rounds
    self.feature_key = feature_key
    self.head_pattern = head_pattern

  @property
  def needs_pseudo_labels(self) -> bool:
    """False for SHOT-IM (``beta = 0``): the loop may skip the refresh."""
    return self.beta > 0

  def freeze_patterns(self) -> tuple[str, ...]:
    return (self.head_pattern,)

  def refresh(self, features: jax.typing.ArrayLike, logits: jax.typing.ArrayLike) -> jax.Array:
    """Pseudo-labels ``[N_t]`` (int32) of the whole target set from inference outputs.

    Args:
      features: ``[N_t, d]`` the ``feature_key`` output over the target training set.
      logits: ``[N_t, C]`` the logits over the same examples, same order.
    """
    return sf_losses.shot_pseudo_labels(
      features, logits, distance=self.distance, threshold=self.threshold, rounds=self.rounds
    ).labels

  def loss(self, inputs: MethodInputs):
    logits = inputs.target["logits"]
    pseudo = inputs.target_pseudo_labels
    im = losses.information_maximization_loss(
      logits, diversity_weight=self.diversity_weight, epsilon=self.epsilon
    )
    metrics = {"im": im}
    total = self.im_weight * im
    if self.beta > 0:
      if pseudo is None:
        raise ValueError(
          "SHOT needs the target batch's pseudo-labels: batch['pl_t'] = pseudo[idx] "
          "with pseudo from SHOT.refresh over the whole target set (dtl_jax.train.adapt "
          "does this; or beta=0 for SHOT-IM)"
        )
      ce = losses.shot_loss(logits, pseudo, beta=1.0, im_weight=0.0)
      total = total + self.beta * ce
      metrics["pseudo_ce"] = ce
      metrics["pseudo_agreement"] = jnp.mean(jnp.argmax(logits, -1) == pseudo)
    return total, metrics


class AdaBN(_SourceFree):
  """AdaBN: target BatchNorm statistics, no gradient step (see :func:`adabn`).

  What the loop provides: no training steps (``takes_gradient_steps = False``,
  ``model_frozen() = True``); instead ``variables = method.adapt(model, variables,
  batches)`` with ``batches`` the target training inputs (re-iterable), then the usual
  evaluation. :meth:`loss` raises.

  Args:
    mode: ``"sequential"`` (exact inference-time statistics; one pass per BatchNorm layer)
      or ``"single_pass"``; see :func:`adabn`.
    unbiased: store the unbiased population variance (the library's convention).
  """

  name = "adabn"
  takes_gradient_steps = False

  def __init__(self, *, mode: str = "sequential", unbiased: bool = True):
    if mode not in ("sequential", "single_pass"):
      raise ValueError(f"mode must be 'sequential' or 'single_pass', got {mode!r}")
    self.mode = mode
    self.unbiased = unbiased

  def model_frozen(self) -> bool:
    return True

  def adapt(self, model: nn.Module, variables: Mapping[str, Any], batches: Any) -> dict[str, Any]:
    """:func:`adabn` with this method's ``mode`` and ``unbiased``."""
    return adabn(model, variables, batches, mode=self.mode, unbiased=self.unbiased)

  def loss(self, inputs: MethodInputs):
    raise ValueError(
      "AdaBN takes no gradient step: call method.adapt(model, variables, "
      "target_batches) instead of training (takes_gradient_steps is False)"
    )


__all__ = [
  "DEFAULT_BN_MODULE_PATTERN",
  "SHOT",
  "AdaBN",
  "Tent",
  "adabn",
  "bn_affine_rules",
  "bn_modules",
  "tent_apply_fn",
  "tent_optimizer",
  "tent_param_labels",
]
