"""Label-free model selection: criteria computed without target labels.

Most domain-adaptation code picks the best epoch on the labelled target test set; that
is an oracle. These criteria use source labels and unlabelled target data only
(higher score = better; risks are negated):

* ``source_val_acc`` -- accuracy on held-out source data.
* ``iwv`` -- importance-weighted validation (Sugiyama, Krauledat & Mueller, JMLR 2007):
  ``-(1/n) sum_i w(x_i) CE(x_i)`` on source validation, ``w = p_t(x)/p_s(x)``
  estimated by a logistic-regression domain classifier on the model's features.
* ``dev`` -- deep embedded validation (You et al., ICML 2019): the IWV risk with a
  control variate, ``R = mean(w l) + eta mean(w) - eta``,
  ``eta = -Cov(w l, w) / Var(w)``; score ``-R``.
* ``entropy`` -- mean prediction entropy on target data (Grandvalet & Bengio 2004;
  lower is better; score ``-H``).
* ``snd`` -- soft neighborhood density (Saito et al., ICCV 2021): with ``p`` the
  L2-normalized target softmax outputs, ``S = p p^T`` (diagonal excluded),
  ``P = softmax(S / tau)`` row-wise (``tau = 0.05``), score = mean row entropy of ``P``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CRITERIA = ("source_val_acc", "iwv", "dev", "entropy", "snd")


def _log_softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-example cross-entropy ``[n]`` (float64)."""
  lp = _log_softmax(np.asarray(logits, np.float64))
  return -lp[np.arange(len(labels)), np.asarray(labels)]


def domain_importance_weights(
  source_features: np.ndarray, target_features: np.ndarray, *, clip: float = 20.0, seed: int = 0
) -> np.ndarray:
  """``w(x) = p(target|x)/p(source|x) * n_s/n_t`` for the source rows, from a
  logistic-regression domain classifier (standardized features), clipped to
  ``[0, clip]``. ``[n_s, d], [n_t, d] -> [n_s]``.
  """
  from sklearn.linear_model import LogisticRegression

  xs = np.asarray(source_features, np.float64).reshape(len(source_features), -1)
  xt = np.asarray(target_features, np.float64).reshape(len(target_features), -1)
  if len(xs) < 2 or len(xt) < 2:
    raise ValueError(f"need >= 2 source and target rows, got {len(xs)} and {len(xt)}")
  x = np.concatenate([xs, xt])
  mu, sd = x.mean(0), x.std(0) + 1e-8
  x = (x - mu) / sd
  d = np.concatenate([np.zeros(len(xs)), np.ones(len(xt))])
  clf = LogisticRegression(C=1.0, max_iter=500, random_state=seed)
  clf.fit(x, d)
  p = clf.predict_proba(x[: len(xs)])[:, 1]
  p = np.clip(p, 1e-6, 1 - 1e-6)
  w = p / (1 - p) * len(xs) / len(xt)
  return np.clip(w, 0.0, clip)


def iwv_risk(losses: np.ndarray, weights: np.ndarray) -> float:
  """Importance-weighted validation risk ``mean(w * l)`` (Sugiyama et al. 2007)."""
  return float(np.mean(np.asarray(weights) * np.asarray(losses)))


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
  """Deep embedded validation risk (You et al. 2019, Alg. 1).

  ``L = w * l``; ``eta = -Cov(L, w) / Var(w)``; ``R = mean(L) + eta * mean(w) - eta``.
  """
  w = np.asarray(weights, np.float64)
  wl = w * np.asarray(losses, np.float64)
  var = np.var(w, ddof=1) if len(w) > 1 else 0.0
  if var < 1e-12:
    return float(np.mean(wl))
  cov = np.cov(np.stack([wl, w]), ddof=1)[0, 1]
  eta = -cov / var
  return float(np.mean(wl) + eta * np.mean(w) - eta)


def prediction_entropy(probs: np.ndarray) -> float:
  """Mean entropy ``-(1/n) sum_i sum_c p_ic log p_ic`` of target predictions."""
  p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
  return float(np.mean(-(p * np.log(p)).sum(-1)))


