"""Instance-based transfer: re-weight source examples so that they look like the target.

* :class:`TrAdaBoost`, :class:`TrAdaBoostR2` -- transfer boosting (Dai et al. 2007;
  Pardoe & Stone 2010); :func:`tradaboost_scan` runs TrAdaBoost with a pure JAX learner
  in one jitted ``lax.scan`` (vmappable over data sets / seeds).
* :func:`kmm_weights` -- kernel mean matching (Huang et al. 2007).
* :func:`domain_classifier_weights` -- calibrated ``p(target|x) / p(source|x)``.
* :func:`kliep_weights` -- KLIEP (Sugiyama et al. 2008).
* Weighted base learners: :class:`LogisticRegression`, :class:`RidgeRegression`,
  :class:`MLPClassifier`, :class:`MLPRegressor` and their pure ``fit_*`` functions.

The importance weights have mean one over the source and plug into the losses'
``source_weights`` and the ``instance_weighted`` method.
"""

from dtl_jax.instance.density_ratio import domain_classifier_weights, kliep_fit, kliep_weights
from dtl_jax.instance.kmm import kmm_solve, kmm_weights, project_box_sum
from dtl_jax.instance.learners import (
  MLP,
  LogisticRegression,
  MLPClassifier,
  MLPRegressor,
  RidgeRegression,
  fit_logistic_regression,
  fit_mlp,
  fit_ridge_regression,
  logistic_regression_logits,
)
from dtl_jax.instance.tradaboost import (
  BoostingUpdate,
  TrAdaBoost,
  TrAdaBoostR2,
  TrAdaBoostResult,
  check_supports_sample_weight,
  tradaboost_beta,
  tradaboost_predict,
  tradaboost_scan,
  tradaboost_update,
)

__all__ = [
  "BoostingUpdate",
  "LogisticRegression",
  "MLP",
  "MLPClassifier",
  "MLPRegressor",
  "RidgeRegression",
  "TrAdaBoost",
  "TrAdaBoostR2",
  "TrAdaBoostResult",
  "check_supports_sample_weight",
  "domain_classifier_weights",
  "fit_logistic_regression",
  "fit_mlp",
  "fit_ridge_regression",
  "kliep_fit",
  "kliep_weights",
  "kmm_solve",
  "kmm_weights",
  "logistic_regression_logits",
  "project_box_sum",
  "tradaboost_beta",
  "tradaboost_predict",
  "tradaboost_scan",
  "tradaboost_update",
]
