"""Evaluation during training: accuracies, label-free selection scores, collapse check.

At each evaluation point :class:`Evaluator` computes, for the current state:

* source test accuracy and the target test accuracy (the *oracle*: target labels, only
  ever reported next to the label-free choices, never used to make them);
* the label-free selection scores of :mod:`dtl_jax.train.selection` on the held-out
  source validation split and the unlabelled target training data;
* whether the source classifier is still at chance (:func:`at_chance`): a run that
  collapsed (e.g. a learning rate far too large) is reported, not silently finished.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from dtl_jax import xla_options
from dtl_jax.data import pipeline
from dtl_jax.train import selection as selection_lib
from dtl_jax.train.state import TrainState, apply_model


def make_eval_step(model: Any) -> Callable[[TrainState, jax.Array], dict]:
  """Jitted inference ``(state, x [n, ...]) -> outputs dict`` (``"logits"``,
  ``"probs"`` and feature outputs) with BatchNorm in inference mode."""

  @functools.partial(jax.jit, compiler_options=xla_options.step_compiler_options())
  def eval_step(state: TrainState, x: jax.Array) -> dict:
    variables = {"params": state.params["model"], "batch_stats": state.batch_stats["model"]}
    outputs, _ = apply_model(model, variables, x, train=False)
    outputs = dict(outputs)
    outputs["probs"] = jax.nn.softmax(outputs["logits"], axis=-1)
    return outputs

  return eval_step


def predict(
  eval_step,
  state: Any,
  x: Any,
  *,
  batch_size: int = 512,
  keys: tuple[str, ...] = ("logits", "probs", "bottleneck"),
  threads: int = 0,
  prefetch: int = 2,
) -> dict[str, np.ndarray]:
  """Runs ``eval_step(state, x_b)`` over ``x`` (``[n, ...]`` array or lazy view; ``state``
  is whatever the step takes first: a :class:`TrainState`, a variables dict), streamed in batches
  (:func:`dtl_jax.data.pipeline.eval_batches`, last one padded); returns numpy arrays.

  ``keys`` may include ``"pred"``: the argmax of the logits, ``[n]`` int (what an
  accuracy pass keeps, instead of the ``[n, C]`` logits).
  """
  if len(x) == 0:
    raise ValueError("x must hold at least one example")
  chunks: dict[str, list] = {}
  for xb, m in pipeline.eval_batches(x, batch_size=batch_size, threads=threads, prefetch=prefetch):
    out = eval_step(state, xb)
    for k in keys:
      if k == "pred":
        chunks.setdefault(k, []).append(np.argmax(np.asarray(out["logits"])[:m], -1))
      elif k in out:
        chunks.setdefault(k, []).append(np.asarray(out[k])[:m])
  return {k: np.concatenate(v, 0) for k, v in chunks.items()}


def accuracy_report(
  logits: np.ndarray, labels: np.ndarray, num_classes: int | None = None
) -> dict[str, Any]:
  """Accuracy and per-class accuracy (``nan`` for classes absent from ``labels``)."""
  return _accuracy(np.argmax(logits, -1), np.asarray(labels), num_classes or logits.shape[-1])


def _accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
  per_class = []
  for c in range(num_classes):
    mask = labels == c
    per_class.append(float(np.mean(pred[mask] == c)) if mask.any() else float("nan"))
  return {"accuracy": float(np.mean(pred == labels)), "per_class": per_class}


def at_chance(accuracy: float, labels: np.ndarray) -> tuple[bool, float]:
  """Whether ``accuracy`` on ``labels`` is no better than always guessing.

  The baseline is the majority-class rate ``p`` of ``labels``; an accuracy below
  ``p + 3 sqrt(p (1 - p) / n)`` (three binomial standard errors above the baseline)
  is at chance.

  Returns:
    ``(at_chance, threshold)``.
  """
  labels = np.asarray(labels)
  n = len(labels)
  if n == 0:
    return False, float("nan")
  p = float(np.max(np.bincount(labels))) / n
  threshold = p + 3.0 * math.sqrt(p * (1.0 - p) / n)
  return bool(accuracy < threshold), threshold


class Evaluator:
  """Evaluates a train state on the run's splits (see the module docstring).

  Every pass streams its split in batches of ``batch_size`` (images of a streaming
  domain are decoded by ``threads`` threads, ``prefetch`` batches ahead); what stays in
  memory is the predicted class of each test image and, for the selection criteria, the
  target training images' bottleneck features and class probabilities
  (``[n_t, d + C]`` floats).

  Args:
    model: the inference model (no device axis).
    source_val: ``(x, y)`` held-out source validation data.
    source_test: ``(x, y)`` the source test split.
    target_train: ``x`` of the target training split (unlabelled selection data).
    target_test: ``(x, y)`` the target test split (oracle accuracy).
    batch_size: evaluation batch size.
    seed: seed of the selection criteria's domain classifier.
    criteria: the label-free criteria to score (``train.selection``); only what they
      need is computed (no target-train pass for ``source_val_acc`` alone).
    threads, prefetch: decoding of lazy splits
      (:func:`dtl_jax.data.pipeline.eval_batches`).
  """

  def __init__(
    self,
    model: Any,
    *,
    source_val: tuple[Any, np.ndarray],
    source_test: tuple[Any, np.ndarray],
    target_train: Any,
    target_test: tuple[Any, np.ndarray],
    batch_size: int,
    seed: int,
    criteria: tuple[str, ...] = selection_lib.CRITERIA,
    threads: int = 0,
    prefetch: int = 2,
  ):
    self.source_val, self.source_test = source_val, source_test
    self.target_train, self.target_test = target_train, target_test
    self.batch_size = batch_size
    self.seed = seed
    self.criteria = tuple(criteria)
    self.threads, self.prefetch = threads, prefetch
    self._eval_step = make_eval_step(model)

  def __call__(self, state: TrainState, step: int) -> dict[str, Any]:
    """One evaluation record ``{"step", "scores", "source_test_acc", ...}``."""

    def predict_(x, keys):
      return predict(
        self._eval_step,
        state,
        x,
        batch_size=self.batch_size,
        keys=keys,
        threads=self.threads,
        prefetch=self.prefetch,
      )

    needs_features = bool({"iwv", "dev"} & set(self.criteria))
    needs_target = needs_features or bool({"entropy", "snd"} & set(self.criteria))
    keys = ("logits", "probs", "bottleneck") if needs_features else ("logits",)
    out_val = predict_(self.source_val[0], keys)
    out_tt = predict_(self.target_train, ("probs", "bottleneck")) if needs_target else {}
    num_classes = out_val["logits"].shape[-1]
    src = _accuracy(
      predict_(self.source_test[0], ("pred",))["pred"],
      np.asarray(self.source_test[1]),
      num_classes,
    )
    tgt = _accuracy(
      predict_(self.target_test[0], ("pred",))["pred"],
      np.asarray(self.target_test[1]),
      num_classes,
    )
    scores = selection_lib.criteria_scores(
      source_val_logits=out_val["logits"],
      source_val_labels=self.source_val[1],
      source_val_features=out_val.get("bottleneck"),
      target_probs=out_tt.get("probs"),
      target_features=out_tt.get("bottleneck"),
      seed=self.seed,
      criteria=self.criteria,
    )
    return {
      "step": int(step),
      "scores": scores,
      "source_test_acc": src["accuracy"],
      "source_test_per_class": src["per_class"],
      "oracle_target_acc": tgt["accuracy"],
      "oracle_target_per_class": tgt["per_class"],
    }

  def chance_warning(self, record: dict[str, Any]) -> str | None:
    """A message when the record's source test accuracy is at chance, else ``None``."""
    bad, threshold = at_chance(record["source_test_acc"], np.asarray(self.source_test[1]))
    if not bad:
      return None
    return (
      f"source test accuracy {100 * record['source_test_acc']:.1f}% at step "
      f"{record['step']} is at chance (below {100 * threshold:.1f}%, three standard "
      "errors above always guessing the majority class): the run has not learned "
      "the source task; check optim.learning_rate and the method's trade_off"
    )


def flat_record(record: dict[str, Any]) -> dict[str, Any]:
  """An evaluation record as flat numbers (``metrics.jsonl`` / TensorBoard)."""
  out = {
    "kind": "eval",
    "step": record["step"],
    "source_test_acc": record["source_test_acc"],
    "oracle_target_acc": record["oracle_target_acc"],
  }
  out.update({f"select_{k}": v for k, v in record["scores"].items()})
  return out