def snd(probs: np.ndarray, *, temperature: float = 0.05) -> float:
  """Soft neighborhood density (Saito et al., ICCV 2021). ``[n_t, C] -> float``.

  ``f = p / ||p||``; ``S_ij = f_i . f_j`` with ``S_ii`` excluded; ``P = softmax(S/tau)``
  per row; SND = ``mean_i H(P_i)`` (higher is better). Computed in blocks of rows, so
  memory stays about ``2**20`` similarities whatever ``n_t`` (time is ``O(n_t^2 C)``).
  """
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or len(p) < 2:
    raise ValueError(f"probs must be [n >= 2, C], got shape {p.shape}")
  f = p / (np.linalg.norm(p, axis=1, keepdims=True) + 1e-12)
  n = len(f)
  rows = max(1, 2**20 // n)
  total = 0.0
  for start in range(0, n, rows):
    s = f[start : start + rows] @ f.T / temperature
    s[np.arange(len(s)), np.arange(start, start + len(s))] = -np.inf
    lp = _log_softmax(s)
    pr = np.exp(lp)
    total += float(np.sum(-np.sum(pr * np.where(pr > 0, lp, 0.0), axis=1)))
  return total / n


def criteria_scores(
  *,
  source_val_logits: np.ndarray,
  source_val_labels: np.ndarray,
  source_val_features: np.ndarray | None,
  target_probs: np.ndarray | None,
  target_features: np.ndarray | None,
  seed: int = 0,
  criteria: Sequence[str] = CRITERIA,
) -> dict[str, float]:
  """The label-free ``criteria`` as scores (higher is better) for one checkpoint.

  Only what the asked criteria need is computed: the domain classifier (and the
  scikit-learn import) only for ``iwv`` / ``dev``; the target arrays may be ``None`` when
  no target-based criterion is asked.
  """
  unknown = sorted(set(criteria) - set(CRITERIA))
  if unknown:
    raise ValueError(f"criteria: unknown {unknown}; known: {CRITERIA}")
  out: dict[str, float] = {}
  if "source_val_acc" in criteria:
    acc = np.mean(np.argmax(source_val_logits, -1) == np.asarray(source_val_labels))
    out["source_val_acc"] = float(acc)
  if "iwv" in criteria or "dev" in criteria:
    losses = cross_entropy(source_val_logits, source_val_labels)
    w = domain_importance_weights(
      _needed(source_val_features, "source_val_features", "iwv / dev"),
      _needed(target_features, "target_features", "iwv / dev"),
      seed=seed,
    )
    if "iwv" in criteria:
      out["iwv"] = -iwv_risk(losses, w)
    if "dev" in criteria:
      out["dev"] = -dev_risk(losses, w)
  if "entropy" in criteria:
    out["entropy"] = -prediction_entropy(_needed(target_probs, "target_probs", "entropy"))
  if "snd" in criteria:
    out["snd"] = snd(_needed(target_probs, "target_probs", "snd"))
  return out


def _needed(x: np.ndarray | None, name: str, criterion: str) -> np.ndarray:
  if x is None:
    raise ValueError(f"`{name}` is needed by the {criterion} criterion, got None")
  return x


def select(
  history: Sequence[Mapping[str, Any]], criteria: Sequence[str] = CRITERIA
) -> dict[str, dict[str, Any]]:
  """Picks, per criterion, the evaluation record with the best score.

  Args:
    history: records ``{"step": int, "scores": {criterion: float},
      "oracle_target_acc": float, ...}`` in step order.
    criteria: names to select with.

  Returns:
    ``{criterion: {"step", "score", "target_acc"}}`` plus ``"last"`` (the final
    record). ``target_acc`` is the oracle accuracy at the chosen step, reported only;
    ties go to the later step.
  """
  if not history:
    raise ValueError("history is empty: evaluate at least once before selecting")
  out = {}
  for c in criteria:
    best = None
    for rec in history:
      s = rec["scores"].get(c)
      if s is None or not np.isfinite(s):
        continue
      if best is None or s >= best["scores"][c]:
        best = rec
    if best is not None:
      out[c] = {
        "step": int(best["step"]),
        "score": float(best["scores"][c]),
        "target_acc": best.get("oracle_target_acc"),
      }
  last = history[-1]
  out["last"] = {
    "step": int(last["step"]),
    "score": None,
    "target_acc": last.get("oracle_target_acc"),
  }
  return out
