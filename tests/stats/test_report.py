"""measure_report: the numbers it prints are those of the individual measures."""

import jax
import numpy as np
import pytest

from dtl_jax.stats import h_score, leep, logme, measure_report, mmd_test, proxy_a_distance


def test_report_combines_measures_and_ranks_candidates(rng):
  src = rng.normal(size=(60, 3))
  tgt = rng.normal(size=(50, 3)) + 0.8
  y = rng.integers(0, 3, size=40)
  means = 2 * rng.normal(size=(3, 4))
  good = means[y] + rng.normal(size=(40, 4))
  bad = rng.normal(size=(40, 4))
  probs = np.full((40, 3), 0.1)
  probs[np.arange(40), y] = 0.8
  key = jax.random.key(0)
  rep = measure_report(
    src,
    tgt,
    key=key,
    target_labels=y,
    candidates={"noise": bad, "resnet": good},
    candidate_source_probs={"resnet": probs},
    num_permutations=99,
  )
  k_mmd, k_pad = jax.random.split(key)
  test = mmd_test(src, tgt, key=k_mmd, num_permutations=99)
  assert rep.mmd_p_value == pytest.approx(float(test.p_value))
  assert rep.mmd_p_value == pytest.approx(0.01)  # clearly shifted: no permutation beats it
  assert rep.proxy_a_distance == pytest.approx(float(proxy_a_distance(src, tgt, key=k_pad)))
  assert rep.ranking == ["resnet", "noise"]
  assert rep.candidate_scores["resnet"]["logme"] == pytest.approx(float(logme(good, y)))
  assert rep.candidate_scores["noise"]["h_score"] == pytest.approx(float(h_score(bad, y)))
  assert rep.candidate_scores["resnet"]["leep"] == pytest.approx(float(leep(probs, y)))
  text = rep.format()
  assert "p-value" in text and "proxy A-distance" in text and "resnet" in text
  assert text.index("resnet") < text.index("noise")


def test_report_errors(rng):
  x = rng.normal(size=(10, 2))
  with pytest.raises(ValueError, match="target_labels"):
    measure_report(x, x, key=jax.random.key(0), candidates={"a": x})
  with pytest.raises(ValueError, match="rank_by"):
    measure_report(x, x, key=jax.random.key(0), rank_by="accuracy")
