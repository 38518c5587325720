"""``Method.uses_target = False``: the step runs the model on the source batch only.

Checked against an independent step written here (optax on the cross-entropy of the model
applied to ``x_s`` alone, BatchNorm statistics of the source batch), against garbage
target inputs (NaN: the result must not change), and for the error a method gets when it
reads ``inputs.target`` without declaring it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dtl_jax import methods, train
from dtl_jax.methods import LossMethod
from tests.train import test_step

pytestmark = pytest.mark.usefixtures("fast_compile")


def _batch(seed=0, n=12, n_t=10):  # source and target batches of different sizes
  return test_step._batch(seed, n=n, n_t=n_t)


_model, _setup = test_step._model, test_step._setup


def test_source_only_step_equals_a_step_on_the_source_batch_alone():
  method = methods.SourceOnly()
  assert method.uses_target is False
  model, state, tx = _setup(method)
  batch = _batch()
  new, metrics = train.jit_step(train.make_train_step(model, method, tx), donate=False)(
    state, batch
  )

  # Independent reference: cross-entropy of the model on x_s only, one optax update.
  def loss_fn(params):
    (logits, stats) = model.apply(
      {"params": params, "batch_stats": state.batch_stats["model"]},
      batch["x_s"],
      train=True,
      mutable=["batch_stats"],
    )
    ce = optax.softmax_cross_entropy_with_integer_labels(logits["logits"], batch["y_s"])
    return jnp.mean(ce), stats["batch_stats"]

  (ce, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params["model"])
  grads = {"model": g, "extra": jax.tree.map(jnp.zeros_like, state.params["extra"])}
  updates, _ = tx.update(grads, state.opt_state, state.params)
  want = optax.apply_updates(state.params, updates)
  np.testing.assert_allclose(float(metrics["loss"]), float(ce), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # BatchNorm statistics of the source batch alone
  for a, b in zip(jax.tree.leaves(new.batch_stats["model"]), jax.tree.leaves(stats), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_target_inputs_do_not_reach_a_source_only_step():
  method = methods.SourceOnly()
  model, state, tx = _setup(method)
  step = train.jit_step(train.make_train_step(model, method, tx), donate=False)
  batch = _batch()
  nan_batch = {**batch, "x_t": np.full_like(batch["x_t"], np.nan)}
  a, ma = step(state, batch)
  b, mb = step(state, nan_batch)
  assert np.isfinite(float(mb["loss"])) and float(ma["loss"]) == float(mb["loss"])
  for x, y in zip(
    jax.tree.leaves((a.params, a.batch_stats)),
    jax.tree.leaves((b.params, b.batch_stats)),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # ... while a method that uses the target sees them
  dann = methods.DANN(hidden=(8,), schedule="constant")
  model, state, tx = _setup(dann)
  step = train.jit_step(train.make_train_step(model, dann, tx), donate=False)
  assert not np.isfinite(float(step(state, nan_batch)[1]["loss"]))


def test_reading_target_without_declaring_it_raises():
  def loss(inputs):
    return jnp.mean(inputs.target["logits"])

  method = LossMethod(loss, name="sneaky")
  method.uses_target = False
  model, state, tx = _setup(method)
  with pytest.raises(ValueError, match="'sneaky' declares uses_target = False"):
    train.make_train_step(model, method, tx)(state, _batch())
  method.uses_target = True
  _, metrics = train.make_train_step(model, method, tx)(state, _batch())
  assert np.isfinite(float(metrics["loss"]))
