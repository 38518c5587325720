"""Negative-transfer report: bootstrap CI against the normal-approximation standard error."""

import jax
import numpy as np
import pytest

from dtl_jax.stats import negative_transfer_report


def test_flags_adaptation_that_hurts(key):
  adapted = [0.61, 0.63, 0.60, 0.62, 0.64]
  source_only = [0.70, 0.71, 0.69, 0.72, 0.70]
  rep = negative_transfer_report(adapted, source_only, key=key)
  assert rep.negative_transfer and rep.verdict == "hurts"
  assert rep.difference == pytest.approx(np.mean(adapted) - np.mean(source_only))
  assert rep.ci_low <= rep.difference <= rep.ci_high < 0
  assert "NEGATIVE TRANSFER" in str(rep)


def test_helps_and_inconclusive(key):
  rep = negative_transfer_report([0.80, 0.82, 0.81], [0.70, 0.71, 0.69], key=key)
  assert rep.verdict == "helps" and not rep.negative_transfer and rep.ci_low > 0
  rep = negative_transfer_report([0.70, 0.75, 0.65, 0.72], [0.71, 0.69, 0.74, 0.66], key=key)
  assert rep.verdict == "inconclusive" and rep.ci_low < 0 < rep.ci_high


def test_ci_width_matches_standard_error(rng):
  """With many replicates the percentile CI ~ difference ± 1.96 · SE (plug-in, ddof=0)."""
  a = rng.normal(0.75, 0.02, size=30)
  s = rng.normal(0.74, 0.03, size=25)
  rep = negative_transfer_report(a, s, key=jax.random.key(3), num_bootstrap=20_000)
  se = np.sqrt(a.var() / len(a) + s.var() / len(s))
  np.testing.assert_allclose(rep.ci_high - rep.ci_low, 2 * 1.959964 * se, rtol=0.05)
  np.testing.assert_allclose(0.5 * (rep.ci_high + rep.ci_low), a.mean() - s.mean(), atol=0.2 * se)


def test_paired_uses_seed_differences(rng):
  base = rng.normal(0.7, 0.05, size=20)  # seed effects shared by both arms
  adapted = base - 0.01 + 0.002 * rng.normal(size=20)
  unpaired = negative_transfer_report(adapted, base, key=jax.random.key(0))
  paired = negative_transfer_report(adapted, base, key=jax.random.key(0), paired=True)
  d = adapted - base
  np.testing.assert_allclose(
    paired.ci_high - paired.ci_low, 2 * 1.959964 * d.std() / np.sqrt(20), rtol=0.1
  )
  assert paired.negative_transfer and not unpaired.negative_transfer


def test_errors(key):
  with pytest.raises(ValueError, match="adapted_runs.*empty"):
    negative_transfer_report([], [0.5, 0.6], key=key)
  with pytest.raises(ValueError, match="source_only_runs"):
    negative_transfer_report([0.5, 0.6], [0.5], key=key)
  with pytest.raises(ValueError, match="paired"):
    negative_transfer_report([0.5, 0.6, 0.7], [0.5, 0.6], key=key, paired=True)
  with pytest.raises(ValueError, match="confidence"):
    negative_transfer_report([0.5, 0.6], [0.5, 0.6], key=key, confidence=1.5)
