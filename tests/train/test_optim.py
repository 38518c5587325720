"""Optimizer: TLlib's SGD (Nesterov, weight decay, lr schedule, group multipliers)
against torch.optim.SGD + LambdaLR; frozen groups stay bit-identical."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dtl_jax import train


def test_tllib_schedule_formula():
  s = train.tllib_schedule(0.01, gamma=0.001, decay=0.75)
  for step in (0, 1, 10, 1000, 5000):
    assert float(s(step)) == pytest.approx(0.01 * (1 + 0.001 * step) ** -0.75, rel=1e-12)
  with pytest.raises(ValueError, match="learning_rate"):
    train.tllib_schedule(0.0)


def test_sgd_matches_torch_with_multipliers_and_frozen():
  rng = np.random.default_rng(0)
  params = {"model": {"backbone": {"w": rng.normal(size=(3, 4))},
                      "head": {"w": rng.normal(size=(4, 2))}},
            "extra": {"disc": {"w": rng.normal(size=(4,))}, "teacher": {"w": rng.normal(size=(2,))}}}
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)

  class E:  # minimal Extra-like specs
    def __init__(self, trainable, lr_mult=1.0):
      self.trainable, self.lr_mult = trainable, lr_mult

  rules, mults = train.default_rules(backbone_lr_mult=0.1,
                                     extras={"disc": E(True, 2.0), "teacher": E(False)})
  labels = train.label_params(params, rules)
  assert labels["model"]["backbone"]["w"] == "backbone"
  assert labels["extra"]["teacher"]["w"] == "frozen"
  lr, wd, gamma = 0.1, 1e-3, 0.01
  tx = train.make_optimizer(labels, mults, learning_rate=lr, weight_decay=wd, lr_gamma=gamma)
  opt_state = tx.init(params)
  teacher0 = np.asarray(params["extra"]["teacher"]["w"]).copy()

  groups = [("model", "backbone", 0.1), ("model", "head", 1.0), ("extra", "disc", 2.0)]
  tparams = {g: torch.tensor(np.asarray(params[a][g]["w"]), requires_grad=True)
             for a, g, _ in groups}
  topt = torch.optim.SGD([{"params": [tparams[g]], "lr": lr * m} for _, g, m in groups],
                         lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
  sched = torch.optim.lr_scheduler.LambdaLR(topt, lambda i: (1 + gamma * i) ** -0.75)

  for k in range(4):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    topt.zero_grad()
    for a, g, _ in groups:
      tparams[g].grad = torch.tensor(np.asarray(grads[a][g]["w"]))
    topt.step()
    sched.step()
    for a, g, _ in groups:
      np.testing.assert_allclose(np.asarray(params[a][g]["w"]),
                                 tparams[g].detach().numpy(), rtol=1e-10, atol=1e-12)
  # frozen teacher: untouched despite gradients and weight decay
  np.testing.assert_array_equal(np.asarray(params["extra"]["teacher"]["w"]), teacher0)


def test_frozen_group_is_bit_identical_after_updates():
  params = {"model": {"backbone": {"w": jnp.ones((3,))}, "head": {"w": jnp.ones((2,))}},
            "extra": {}}
  rules, mults = train.default_rules(freeze=("backbone/.*",))
  labels = train.label_params(params, rules)
  tx = train.make_optimizer(labels, mults, learning_rate=0.5, weight_decay=0.1)
  st = tx.init(params)
  p = params
  for _ in range(3):
    g = jax.tree.map(jnp.ones_like, p)
    u, st = tx.update(g, st, p)
    p = jax.tree.map(lambda a, b: a + b, p, u)
  np.testing.assert_array_equal(np.asarray(p["model"]["backbone"]["w"]), np.ones(3))
  assert not np.allclose(np.asarray(p["model"]["head"]["w"]), 1.0)


def test_adam_option_and_errors():
  params = {"model": {"head": {"w": jnp.ones((2,))}}, "extra": {}}
  rules, mults = train.default_rules()
  labels = train.label_params(params, rules)
  tx = train.make_optimizer(labels, mults, kind="adam", learning_rate=0.1, weight_decay=0.0,
                            lr_gamma=0.0)
  u, _ = tx.update({"model": {"head": {"w": jnp.array([1.0, -2.0])}}, "extra": {}},
                   tx.init(params), params)
  # first Adam step is -lr * sign(g)
  np.testing.assert_allclose(np.asarray(u["model"]["head"]["w"]), [-0.1, 0.1], rtol=1e-6)
  with pytest.raises(ValueError, match="kind"):
    train.make_optimizer(labels, mults, kind="rmsprop")
  with pytest.raises(ValueError, match="multipliers"):
    train.make_optimizer(labels, {"frozen": None})
  with pytest.raises(ValueError, match="unlabeled"):
    train.label_params({"other": {"w": jnp.ones(1)}}, rules)


def test_adam_betas_reach_the_update():
  """``b1`` / ``b2`` (config ``optim.b1`` / ``optim.b2``): two Adam steps against the
  closed form in float64 NumPy."""
  params = {"model": {"head": {"w": jnp.zeros((2,))}}, "extra": {}}
  rules, mults = train.default_rules()
  labels = train.label_params(params, rules)
  lr, b1, b2, eps = 0.1, 0.5, 0.9, 1e-8
  tx = train.make_optimizer(labels, mults, kind="adam", learning_rate=lr, weight_decay=0.0,
                            lr_gamma=0.0, b1=b1, b2=b2)
  grads = [np.array([1.0, -2.0]), np.array([3.0, 0.5])]
  state = tx.init(params)
  m = v = np.zeros(2)
  for t, g in enumerate(grads, 1):
    u, state = tx.update({"model": {"head": {"w": jnp.asarray(g, jnp.float32)}}, "extra": {}},
                         state, params)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    want = -lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(np.asarray(u["model"]["head"]["w"]), want, rtol=1e-5)
  for name in ("b1", "b2"):
    with pytest.raises(ValueError, match=name):
      train.make_optimizer(labels, mults, kind="adam", **{name: 1.0})
