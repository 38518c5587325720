"""Did adaptation help? Target-accuracy differences with bootstrap confidence intervals.

Negative transfer (Pan & Yang 2010; Wang et al., CVPR 2019): adaptation that makes the
target accuracy *worse* than simply training on the source.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


@dataclasses.dataclass(frozen=True)
class NegativeTransferReport:
  """Difference ``mean(adapted) − mean(source_only)`` of target accuracies over seeds.

  Attributes:
    mean_adapted, mean_source_only: mean target accuracy of each group.
    difference: ``mean_adapted − mean_source_only``.
    ci_low, ci_high: percentile-bootstrap confidence interval of the difference.
    confidence: its level, e.g. 0.95.
    num_adapted, num_source_only: number of runs (seeds) in each group.
    verdict: ``"hurts"`` (CI entirely below 0), ``"helps"`` (entirely above 0) or
      ``"inconclusive"``.
    negative_transfer: ``verdict == "hurts"``.
  """

  mean_adapted: float
  mean_source_only: float
  difference: float
  ci_low: float
  ci_high: float
  confidence: float
  num_adapted: int
  num_source_only: int
  verdict: str
  negative_transfer: bool

  def __str__(self) -> str:
    flag = "  <-- NEGATIVE TRANSFER" if self.negative_transfer else ""
    return (
      f"adapted {self.mean_adapted:.4f} (n={self.num_adapted}) vs source-only "
      f"{self.mean_source_only:.4f} (n={self.num_source_only}): difference "
      f"{self.difference:+.4f}, {100 * self.confidence:.0f}% CI "
      f"[{self.ci_low:+.4f}, {self.ci_high:+.4f}] -> {self.verdict}{flag}"
    )


def _runs(x, name):
  a = np.asarray(x, np.float64)
  if a.ndim != 1:
    raise ValueError(
      f"`{name}` must be a 1-D sequence of per-seed accuracies [num_runs]; got shape {a.shape}."
    )
  if a.shape[0] < 2:
    raise ValueError(
      f"`{name}` needs at least 2 runs (seeds) for a bootstrap interval; "
      f"got {a.shape[0]}" + (" (empty input)." if a.shape[0] == 0 else ".")
    )
  if not np.all(np.isfinite(a)):
    raise ValueError(f"`{name}` must be finite.")
  return a


@functools.partial(jax.jit, static_argnames=("num_bootstrap", "paired"))
def _bootstrap(key, a, s, *, num_bootstrap, paired):
  """``[num_bootstrap]`` replicates of ``mean(adapted) − mean(source_only)``."""
  k_a, k_s = jax.random.split(key)
  if paired:
    d = a - s
    idx = jax.random.randint(k_a, (num_bootstrap, d.shape[0]), 0, d.shape[0])
    return jnp.mean(d[idx], axis=1)
  ia = jax.random.randint(k_a, (num_bootstrap, a.shape[0]), 0, a.shape[0])
  is_ = jax.random.randint(k_s, (num_bootstrap, s.shape[0]), 0, s.shape[0])
  return jnp.mean(a[ia], axis=1) - jnp.mean(s[is_], axis=1)


def negative_transfer_report(
  adapted_runs: ArrayLike,
  source_only_runs: ArrayLike,
  *,
  key: jax.Array,
  num_bootstrap: int = 10_000,
  confidence: float = 0.95,
  paired: bool = False,
) -> NegativeTransferReport:
  """Bootstraps the target-accuracy difference between adapted and source-only runs.

  Unpaired (default): each group's seeds are resampled with replacement independently
  and the difference of the resampled means is recorded. Paired (``paired=True``, equal
  numbers of runs that share seeds): the per-seed differences are resampled. The interval
  is the ``[(1−c)/2, (1+c)/2]`` percentile interval of the ``num_bootstrap`` replicates.

  Args:
    adapted_runs: ``[r_a]`` target accuracies of the adapted model, one per seed (r_a ≥ 2).
    source_only_runs: ``[r_s]`` target accuracies of the source-only model (r_s ≥ 2).
    key: PRNG key for the resampling.
    num_bootstrap: number of bootstrap replicates.
    confidence: interval level in (0, 1).
    paired: resample seed-matched differences.

  Returns:
    :class:`NegativeTransferReport`; ``negative_transfer`` is True when the whole interval
    lies below zero (adaptation hurts).
  """
  a = _runs(adapted_runs, "adapted_runs")
  s = _runs(source_only_runs, "source_only_runs")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"`confidence` must be in (0, 1); got {confidence}.")
  if num_bootstrap < 1:
    raise ValueError(f"`num_bootstrap` must be >= 1; got {num_bootstrap}.")
  if paired and a.shape != s.shape:
    raise ValueError(
      "`paired=True` needs as many adapted_runs as source_only_runs; got "
      f"{a.shape[0]} and {s.shape[0]}."
    )
  reps = np.asarray(
    _bootstrap(key, jnp.asarray(a), jnp.asarray(s), num_bootstrap=num_bootstrap, paired=paired)
  )
  lo, hi = np.quantile(reps, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
  verdict = "hurts" if hi < 0 else ("helps" if lo > 0 else "inconclusive")
  return NegativeTransferReport(
    mean_adapted=float(a.mean()),
    mean_source_only=float(s.mean()),
    difference=float(a.mean() - s.mean()),
    ci_low=float(lo),
    ci_high=float(hi),
    confidence=confidence,
    num_adapted=int(a.shape[0]),
    num_source_only=int(s.shape[0]),
    verdict=verdict,
    negative_transfer=bool(hi < 0),
  )
