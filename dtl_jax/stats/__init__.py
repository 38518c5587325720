"""Measurement: should I transfer, from which model, and did it help?

* :func:`mmd_test` -- MMD two-sample permutation test (Gretton et al. 2012).
* :func:`proxy_a_distance` -- ``2(1 − 2ε)`` from a held-out domain classifier (Ben-David et al.).
* :func:`leep`, :func:`logme`, :func:`h_score` -- transferability of a pretrained model
  to a labelled target task without training it.
* :func:`negative_transfer_report` -- adapted vs source-only target accuracy, bootstrap CI.
* :func:`measure_report` -- all of the above for a source/target pair (``dtl-jax measure``).
"""

from dtl_jax.stats.mmd_test import MMDTestResult, mmd_statistic_from_gram, mmd_test
from dtl_jax.stats.negative_transfer import NegativeTransferReport, negative_transfer_report
from dtl_jax.stats.proxy_a_distance import proxy_a_distance
from dtl_jax.stats.report import MeasureReport, measure_report
from dtl_jax.stats.transferability import h_score, leep, logme

__all__ = [
  "MMDTestResult",
  "MeasureReport",
  "NegativeTransferReport",
  "h_score",
  "leep",
  "logme",
  "measure_report",
  "mmd_statistic_from_gram",
  "mmd_test",
  "negative_transfer_report",
  "proxy_a_distance",
]
