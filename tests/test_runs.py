"""dtl_jax.runs: run summaries and re-selecting stored runs with another criterion."""

import pytest

from dtl_jax import runs
from dtl_jax.train import selection


def _result():
  # three evaluations; source_val_acc ties at steps 20 and 30 (ties go to the later step),
  # dev is best at step 10
  history = [
    {"step": 10, "scores": {"source_val_acc": 0.5, "dev": -0.1}, "oracle_target_acc": 0.40},
    {"step": 20, "scores": {"source_val_acc": 0.9, "dev": -0.3}, "oracle_target_acc": 0.55},
    {"step": 30, "scores": {"source_val_acc": 0.9, "dev": -0.2}, "oracle_target_acc": 0.50},
  ]
  sel = selection.select(history, criteria=("source_val_acc", "dev"))
  return {
    "selected": sel,
    "history": history,
    "last": {"target_acc": 0.50, "source_acc": 0.9},
    "steps": 30,
  }


def test_result_summary_picks_with_the_default_and_records_it():
  s = runs.result_summary(_result())
  assert runs.DEFAULT_SELECTION == "source_val_acc"
  assert (s["selection"], s["selected_step"]) == ("source_val_acc", 30)
  assert s["selected"] == pytest.approx(50.0) and s["oracle"] == pytest.approx(55.0)
  assert s["by_criterion"] == pytest.approx({"source_val_acc": 50.0, "dev": 40.0})


def test_reselect_takes_the_stored_criterion_and_its_step_from_the_history():
  r = _result()
  legacy = runs.result_summary(r, selection="dev")
  del legacy["selection"]  # a record written before the default changed
  legacy["history"] = [
    {"step": h["step"], "scores": h["scores"], "target_acc": 100 * h["oracle_target_acc"]}
    for h in r["history"]
  ]
  new = runs.reselect(legacy)
  assert (new["selection"], new["selected"], new["selected_step"]) == ("source_val_acc", 50.0, 30)
  assert legacy["selected"] == pytest.approx(40.0)  # the input is not modified
  back = runs.reselect(new, "dev")
  assert (back["selected"], back["selected_step"]) == (pytest.approx(40.0), 10)
  # without a history the step is unknown, the accuracy is still the criterion's pick
  no_hist = runs.reselect({k: v for k, v in legacy.items() if k != "history"})
  assert no_hist["selected"] == pytest.approx(50.0) and no_hist["selected_step"] is None
  # failed runs pass through; an unknown criterion is named
  assert runs.reselect({"error": "TrainingDiverged"})["error"] == "TrainingDiverged"
  with pytest.raises(ValueError, match="'snd' not in the run's criteria"):
    runs.reselect(legacy, "snd")
