"""Only the asked label-free criteria are computed (evaluation cost, issue 15)."""

import jax
import pytest

from dtl_jax import data, models
from dtl_jax.methods import SourceOnly
from dtl_jax.train import create_train_state, evaluation, selection

pytestmark = pytest.mark.usefixtures("fast_compile")


def _arrays(rng):
  logits = rng.normal(size=(30, 4))
  return dict(
    source_val_logits=logits,
    source_val_labels=rng.integers(0, 4, 30),
    source_val_features=rng.normal(size=(30, 5)),
    target_probs=jax.nn.softmax(rng.normal(size=(25, 4)), -1),
    target_features=rng.normal(size=(25, 5)) + 0.5,
  )


def test_a_subset_equals_the_same_entries_of_all_criteria(rng):
  arrays = _arrays(rng)
  full = selection.criteria_scores(**arrays, seed=3)
  assert set(full) == set(selection.CRITERIA)
  for subset in (("source_val_acc",), ("iwv",), ("dev", "snd"), ("entropy", "source_val_acc")):
    got = selection.criteria_scores(**arrays, seed=3, criteria=subset)
    assert set(got) == set(subset)
    for k in subset:
      assert got[k] == pytest.approx(full[k], rel=1e-12)


def test_no_domain_classifier_without_iwv_or_dev(rng, monkeypatch):
  def boom(*args, **kwargs):
    raise AssertionError("the domain classifier was trained")

  monkeypatch.setattr(selection, "domain_importance_weights", boom)
  arrays = _arrays(rng)
  got = selection.criteria_scores(**arrays, criteria=("source_val_acc", "entropy", "snd"))
  assert set(got) == {"source_val_acc", "entropy", "snd"}
  with pytest.raises(AssertionError, match="domain classifier"):
    selection.criteria_scores(**arrays, criteria=("dev",))
  # target arrays are optional unless a target criterion is asked
  arrays.update(target_probs=None, target_features=None, source_val_features=None)
  assert set(selection.criteria_scores(**arrays, criteria=("source_val_acc",))) == {
    "source_val_acc"
  }
  with pytest.raises(ValueError, match="`target_probs` is needed by the entropy criterion"):
    selection.criteria_scores(**arrays, criteria=("entropy",))
  with pytest.raises(ValueError, match="criteria: unknown"):
    selection.criteria_scores(**arrays, criteria=("oracle",))


def test_evaluator_skips_the_target_train_pass(monkeypatch):
  source, target = data.load_pair("moons", "moons_rot", seed=0)
  model = models.TransferModel(models.MLP(hidden=(8,)), None, models.Classifier(2))
  state, _ = create_train_state(
    model, SourceOnly(), key=jax.random.key(0), example_x=source.x_train[:2], learning_rate=0.1
  )
  seen = []
  real_predict = evaluation.predict

  def spy(step, st, x, **kwargs):
    seen.append(len(x))
    return real_predict(step, st, x, **kwargs)

  monkeypatch.setattr(evaluation, "predict", spy)
  val = (source.x_test[:20], source.y_test[:20])
  common = dict(
    source_val=val,
    source_test=(source.x_test, source.y_test),
    target_train=target.x_train,
    target_test=(target.x_test, target.y_test),
    batch_size=64,
    seed=0,
  )
  rec = evaluation.Evaluator(model, criteria=("source_val_acc",), **common)(state, 1)
  assert set(rec["scores"]) == {"source_val_acc"}
  assert seen == [20, len(source.x_test), len(target.x_test)]
  seen.clear()
  rec = evaluation.Evaluator(model, **common)(state, 1)
  assert set(rec["scores"]) == set(selection.CRITERIA)
  assert seen == [20, len(target.x_train), len(source.x_test), len(target.x_test)]
