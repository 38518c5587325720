"""Parameter labels, frozen groups, lr multipliers, recipes, summary and L2-SP."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from dtl_jax import params as P
from dtl_jax.models import (
  MLP,
  Bottleneck,
  Classifier,
  ResNet18,
  TransferModel,
  init_variables,
  make_apply_fn,
)

pytestmark = pytest.mark.usefixtures("fast_compile")


def _flat(tree):
  return {P.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


FREEZE_LAYER1 = [("backbone/(fc1|bn1)/.*", "frozen"), ("backbone/.*", "backbone"), (".*", "head")]


def test_freeze_layer1_frozen_leaves_bit_identical_trainable_changed():
  # "layer1" of an MLP backbone with BatchNorm (fc1 + bn1); the ResNet stage rules are
  # checked in test_recipes_label_resnet_stages and frozen ResNet BN in tests/models.
  x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 5)), jnp.float32)
  y = jnp.array([0, 1, 2, 1, 0, 2, 2, 1])
  model = TransferModel(MLP((8, 8, 8), batch_norm=True), Bottleneck(6, dropout=0.0), Classifier(3))
  variables = init_variables(model, jax.random.key(0), x)
  labels = P.label_params(variables["params"], FREEZE_LAYER1)
  frozen_bn = P.frozen_bn_from_labels(labels)
  assert frozen_bn == ("backbone/bn1",)
  model = model.clone(frozen_bn=frozen_bn)
  apply_fn = make_apply_fn(model)
  tx = P.make_optimizer(labels, learning_rate=0.05, multipliers={"backbone": 0.1}, momentum=0.9)
  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state):
    def loss_fn(p):
      out, new_state = apply_fn({"params": p, "batch_stats": stats}, x, train=True)
      ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], y).mean()
      return ce, new_state["batch_stats"]

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state

  p1, s1, o1 = params, stats, opt_state
  for _ in range(3):
    p1, s1, o1 = step(p1, s1, o1)

  lab = _flat(labels)
  p0f, p1f = _flat(params), _flat(p1)
  assert {v for v in lab.values()} == {"frozen", "backbone", "head"}
  for k, v in p0f.items():
    if lab[k] == "frozen":
      assert np.array_equal(np.asarray(v), np.asarray(p1f[k])), k
      assert p1f[k].dtype == v.dtype
    else:
      assert not np.array_equal(np.asarray(v), np.asarray(p1f[k])), k
  s0f, s1f = _flat(stats), _flat(s1)
  frozen_stats = [k for k in s0f if k.startswith("backbone/bn1/")]
  assert len(frozen_stats) == 2  # mean, var
  assert len(s0f) == 2 * 4  # bn1-3 + the bottleneck's bn
  for k, v in s0f.items():
    if k in frozen_stats:
      assert np.array_equal(np.asarray(v), np.asarray(s1f[k])), k
    else:
      assert not np.array_equal(np.asarray(v), np.asarray(s1f[k])), k


def test_backbone_multiplier_is_exactly_a_tenth_of_head_update():
  model = TransferModel(MLP((6, 5)), None, Classifier(3))
  variables = init_variables(model, jax.random.key(1), jnp.ones((2, 4), jnp.float32))
  params = variables["params"]
  rng = np.random.default_rng(3)
  grads = jax.tree_util.tree_map(
    lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params
  )
  lr = 0.37
  all_head = P.label_params(params, [(".*", "head")])
  labels = P.label_params(params, [("backbone/.*", "backbone"), (".*", "head")])
  tx_ref = P.make_optimizer(all_head, learning_rate=lr)
  tx = P.make_optimizer(labels, learning_rate=lr, multipliers={"backbone": 0.1})
  u_ref, _ = tx_ref.update(grads, tx_ref.init(params), params)
  u, _ = tx.update(grads, tx.init(params), params)
  lab, uf, urf, gf = _flat(labels), _flat(u), _flat(u_ref), _flat(grads)
  for k in uf:
    ref = np.float32(-lr) * np.asarray(gf[k])  # plain SGD, float32
    np.testing.assert_array_equal(np.asarray(urf[k]), ref)
    if lab[k] == "backbone":
      np.testing.assert_array_equal(np.asarray(uf[k]), np.float32(0.1) * np.asarray(urf[k]))
    else:
      np.testing.assert_array_equal(np.asarray(uf[k]), np.asarray(urf[k]))


def test_rules_can_be_passed_directly_and_weight_decay_only_where_asked():
  params = {
    "backbone": {"w": jnp.ones((3,), jnp.float32)},
    "head": {"w": jnp.full((2,), 2.0, jnp.float32)},
  }
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  tx = P.make_optimizer(
    [("backbone/.*", "backbone"), (".*", "head")], learning_rate=1.0, weight_decay={"head": 0.5}
  )
  u, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_array_equal(np.asarray(u["backbone"]["w"]), np.zeros(3, np.float32))
  np.testing.assert_array_equal(np.asarray(u["head"]["w"]), np.full(2, -1.0, np.float32))


def test_errors_unlabeled_unmatched_and_bad_options():
  params = {
    "backbone": {"conv1": {"kernel": jnp.ones(2)}, "layer1": {"kernel": jnp.ones(2)}},
    "head": {"fc": {"kernel": jnp.ones(2)}},
  }
  with pytest.raises(ValueError, match=r"unlabeled.*\n  head/fc/kernel"):
    P.label_params(params, [("backbone/.*", "backbone")])
  with pytest.raises(
    ValueError,
    match=r"rules\[0\] = \('backbone/layer9/\.\*', 'frozen'\) "
    r"matches no parameter",
  ):
    P.label_params(params, [("backbone/layer9/.*", "frozen"), (".*", "head")])
  with pytest.raises(ValueError, match="invalid regex"):
    P.label_params(params, [("(", "x")])
  with pytest.raises(ValueError, match=r"multipliers: unknown label 'backbon'"):
    P.make_optimizer(
      [("backbone/.*", "backbone"), (".*", "head")], learning_rate=0.1, multipliers={"backbon": 0.1}
    )
  with pytest.raises(ValueError, match=r"label 'frozen' is frozen"):
    P.make_optimizer(
      [("backbone/.*", "frozen"), (".*", "head")], learning_rate=0.1, multipliers={"frozen": 0.1}
    )
  with pytest.raises(ValueError, match="learning_rate"):
    P.make_optimizer([(".*", "head")])
  with pytest.raises(ValueError, match=r"k must be in \[0, 5\]"):
    P.freeze_first_k(6)


def test_recipes_label_resnet_stages():
  variables = jax.eval_shape(
    lambda: init_variables(
      TransferModel(ResNet18(), None, Classifier(4)),
      jax.random.key(0),
      jnp.ones((1, 32, 32, 3), jnp.float32),
    )
  )
  params = variables["params"]
  recipe = P.freeze_first_k(2)
  lab = _flat(P.label_params(params, recipe.rules))
  for k, v in lab.items():
    if re.match(r"backbone/(conv1|bn1|layer1)/", k):
      assert v == "frozen", k
    elif k.startswith("backbone/"):
      assert v == "backbone", k
    else:
      assert k.startswith("head/") and v == "head", k
  probe = _flat(P.label_params(params, P.linear_probe().rules))
  assert {v for k, v in probe.items() if k.startswith("backbone/")} == {"frozen"}
  assert {v for k, v in probe.items() if k.startswith("head/")} == {"head"}
  ft = P.finetune(backbone_multiplier=0.1)
  assert ft.multipliers == {"backbone": 0.1}
  assert set(_flat(P.label_params(params, ft.rules)).values()) == {"backbone", "head"}
  # The recipe's frozen_bn regexes select exactly the BN layers of the frozen stages.
  from dtl_jax.models.layers import is_frozen_path

  bn_modules = {k.rsplit("/", 1)[0] for k in lab if k.endswith("/scale")}
  for mod in bn_modules:
    assert is_frozen_path(mod.split("/"), recipe.frozen_bn) == bool(
      re.match(r"backbone/(bn1|layer1/)", mod)
    ), mod
  # engine layout {"model": ..., "extra": ...}
  engine = P.freeze_first_k(1, params_prefix="model/")
  assert engine.rules[0][0].startswith("model/backbone/")
  assert engine.frozen_bn[0].startswith("backbone/")


def test_summary_counts_match_sizes():
  params = {
    "backbone": {"a": jnp.ones((3, 4)), "b": jnp.ones((5,))},
    "head": {"fc": jnp.ones((4, 2))},
  }
  labels = P.label_params(
    params, [("backbone/a", "frozen"), ("backbone/.*", "backbone"), (".*", "head")]
  )
  table = P.summary(params, labels)
  rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
  assert rows["frozen"][1:] == ["frozen", "1", "12"]
  assert rows["backbone"][1:] == ["trainable", "1", "5"]
  assert rows["head"][1:] == ["trainable", "1", "8"]
  assert rows["total"][1:] == ["3", "25"]
  assert "trainable 13 / frozen 12" in table


def test_l2_sp_matches_numpy_and_grad():
  rng = np.random.default_rng(0)
  params = {
    "backbone": {"w": rng.standard_normal((3, 4)).astype(np.float32)},
    "head": {"w": rng.standard_normal((4, 2)).astype(np.float32)},
    "other": {"w": rng.standard_normal((2,)).astype(np.float32)},
  }
  start = {
    k: {"w": v["w"] + rng.standard_normal(v["w"].shape).astype(np.float32)}
    for k, v in params.items()
  }
  labels = {"backbone": {"w": "backbone"}, "head": {"w": "head"}, "other": {"w": "other"}}
  params_j = jax.tree_util.tree_map(jnp.asarray, params)
  val = P.l2_sp(
    params_j, jax.tree_util.tree_map(jnp.asarray, start), labels=labels, alpha=0.1, beta=0.01
  )
  b = params["backbone"]["w"].astype(np.float64) - start["backbone"]["w"]
  expected = 0.05 * np.sum(b**2) + 0.005 * np.sum(params["head"]["w"].astype(np.float64) ** 2)
  assert val.dtype == jnp.float32
  np.testing.assert_allclose(float(val), expected, rtol=1e-6)
  g = jax.grad(lambda p: P.l2_sp(p, start, labels=labels, alpha=0.1, beta=0.01))(params_j)
  np.testing.assert_allclose(np.asarray(g["backbone"]["w"]), 0.1 * b, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g["head"]["w"]), 0.01 * params["head"]["w"], rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(g["other"]["w"]), 0.0)
  with pytest.raises(ValueError, match="alpha and beta must be >= 0"):
    P.l2_sp(params_j, start, labels=labels, alpha=-1.0)
  with pytest.raises(ValueError, match="groups: label 'backbon'"):
    P.l2_sp(params_j, start, labels=labels, alpha=1.0, groups=("backbon",))


def test_l2_sp_in_the_optimizer_is_sgd_on_the_regularized_loss():
  """make_optimizer(l2_sp=alpha): SGD steps equal a float64 NumPy loop on
  loss + alpha/2 ||w_backbone - w0||^2 + beta/2 ||w_head||^2 (beta = weight_decay on
  the head), with w0 the values at init, for every backbone label (layer-wise ones too)."""
  rng = np.random.default_rng(1)
  w0 = {
    "backbone": {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal((4,))},
    "head": {"w": rng.standard_normal((4, 2))},
  }
  labels = {"backbone": {"a": "backbone", "b": "backbone/block_0"}, "head": {"w": "head"}}
  targets = jax.tree.map(lambda w: rng.standard_normal(w.shape), w0)
  alpha, beta, lr = 0.3, 0.05, 0.1

  def loss(p):  # a quadratic whose gradient pulls every leaf towards its target
    pairs = zip(jax.tree.leaves(p), jax.tree.leaves(targets), strict=True)
    return sum(jnp.sum((x - t) ** 2) for x, t in pairs)

  tx = P.make_optimizer(
    labels, learning_rate=lr, momentum=0.0, weight_decay={"head": beta}, l2_sp=alpha
  )
  params = jax.tree.map(jnp.asarray, w0)
  state = tx.init(params)
  ref = jax.tree.map(np.array, w0)
  for _ in range(4):
    u, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, u)
    for group, names in (("backbone", ("a", "b")), ("head", ("w",))):
      for n in names:
        w, t, s0 = ref[group][n], targets[group][n], w0[group][n]
        g = 2 * (w - t) + (alpha * (w - s0) if group == "backbone" else beta * w)
        ref[group][n] = w - lr * g
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ref), strict=True):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
  with pytest.raises(ValueError, match="l2_sp must be >= 0"):
    P.make_optimizer(labels, learning_rate=0.1, l2_sp=-1.0)
  with pytest.raises(ValueError, match="needs the params"):
    P.add_start_point_decay(0.1).update(params, P.add_start_point_decay(0.1).init(params))


# ------------------------------------- the engine's optimizer (make_optimizer + train_rules)


def test_tllib_schedule_formula():
  s = P.tllib_schedule(0.01, gamma=0.001, decay=0.75)
  for step in (0, 1, 10, 1000, 5000):
    assert float(s(step)) == pytest.approx(0.01 * (1 + 0.001 * step) ** -0.75, rel=1e-12)
  with pytest.raises(ValueError, match="learning_rate"):
    P.tllib_schedule(0.0)


def test_sgd_matches_torch_with_multipliers_and_frozen():
  rng = np.random.default_rng(0)
  params = {
    "model": {"backbone": {"w": rng.normal(size=(3, 4))}, "head": {"w": rng.normal(size=(4, 2))}},
    "extra": {"disc": {"w": rng.normal(size=(4,))}, "teacher": {"w": rng.normal(size=(2,))}},
  }
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)

  class E:  # minimal Extra-like specs
    def __init__(self, trainable, lr_mult=1.0):
      self.trainable, self.lr_mult = trainable, lr_mult

  rules, mults = P.train_rules(extras={"disc": E(True, 2.0), "teacher": E(False)})
  assert mults == {"extra/disc": 2.0}
  labels = P.label_params(params, rules, allow_unused=True)
  assert labels["model"]["backbone"]["w"] == "backbone"
  assert labels["extra"]["teacher"]["w"] == "frozen"
  lr, wd, gamma = 0.1, 1e-3, 0.01
  tx = P.make_optimizer(
    labels,
    multipliers={**mults, "backbone": 0.1},
    learning_rate=lr,
    momentum=0.9,
    nesterov=True,
    weight_decay=wd,
    lr_gamma=gamma,
  )
  opt_state = tx.init(params)
  teacher0 = np.asarray(params["extra"]["teacher"]["w"]).copy()

  groups = [("model", "backbone", 0.1), ("model", "head", 1.0), ("extra", "disc", 2.0)]
  tparams = {
    g: torch.tensor(np.asarray(params[a][g]["w"]), requires_grad=True) for a, g, _ in groups
  }
  topt = torch.optim.SGD(
    [{"params": [tparams[g]], "lr": lr * m} for _, g, m in groups],
    lr=lr,
    momentum=0.9,
    weight_decay=wd,
    nesterov=True,
  )
  sched = torch.optim.lr_scheduler.LambdaLR(topt, lambda i: (1 + gamma * i) ** -0.75)

  for _ in range(4):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    topt.zero_grad()
    for a, g, _ in groups:
      tparams[g].grad = torch.tensor(np.asarray(grads[a][g]["w"]))
    topt.step()
    sched.step()
    for a, g, _ in groups:
      np.testing.assert_allclose(
        np.asarray(params[a][g]["w"]), tparams[g].detach().numpy(), rtol=1e-10, atol=1e-12
      )
  # frozen teacher: untouched despite gradients and weight decay
  np.testing.assert_array_equal(np.asarray(params["extra"]["teacher"]["w"]), teacher0)


def test_frozen_group_is_bit_identical_after_updates():
  params = {
    "model": {"backbone": {"w": jnp.ones((3,))}, "head": {"w": jnp.ones((2,))}},
    "extra": {},
  }
  rules, _ = P.train_rules(freeze=("backbone/.*",))
  labels = P.label_params(params, rules, allow_unused=True)
  tx = P.make_optimizer(labels, learning_rate=0.5, momentum=0.9, weight_decay=0.1)
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
  rules, _ = P.train_rules()
  labels = P.label_params(params, rules, allow_unused=True)
  tx = P.make_optimizer(labels, kind="adam", learning_rate=0.1, weight_decay=0.0, lr_gamma=0.0)
  u, _ = tx.update(
    {"model": {"head": {"w": jnp.array([1.0, -2.0])}}, "extra": {}}, tx.init(params), params
  )
  # first Adam step is -lr * sign(g)
  np.testing.assert_allclose(np.asarray(u["model"]["head"]["w"]), [-0.1, 0.1], rtol=1e-6)
  with pytest.raises(ValueError, match="kind"):
    P.make_optimizer(labels, kind="rmsprop", learning_rate=0.1)
  with pytest.raises(ValueError, match="multipliers: unknown label 'backbone'"):
    P.make_optimizer(labels, learning_rate=0.1, multipliers={"backbone": 0.1})
  with pytest.raises(ValueError, match="learning_rate"):
    P.make_optimizer(labels)
  with pytest.raises(ValueError, match="unlabeled"):
    P.label_params({"other": {"w": jnp.ones(1)}}, rules, allow_unused=True)


def test_adam_betas_reach_the_update():
  """``b1`` / ``b2`` (config ``optim.b1`` / ``optim.b2``): two Adam steps against the
  closed form in float64 NumPy."""
  params = {"model": {"head": {"w": jnp.zeros((2,))}}, "extra": {}}
  rules, _ = P.train_rules()
  labels = P.label_params(params, rules, allow_unused=True)
  lr, b1, b2, eps = 0.1, 0.5, 0.9, 1e-8
  tx = P.make_optimizer(
    labels, kind="adam", learning_rate=lr, weight_decay=0.0, lr_gamma=0.0, b1=b1, b2=b2
  )
  grads = [np.array([1.0, -2.0]), np.array([3.0, 0.5])]
  state = tx.init(params)
  m = v = np.zeros(2)
  for t, g in enumerate(grads, 1):
    u, state = tx.update(
      {"model": {"head": {"w": jnp.asarray(g, jnp.float32)}}, "extra": {}}, state, params
    )
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    want = -lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(np.asarray(u["model"]["head"]["w"]), want, rtol=1e-5)
  for name in ("b1", "b2"):
    with pytest.raises(ValueError, match=name):
      P.make_optimizer(labels, kind="adam", learning_rate=0.1, **{name: 1.0})
