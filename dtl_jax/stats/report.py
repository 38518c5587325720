"""One report for a source/target pair: "should I transfer, and from which backbone?".

:func:`measure_report` is what the ``dtl-jax measure`` command prints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import numpy as np
from jax.typing import ArrayLike

from dtl_jax.stats.mmd_test import mmd_test
from dtl_jax.stats.proxy_a_distance import proxy_a_distance
from dtl_jax.stats.transferability import h_score, leep, logme

RANK_BY = ("logme", "h_score", "leep")


@dataclasses.dataclass(frozen=True)
class MeasureReport:
  """Domain discrepancy and candidate-backbone transferability.

  Attributes:
    num_source, num_target: sample sizes.
    mmd_statistic: MMD² between the source and target features.
    mmd_p_value: permutation p-value of ``H0: same distribution``.
    proxy_a_distance: ``2(1 − 2ε)`` of a held-out domain classifier.
    candidate_scores: ``{name: {"logme": .., "h_score": .., ["leep": ..]}}``.
    ranking: candidate names, best first by ``rank_by``.
    rank_by: the score used for the ranking.
  """

  num_source: int
  num_target: int
  mmd_statistic: float
  mmd_p_value: float
  proxy_a_distance: float
  candidate_scores: dict[str, dict[str, float]]
  ranking: list[str]
  rank_by: str

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def format(self) -> str:
    """A plain-text table, as printed by ``dtl-jax measure``."""
    lines = [
      f"source/target: n_s={self.num_source}, n_t={self.num_target}",
      f"MMD^2 = {self.mmd_statistic:.6g}, permutation p-value = {self.mmd_p_value:.4g}"
      + ("  (distributions differ)" if self.mmd_p_value < 0.05 else ""),
      f"proxy A-distance = {self.proxy_a_distance:.4f}  (0: indistinguishable, 2: separable)",
    ]
    if self.ranking:
      cols = [c for c in RANK_BY if any(c in s for s in self.candidate_scores.values())]
      width = max(len(n) for n in self.ranking + ["candidate"])
      lines.append(f"candidates ranked by {self.rank_by} (higher is better):")
      lines.append("  rank  " + "candidate".ljust(width) + "".join(f"  {c:>10}" for c in cols))
      for i, name in enumerate(self.ranking, 1):
        s = self.candidate_scores[name]
        vals = "".join(f"  {s[c]:>10.4f}" if c in s else f"  {'-':>10}" for c in cols)
        lines.append(f"  {i:>4}  " + name.ljust(width) + vals)
    return "\n".join(lines)

  def __str__(self) -> str:
    return self.format()


def measure_report(
  source_features: ArrayLike,
  target_features: ArrayLike,
  *,
  key: jax.Array,
  target_labels: ArrayLike | None = None,
  candidates: Mapping[str, ArrayLike] | None = None,
  candidate_source_probs: Mapping[str, ArrayLike] | None = None,
  num_classes: int | None = None,
  num_permutations: int = 1000,
  mmd_kernel=None,
  rank_by: str = "logme",
) -> MeasureReport:
  """MMD test, proxy A-distance and transferability scores for a source/target pair.

  Args:
    source_features: ``[n_s, d]`` source features (e.g. from the default backbone).
    target_features: ``[n_t, d]`` target features (same backbone).
    key: PRNG key (permutations and the domain-classifier split).
    target_labels: ``[n_l]`` labels of the labelled target examples the candidates are
      scored on; required when ``candidates`` or ``candidate_source_probs`` are given.
    candidates: ``{name: [n_l, D_name]}`` features of the labelled target examples under
      each candidate backbone; scored by LogME and H-score.
    candidate_source_probs: ``{name: [n_l, Z_name]}`` source-classifier probabilities of
      each candidate on the labelled target examples; scored by LEEP.
    num_classes: number of target classes (inferred from ``target_labels`` if None).
    num_permutations: permutations of the MMD test.
    mmd_kernel: kernel of the MMD test (see :func:`dtl_jax.stats.mmd_test`).
    rank_by: ``"logme"``, ``"h_score"`` or ``"leep"``.

  Returns:
    :class:`MeasureReport`; ``print(report)`` gives the table.
  """
  if rank_by not in RANK_BY:
    raise ValueError(f"`rank_by` must be one of {RANK_BY}; got {rank_by!r}.")
  candidates = dict(candidates or {})
  probs = dict(candidate_source_probs or {})
  if (candidates or probs) and target_labels is None:
    raise ValueError(
      "`target_labels` [n_l] is required to score `candidates` / `candidate_source_probs`."
    )
  k_mmd, k_pad = jax.random.split(key)
  test = mmd_test(
    source_features,
    target_features,
    key=k_mmd,
    num_permutations=num_permutations,
    kernel=mmd_kernel,
  )
  pad = proxy_a_distance(source_features, target_features, key=k_pad)
  scores: dict[str, dict[str, float]] = {}
  if target_labels is not None:  # else there are no candidates (checked above)
    for name, feats in candidates.items():
      scores.setdefault(name, {})
      scores[name]["logme"] = float(logme(feats, target_labels, num_classes=num_classes))
      scores[name]["h_score"] = float(h_score(feats, target_labels, num_classes=num_classes))
    for name, p in probs.items():
      scores.setdefault(name, {})["leep"] = float(leep(p, target_labels, num_classes=num_classes))
  ranked = [n for n in scores if rank_by in scores[n]]
  ranked.sort(key=lambda n: -scores[n][rank_by])
  ranked += [n for n in scores if n not in ranked]
  return MeasureReport(
    num_source=int(np.shape(source_features)[0]),
    num_target=int(np.shape(target_features)[0]),
    mmd_statistic=float(test.statistic),
    mmd_p_value=float(test.p_value),
    proxy_a_distance=float(pad),
    candidate_scores=scores,
    ranking=ranked,
    rank_by=rank_by,
  )
