"""Online test-time adaptation: stream target batches, score each one BEFORE adapting on it.

The protocol of the test-time adaptation papers (Wang et al., "Tent: Fully Test-Time
Adaptation by Entropy Minimization", ICLR 2021; Schneider et al., "Improving robustness
against common corruptions by covariate shift adaptation", NeurIPS 2020): the model sees
each target batch once, predicts it, and only then updates; the reported accuracy is that
of the predictions made before each update. A stream may be a sequence of shifts
(rotation, noise, inversion, ...), with the model reset to the source weights between
shifts (Tent's per-corruption evaluation) or never (continual adaptation).

:func:`make_tent_step` is the jitted Tent step (BatchNorm affine parameters only,
:func:`dtl_jax.methods.source_free.tent_optimizer`); :func:`online_tta` runs a stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dtl_jax import losses
from dtl_jax.methods.source_free import tent_apply_fn, tent_optimizer

MODES = ("source", "norm", "tent")
RESETS = ("shift", "never")


class TentState(NamedTuple):
  """The adapted model and its optimizer state (a pytree)."""

  params: Any
  batch_stats: Any
  opt_state: Any


def make_tent_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  *,
  loss_fn: Callable[[jax.Array], jax.Array] = losses.tent_loss,
) -> Callable[[TentState, jax.Array], tuple[TentState, jax.Array, jax.Array]]:
  """The jitted Tent step ``(state, x [n, ...]) -> (new_state, logits [n, C], loss)``.

  One forward pass in Tent's model mode (:func:`~dtl_jax.methods.source_free.tent_apply_fn`:
  BatchNorm with the batch statistics, dropout off) gives the logits -- returned, so the
  caller scores the batch with the model *before* this update, as Tent's
  ``forward_and_adapt`` does -- and the loss (:func:`dtl_jax.losses.tent_loss`); one
  ``tx`` update follows. The running statistics are updated by the forward pass (Tent's
  own code discards them; they matter only for a later inference-mode evaluation).

  Args:
    model: a Flax module returning a dict with ``"logits"`` (or a logits array).
    tx: the optimizer over ``params``, normally
      :func:`~dtl_jax.methods.source_free.tent_optimizer` (BatchNorm affine only).
    loss_fn: ``logits -> scalar`` (Tent's mean entropy).
  """
  apply = tent_apply_fn(model)

  @jax.jit
  def step(state: TentState, x: jax.Array):

    def objective(params):
      out, new_state = apply({"params": params, "batch_stats": state.batch_stats}, x, train=True)
      return loss_fn(out["logits"]), (out["logits"], new_state["batch_stats"])

    (loss, (logits, stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TentState(params, stats, opt_state), logits, loss

  return step


@dataclasses.dataclass
class OnlineTTAResult:
  """What :func:`online_tta` returns (accuracies are fractions in [0, 1]).

  Attributes:
    per_batch: ``{shift: [n_batches]}`` accuracy of each batch, predicted before the
      model updated on it.
    batch_sizes: ``{shift: [n_batches]}`` examples per batch.
    per_shift: ``{shift: accuracy}`` over all examples of the shift.
    accuracy: over all examples of the stream.
    losses: ``{shift: [n_batches]}`` the Tent loss of each batch (``nan`` for the modes
      that do not compute it).
    variables: ``{"params", "batch_stats"}`` at the end of the stream.
  """

  per_batch: dict[str, np.ndarray]
  batch_sizes: dict[str, np.ndarray]
  per_shift: dict[str, float]
  accuracy: float
  losses: dict[str, np.ndarray]
  variables: dict[str, Any]


def _check_batch(shift: str, i: int, batch: Any) -> tuple[jax.Array, np.ndarray]:
  if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
    raise ValueError(
      f"shift {shift!r}, batch {i}: expected an (x, y) pair, got {type(batch).__name__}"
    )
  x, y = jnp.asarray(batch[0]), np.asarray(batch[1])
  if x.ndim < 1 or x.shape[0] == 0:
    raise ValueError(
      f"shift {shift!r}, batch {i}: x must be a non-empty [n, ...] array, "
      f"got shape {tuple(x.shape)}"
    )
  if y.shape != (x.shape[0],):
    raise ValueError(f"shift {shift!r}, batch {i}: y must have shape [{x.shape[0]}], got {y.shape}")
  return x, y


def online_tta(
  model: nn.Module,
  variables: Mapping[str, Any],
  shifts: Mapping[str, Iterable[tuple[Any, Any]]],
  *,
  mode: str = "tent",
  reset: str = "shift",
  learning_rate: float = 1e-3,
  base_tx: optax.GradientTransformation | None = None,
) -> OnlineTTAResult:
  """Online test-time adaptation over a stream of target batches, scored before each update.

  For every batch ``(x, y)`` of every shift, in order: predict ``x``, record the accuracy
  against ``y`` (labels are only scored, never used to adapt), then adapt on ``x``.

  Modes:

  * ``"source"``: the source model in inference mode (running statistics), no update
    (the no-adaptation baseline on the same stream);
  * ``"norm"``: BatchNorm with the statistics of the current batch, no update (test-time
    normalisation, Schneider et al. 2020; Tent's forward without the step);
  * ``"tent"``: Tent (Wang et al., ICLR 2021): the batch-statistics prediction, then one
    entropy-minimisation step on the BatchNorm scale / bias (:func:`make_tent_step`).

  Args:
    model: the source model (Flax module returning ``"logits"``), with BatchNorm.
    variables: its ``{"params", "batch_stats"}``.
    shifts: ``{name: iterable of (x [n, ...], y [n]) batches}``, streamed in order (a
      single target: ``{"target": batches}``).
    mode: ``"source"``, ``"norm"`` or ``"tent"``.
    reset: ``"shift"`` restores the source weights, statistics and optimizer state at the
      start of every shift; ``"never"`` adapts continually across shifts.
    learning_rate: Tent's Adam learning rate (1e-3, Tent's CIFAR setting).
    base_tx: instead of Adam, the transformation for the BatchNorm affine parameters.

  Returns:
    An :class:`OnlineTTAResult`.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if reset not in RESETS:
    raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
  if not isinstance(shifts, Mapping) or not shifts:
    raise ValueError("shifts must be a non-empty mapping {name: iterable of (x, y) batches}")
  source_vars = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  opt_state = tent_step = None
  if mode == "tent":
    tx = tent_optimizer(source_vars, learning_rate=learning_rate, base_tx=base_tx)
    opt_state = tx.init(source_vars["params"])
    tent_step = make_tent_step(model, tx)
  fresh = TentState(source_vars["params"], source_vars["batch_stats"], opt_state)
  apply = tent_apply_fn(model)

  @jax.jit
  def predict(state: TentState, x: jax.Array) -> jax.Array:
    out, _ = apply(
      {"params": state.params, "batch_stats": state.batch_stats}, x, train=(mode == "norm")
    )
    return out["logits"]

  state = fresh
  per_batch, sizes, per_shift, loss_log = {}, {}, {}, {}
  correct_all = total_all = 0
  for shift, batches in shifts.items():
    if reset == "shift":
      state = fresh
    accs, ns, ls = [], [], []
    correct = 0
    for i, batch in enumerate(batches):
      x, y = _check_batch(shift, i, batch)
      if tent_step is not None:
        state, logits, loss = tent_step(state, x)
        ls.append(float(loss))
      else:
        logits = predict(state, x)
        ls.append(float("nan"))
      hits = int(np.sum(np.asarray(jnp.argmax(logits, axis=-1)) == y))
      correct += hits
      accs.append(hits / len(y))
      ns.append(len(y))
    if not ns:
      raise ValueError(f"shift {shift!r} has no batch")
    per_batch[shift] = np.asarray(accs)
    sizes[shift] = np.asarray(ns)
    loss_log[shift] = np.asarray(ls)
    per_shift[shift] = correct / int(np.sum(sizes[shift]))
    correct_all += correct
    total_all += int(np.sum(sizes[shift]))
  return OnlineTTAResult(
    per_batch=per_batch,
    batch_sizes=sizes,
    per_shift=per_shift,
    accuracy=correct_all / total_all,
    losses=loss_log,
    variables={"params": state.params, "batch_stats": state.batch_stats},
  )


__all__ = ["MODES", "OnlineTTAResult", "TentState", "make_tent_step", "online_tta"]
