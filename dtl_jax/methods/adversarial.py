"""Adversarial methods: DANN, CDAN(+E), MDD, ADDA, WDGRL, domain confusion.

All run in one backward pass: a gradient reversal layer (GRL) between features and
discriminator (DANN, CDAN, MDD, WDGRL), or ``stop_gradient`` on the other player's
parameters (ADDA's inverted-label GAN, domain confusion). The discriminator is an
extra module (:class:`~dtl_jax.methods.Extra`) whose parameters live in the train
state under ``params["extra"]["discriminator"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dtl_jax import losses, models, xla_options
from dtl_jax.methods.base import Extra, Method, MethodInputs, Setup, SetupContext
from dtl_jax.methods.discrepancy import _feature


def _schedule(
  kind: str, total_steps: int, *, hi: float = 1.0, max_iters: float = 1000.0, gamma: float = 10.0
) -> Callable[[jax.Array], jax.Array]:
  if kind == "dann":
    return losses.dann_schedule(total_steps=max(total_steps, 1), gamma=gamma)
  if kind == "warm_start":
    return losses.warm_start_schedule(hi=hi, lo=0.0, alpha=1.0, max_iters=max_iters)
  if kind == "constant":
    return lambda step: jnp.asarray(hi, jnp.float32)
  raise ValueError(f"schedule must be 'dann', 'warm_start' or 'constant', got {kind!r}")


def _reversal_coeff(method: Any, inputs: MethodInputs) -> jax.Array:
  """The GRL coefficient at this step from ``method.schedule`` / ``hi`` / ``max_iters``."""
  return _schedule(method.schedule, inputs.total_steps, hi=method.hi, max_iters=method.max_iters)(
    inputs.step
  )


class DANN(Method):
  """Domain-Adversarial Neural Network (Ganin et al., JMLR 2016).

  ``L = CE_s + trade_off * BCE(D(R_lambda(f_s)), 1) / 2 + BCE(D(R_lambda(f_t)), 0) / 2``
  with ``R_lambda`` the gradient reversal layer. The discriminator ``D`` minimises the
  domain loss; through the reversal the features maximise it.

  Args:
    trade_off: weight of the domain loss.
    schedule: GRL coefficient ``lambda(step)``: ``"warm_start"`` (default, TLlib's
      ``WarmStartGradientReverseLayer``: ``hi * (2 / (1 + exp(-i / max_iters)) - 1)``,
      as CDAN and MDD), ``"dann"`` (the paper's ``2 / (1 + exp(-10 p)) - 1``,
      ``p = step / total_steps``) or ``"constant"`` (``hi``). The paper's schedule
      reaches 0.46 by a tenth of the run; on a source that is slow to learn (digits_m
      -> digits) that wiped out the source classifier on 2 of 3 seeds (source accuracy
      10% and 37%), where TLlib's slower warm start did not.
    feature_key: model output fed to the discriminator.
    hidden: widths of :class:`dtl_jax.models.DomainDiscriminator` (TLlib: 1024, 1024;
      the paper's toy: one 100-unit layer).
    batch_norm: BatchNorm in the discriminator.
    discriminator: a custom module (``module(x, train=...) -> [n, 1]`` logits).
  """

  name = "dann"

  def __init__(
    self,
    *,
    trade_off: float = 1.0,
    schedule: str = "warm_start",
    hi: float = 1.0,
    max_iters: float = 1000.0,
    feature_key: str = "bottleneck",
    hidden: tuple[int, ...] = (1024, 1024),
    batch_norm: bool = True,
    discriminator: nn.Module | None = None,
    lr_mult: float = 1.0,
  ):
    self.trade_off = trade_off
    self.schedule = schedule
    self.hi = hi
    self.max_iters = max_iters
    self.feature_key = feature_key
    self.hidden = tuple(hidden)
    self.batch_norm = batch_norm
    self.discriminator = discriminator
    self.lr_mult = lr_mult

  def _disc_input(self, inputs: MethodInputs) -> tuple[jax.Array, jax.Array]:
    return _feature(inputs.source, self.feature_key), _feature(inputs.target, self.feature_key)

  def _disc_input_dim(self, example) -> int:
    return _feature(example, self.feature_key).shape[-1]

  def extra_modules(self, example):
    module = self.discriminator or models.DomainDiscriminator(
      hidden=self.hidden, batch_norm=self.batch_norm
    )
    dim = self._disc_input_dim(example)
    return {"discriminator": Extra(module, np.zeros((2, dim), np.float32), lr_mult=self.lr_mult)}

  def coeff(self, inputs: MethodInputs) -> jax.Array:
    return _reversal_coeff(self, inputs)

  def domain_loss(self, inputs, d_s, d_t):
    return losses.dann_loss(d_s, d_t)

  def loss(self, inputs: MethodInputs):
    ce = inputs.source_cross_entropy()
    h_s, h_t = self._disc_input(inputs)
    n_s = h_s.shape[0]
    coeff = self.coeff(inputs)
    h = losses.gradient_reverse(jnp.concatenate([h_s, h_t], 0), coeff)
    d = inputs.apply("discriminator", h)
    d_s, d_t = d[:n_s], d[n_s:]
    transfer = self.domain_loss(inputs, d_s, d_t)
    metrics = {
      "ce": ce,
      "transfer": transfer,
      "grl_coeff": jnp.asarray(coeff, jnp.float32),
      "domain_acc": losses.domain_accuracy(d_s, d_t),
      "source_acc": inputs.source_accuracy(),
    }
    return ce + self.trade_off * transfer, metrics


def _draw_map_matrices(key: jax.Array, f_dim: int, c: int, dim: int, dtype: str) -> Any:
  return losses.randomized_map_matrices(key, f_dim, c, dim, dtype=jnp.dtype(dtype))


class CDAN(DANN):
  """Conditional Domain Adversarial Network (Long et al., NeurIPS 2018).

  The discriminator sees the multilinear map ``T(f, sg[softmax(z)])`` of features and
  class probabilities (full map ``[n, C*F]``, or the randomized map ``[n, dim]`` when
  ``randomized=True`` or, with ``randomized=None``, when ``C * F > 4096`` as TLlib
  does). CDAN+E (``entropy_conditioning=True``) weights examples by
  ``1 + exp(-H(p))``. GRL schedule defaults to TLlib's warm start.
  """

  name = "cdan"

  def __init__(
    self,
    *,
    entropy_conditioning: bool = False,
    randomized: bool | None = None,
    randomized_dim: int = 1024,
    map_seed: int = 0,
    schedule: str = "warm_start",
    **kwargs,
  ):
    super().__init__(schedule=schedule, **kwargs)
    self.entropy_conditioning = entropy_conditioning
    self.randomized = randomized
    self.randomized_dim = randomized_dim
    self.map_seed = map_seed

  def _use_random(self, f_dim: int, num_classes: int) -> bool:
    if self.randomized is None:
      return f_dim * num_classes > 4096
    return self.randomized

  def _disc_input_dim(self, example):
    f_dim = _feature(example, self.feature_key).shape[-1]
    c = example["logits"].shape[-1]
    return self.randomized_dim if self._use_random(f_dim, c) else f_dim * c

  def _map(self, f, logits):
    f_dim, c = f.shape[-1], logits.shape[-1]
    matrices = None
    if self._use_random(f_dim, c):
      matrices = self._matrices(f_dim, c, f.dtype)
    return losses.cdan_features(f, logits, matrices=matrices)

  def _matrices(self, f_dim: int, c: int, dtype) -> tuple[jax.Array, jax.Array]:
    """The randomized map's fixed ``(R_f, R_g)``, drawn once from ``map_seed``: evaluated
    when the step is traced (``jax.ensure_compile_time_eval``) and embedded in it as
    constants, instead of sampled again by every step (twice: once per domain), which
    the XLA:CPU op profile of the CDAN step showed as its random-number fusions. Drawn
    by one computation compiled with backend optimizations off
    (:func:`dtl_jax.xla_options.run_once`; op by op, the two normal draws compiled
    with full optimization took ~0.5 s more of a 1-thread start-up)."""
    cache = self.__dict__.setdefault("_matrices_cache", {})
    k = (f_dim, c, jax.numpy.dtype(dtype).name)
    if k not in cache:
      with jax.ensure_compile_time_eval():  # one start-up computation (run_once)
        cache[k] = xla_options.run_once(
          _draw_map_matrices,
          jax.random.key(self.map_seed),
          f_dim,
          c,
          self.randomized_dim,
          k[2],
          static_argnums=(1, 2, 3, 4),
        )
    return cache[k]

  def _disc_input(self, inputs):
    f_s = _feature(inputs.source, self.feature_key)
    f_t = _feature(inputs.target, self.feature_key)
    return self._map(f_s, inputs.source["logits"]), self._map(f_t, inputs.target["logits"])

  def domain_loss(self, inputs, d_s, d_t):
    return losses.cdan_loss(
      d_s,
      d_t,
      logits_source=inputs.source["logits"],
      logits_target=inputs.target["logits"],
      entropy_conditioning=self.entropy_conditioning,
    )


class CDANE(CDAN):
  """CDAN+E: :class:`CDAN` with entropy conditioning."""

  name = "cdan_e"

  def __init__(self, **kwargs):
    kwargs.setdefault("entropy_conditioning", True)
    super().__init__(**kwargs)


class MDD(Method):
  """Margin Disparity Discrepancy (Zhang et al., ICML 2019), TLlib's recipe.

  An adversarial head ``f'`` reads ``R_lambda(features)``;
  ``L = CE_s + trade_off * mdd_loss(f(x_s), f'(x_s), f(x_t), f'(x_t); margin)``.
  The head minimises the disparity loss (agree with the main head on source, disagree
  on target), the features maximise it through the reversal (warm start up to 0.1).
  """

  name = "mdd"

  def __init__(
    self,
    *,
    trade_off: float = 1.0,
    margin: float = 4.0,
    feature_key: str = "bottleneck",
    hidden: int = 0,
    hi: float = 0.1,
    max_iters: float = 1000.0,
    schedule: str = "warm_start",
    head: nn.Module | None = None,
  ):
    self.trade_off = trade_off
    self.margin = margin
    self.feature_key = feature_key
    self.hidden = hidden
    self.hi = hi
    self.max_iters = max_iters
    self.schedule = schedule
    self.head = head

  def extra_modules(self, example):
    c = example["logits"].shape[-1]
    dim = _feature(example, self.feature_key).shape[-1]
    head = self.head or models.Classifier(
      c, hidden=(self.hidden,) if self.hidden else (), init_scheme="mdd"
    )
    return {"adversarial_head": Extra(head, jnp.zeros((1, dim), jnp.float32))}

  def loss(self, inputs):
    ce = inputs.source_cross_entropy()
    f_s = _feature(inputs.source, self.feature_key)
    f_t = _feature(inputs.target, self.feature_key)
    n_s = f_s.shape[0]
    coeff = _reversal_coeff(self, inputs)
    adv = inputs.apply(
      "adversarial_head", losses.gradient_reverse(jnp.concatenate([f_s, f_t]), coeff)
    )
    transfer = losses.mdd_loss(
      inputs.source["logits"], adv[:n_s], inputs.target["logits"], adv[n_s:], margin=self.margin
    )
    return ce + self.trade_off * transfer, {
      "ce": ce,
      "transfer": transfer,
      "source_acc": inputs.source_accuracy(),
    }


class ADDA(Method):
  """Adversarial Discriminative Domain Adaptation (Tzeng et al., CVPR 2017), two stages.

  * ``stage=1``: source pre-training, ``L = CE_s`` (same as :class:`SourceOnly`).
  * ``stage=2``: the main model is the **target** encoder, initialized from stage 1;
    its classifier head stays frozen (:meth:`freeze_patterns`). A frozen copy of the
    stage-1 model (extra ``"source_model"``, set its variables with
    :func:`dtl_jax.train.replace_extra`) encodes the source. With ``D`` the
    discriminator on ``feature_key``:
    ``L = adda_discriminator_loss(D(sg f_s), D(sg f_t)) + adda_encoder_loss(D_sg(f_t))``
    where ``D_sg`` has its parameters under ``stop_gradient``: one backward pass gives
    the discriminator's and the encoder's updates of the alternating game.

  Stage 2 starts from the stage-1 run (``config.init_from``): :meth:`setup` takes the
  initialized model as the frozen source encoder. Run it without dropout in the target
  encoder and with a GAN-style optimizer (``experiments/configs/adda.py`` sets both:
  Adam, lr 2e-4, beta1 0.5):
  the frozen source model runs in inference mode, so dropout on the target branch
  alone lets the discriminator tell the domains apart by the noise; and with nothing
  anchoring the encoder, the SGD protocol of stage 1 lets it lose the game and its
  features.

  Args:
    stage: 1 or 2.
    source_model: the source encoder module of stage 2; by default the main model
      (set by :meth:`setup`).
    head_patterns: regexes of model parameter paths kept frozen in stage 2.
  """

  name = "adda"

  def __init__(
    self,
    *,
    stage: int = 1,
    source_model: Any = None,
    feature_key: str = "bottleneck",
    hidden: tuple[int, ...] = (500, 500),
    batch_norm: bool = False,
    head_patterns: tuple[str, ...] = ("head/.*",),
    discriminator: nn.Module | None = None,
  ):
    if stage not in (1, 2):
      raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    self.stage = stage
    self.source_model = source_model
    self.feature_key = feature_key
    self.hidden = tuple(hidden)
    self.batch_norm = batch_norm
    self.head_patterns = tuple(head_patterns)
    self.discriminator = discriminator
    self.uses_target = stage == 2

  def freeze_patterns(self) -> tuple[str, ...]:
    return self.head_patterns if self.stage == 2 else ()

  def setup(self, context: SetupContext) -> Setup:
    """Stage 2: the stage-1 model (``init_from``) becomes the frozen source encoder."""
    if self.stage == 1:
      return Setup()
    if not context.init_from:
      raise ValueError(
        "adda stage 2 needs init_from = the stage-1 run directory (config key 'init_from')"
      )
    if self.source_model is None:
      self.source_model = context.model
    # Own buffers: the main model's copy is donated to the jitted step.
    frozen = jax.tree.map(lambda x: jnp.array(x, copy=True), dict(context.model_variables))
    return Setup(extra_variables={"source_model": frozen})

  def extra_modules(self, example):
    if self.stage == 1:
      return {}
    if self.source_model is None:
      raise ValueError(
        "ADDA stage 2 needs source_model (the stage-1 model module); fit "
        "sets it from config.init_from"
      )
    dim = _feature(example, self.feature_key).shape[-1]
    return {
      "source_model": Extra(self.source_model, example["x"], trainable=False),
      "discriminator": Extra(
        self.discriminator
        or models.DomainDiscriminator(hidden=self.hidden, batch_norm=self.batch_norm),
        np.zeros((2, dim), np.float32),
      ),
    }

  def loss(self, inputs):
    if self.stage == 1:
      ce = inputs.source_cross_entropy()
      return ce, {"ce": ce, "source_acc": inputs.source_accuracy()}
    src = inputs.apply_to_inputs("source_model", "source")
    f_s = jax.lax.stop_gradient(_feature(src, self.feature_key))
    f_t = _feature(inputs.target, self.feature_key)
    n_s = f_s.shape[0]
    d = inputs.apply("discriminator", jnp.concatenate([f_s, jax.lax.stop_gradient(f_t)]))
    d_loss = losses.adda_discriminator_loss(d[:n_s], d[n_s:])
    d_t = inputs.apply("discriminator", f_t, stop_gradient_params=True)
    g_loss = losses.adda_encoder_loss(d_t)
    return d_loss + g_loss, {
      "discriminator_loss": d_loss,
      "encoder_loss": g_loss,
      "domain_acc": losses.domain_accuracy(d[:n_s], d[n_s:]),
    }


class WDGRL(Method):
  """Wasserstein Distance Guided Representation Learning (Shen et al., AAAI 2018).

  A critic ``c`` (no BatchNorm: the gradient penalty needs per-example gradients)
  estimates ``W = mean c(f_s) - mean c(f_t)``. In one pass, with the reversal
  ``R`` between features and critic:
  ``L = CE_s - trade_off * W(R(f)) + trade_off * gp_weight * GP(c; sg f_s, sg f_t)``:
  the critic maximises ``W - gp_weight * GP``, the features minimise ``W``. The
  reversal coefficient follows ``schedule`` (default TLlib's warm start, as
  :class:`DANN`): with a constant 1 from the first step the adversarial gradient wiped
  out the source classifier before it had learned (digits, trade_off 1.0: source
  accuracy at chance).
  """

  name = "wdgrl"

  def __init__(
    self,
    *,
    trade_off: float = 1.0,
    gp_weight: float = 10.0,
    schedule: str = "warm_start",
    hi: float = 1.0,
    max_iters: float = 1000.0,
    feature_key: str = "bottleneck",
    hidden: tuple[int, ...] = (100,),
    critic: nn.Module | None = None,
  ):
    self.trade_off = trade_off
    self.schedule = schedule
    self.hi = hi
    self.max_iters = max_iters
    self.gp_weight = gp_weight
    self.feature_key = feature_key
    self.hidden = tuple(hidden)
    self.critic = critic

  def extra_modules(self, example):
    dim = _feature(example, self.feature_key).shape[-1]
    critic = self.critic or models.DomainDiscriminator(hidden=self.hidden, batch_norm=False)
    return {"critic": Extra(critic, jnp.zeros((1, dim), jnp.float32))}

  def loss(self, inputs):
    ce = inputs.source_cross_entropy()
    f_s = _feature(inputs.source, self.feature_key)
    f_t = _feature(inputs.target, self.feature_key)
    n_s = f_s.shape[0]
    coeff = _reversal_coeff(self, inputs)
    c = inputs.apply("critic", losses.gradient_reverse(jnp.concatenate([f_s, f_t]), coeff))
    w = losses.wasserstein_critic_loss(c[:n_s], c[n_s:])
    # Gradient penalty on random interpolates (Gulrajani et al. 2017), critic params only.
    n = min(n_s, f_t.shape[0])
    fs, ft = jax.lax.stop_gradient(f_s[:n]), jax.lax.stop_gradient(f_t[:n])
    gp = losses.gradient_penalty(lambda z: inputs.apply("critic", z), fs, ft, key=inputs.rng)
    loss = ce - self.trade_off * w + self.trade_off * self.gp_weight * gp
    return loss, {
      "ce": ce,
      "wasserstein": w,
      "gradient_penalty": gp,
      "grl_coeff": jnp.asarray(coeff, jnp.float32),
      "source_acc": inputs.source_accuracy(),
    }


class DomainConfusion(Method):
  """Domain confusion (Tzeng et al., ICCV 2015), unsupervised part.

  A domain classifier ``D`` learns to tell domains apart on ``sg(f)``
  (``dann_loss``); the features are trained with ``D``'s parameters under
  ``stop_gradient`` to make it maximally confused (cross-entropy against the uniform
  domain distribution, :func:`dtl_jax.losses.domain_confusion_loss`):
  ``L = CE_s + dann_loss(D(sg f)) + trade_off * confusion(D_sg(f))``.
  (The paper's soft-label loss needs labeled target examples; it is not used here.)
  """

  name = "domain_confusion"

  def __init__(
    self,
    *,
    trade_off: float = 0.1,
    feature_key: str = "bottleneck",
    hidden: tuple[int, ...] = (500,),
    batch_norm: bool = False,
    discriminator: nn.Module | None = None,
  ):
    self.trade_off = trade_off
    self.feature_key = feature_key
    self.hidden = tuple(hidden)
    self.batch_norm = batch_norm
    self.discriminator = discriminator

  def extra_modules(self, example):
    dim = _feature(example, self.feature_key).shape[-1]
    return {
      "domain_classifier": Extra(
        self.discriminator
        or models.DomainDiscriminator(hidden=self.hidden, batch_norm=self.batch_norm),
        np.zeros((2, dim), np.float32),
      )
    }

  def loss(self, inputs):
    ce = inputs.source_cross_entropy()
    f_s = _feature(inputs.source, self.feature_key)
    f_t = _feature(inputs.target, self.feature_key)
    n_s = f_s.shape[0]
    f = jnp.concatenate([f_s, f_t])
    d = inputs.apply("domain_classifier", jax.lax.stop_gradient(f))
    d_loss = losses.dann_loss(d[:n_s], d[n_s:])
    d2 = inputs.apply("domain_classifier", f, stop_gradient_params=True)
    conf = losses.domain_confusion_loss(d2[:n_s], d2[n_s:])
    return ce + d_loss + self.trade_off * conf, {
      "ce": ce,
      "domain_loss": d_loss,
      "confusion": conf,
      "domain_acc": losses.domain_accuracy(d[:n_s], d[n_s:]),
      "source_acc": inputs.source_accuracy(),
    }


class Distill(Method):
  """Knowledge distillation (Hinton et al., 2015) from a frozen teacher.

  ``L = (1 - alpha) * CE_s + alpha * distillation_loss(z_student, z_teacher; T)``
  (KL on temperature-softened distributions, times ``T^2``), on the source batch and,
  with ``on_target=True``, also on the unlabeled target batch. The teacher is the
  frozen extra module ``"teacher"`` (inference mode, labelled ``"frozen"``).

  Args:
    teacher: the teacher module (its variables given to the train state), or
    teacher_workdir: a trained run whose model (rebuilt from its ``config.json``) and
      latest checkpoint are the teacher (:meth:`setup` loads them).
  """

  name = "distill"

  def __init__(
    self,
    teacher: Any = None,
    *,
    teacher_workdir: str = "",
    temperature: float = 4.0,
    alpha: float = 0.9,
    on_target: bool = False,
  ):
    if teacher is None and not teacher_workdir:
      raise ValueError(
        "distill needs a teacher: method_kwargs.teacher_workdir = a trained run directory"
      )
    self.teacher = teacher
    self.teacher_workdir = str(teacher_workdir)
    self.temperature = temperature
    self.alpha = alpha
    self.on_target = on_target
    self.uses_target = on_target

  def setup(self, context: SetupContext) -> Setup:
    """Loads the teacher of ``teacher_workdir`` (module and weights)."""
    if not self.teacher_workdir:
      return Setup()
    self.teacher, variables = context.load_run(self.teacher_workdir)
    return Setup(extra_variables={"teacher": variables})

  def extra_modules(self, example):
    return {"teacher": Extra(self.teacher, example["x"], trainable=False)}

  def loss(self, inputs):
    ce = inputs.source_cross_entropy()
    kd_fn = losses.distillation_loss
    t_s = inputs.apply_to_inputs("teacher", "source")
    t_s = t_s["logits"] if isinstance(t_s, dict) else t_s
    kd = kd_fn(inputs.source["logits"], t_s, temperature=self.temperature)
    if self.on_target:
      t_t = inputs.apply_to_inputs("teacher", "target")
      t_t = t_t["logits"] if isinstance(t_t, dict) else t_t
      kd = 0.5 * (kd + kd_fn(inputs.target["logits"], t_t, temperature=self.temperature))
    return (1 - self.alpha) * ce + self.alpha * kd, {
      "ce": ce,
      "distill": kd,
      "source_acc": inputs.source_accuracy(),
    }
