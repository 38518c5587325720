"""Every method trains for a few steps on bundled data (two moons) with decreasing loss;
ADDA's two stages and distill's frozen teacher are checked bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtl_jax import data, losses, methods, models, train

pytestmark = pytest.mark.usefixtures("fast_compile")

STEPS = 20


@pytest.fixture(scope="module")
def moons():
  src = data.load_domain("moons", seed=0)
  tgt = data.load_domain("moons_rot", seed=0)
  return src, tgt


def _model():
  return models.TransferModel(
    models.MLP(hidden=(32,), batch_norm=True),
    models.Bottleneck(features=16, dropout=0.0),
    models.Classifier(2),
  )


def _batches(src, tgt, steps, n=32, weights=None):
  sampler = data.PairSampler(src, tgt, batch_size=n, seed=0)
  out = []
  for k in range(steps):
    b = sampler.batch(k)
    batch = {
      "x_s": jnp.asarray(b.x_source, jnp.float32),
      "y_s": jnp.asarray(b.y_source),
      "x_t": jnp.asarray(b.x_target, jnp.float32),
    }
    if weights is not None:
      batch["w_s"] = jnp.asarray(weights[sampler.source_indices(k)], jnp.float32)
    out.append(batch)
  return out


# TLlib's SGD (the engine's default optimizer).
TLLIB_SGD = {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3, "lr_gamma": 1e-3}


def _train(
  method, batches, *, model=None, lr=0.05, key=1, model_variables=None, extra_variables=None
):
  model = model or _model()
  state, tx = train.create_train_state(
    model,
    method,
    key=jax.random.key(key),
    example_x=batches[0]["x_s"],
    model_variables=model_variables,
    extra_variables=extra_variables,
    learning_rate=lr,
    **TLLIB_SGD,
  )
  step = train.jit_step(
    train.make_train_step(model, method, tx, total_steps=len(batches)), donate=False
  )
  history = []
  for b in batches:
    state, m = step(state, b)
    history.append({k: float(v) for k, v in m.items()})
  return state, history


def _decreasing(history, key):
  vals = np.array([h[key] for h in history])
  assert np.all(np.isfinite(vals)), vals
  k = max(3, len(vals) // 5)
  assert vals[-k:].mean() < vals[:k].mean(), (key, vals)


SIMPLE = {
  "source_only": {},
  "ddc": {},
  "dan": {},
  "jan": {},
  "deep_coral": {},
  "dann": {"hidden": (32, 32)},
  "cdan": {"hidden": (32, 32)},
  "cdan_e": {"hidden": (32, 32)},
  "mdd": {},
  "domain_confusion": {},
  "finetune": {},
  "mcc": {},
  "entropy_min": {},
}


@pytest.mark.parametrize("name", sorted(SIMPLE))
def test_method_trains_with_decreasing_loss(moons, name):
  batches = _batches(*moons, STEPS)
  _, hist = _train(methods.build(name, **SIMPLE[name]), batches)
  _decreasing(
    hist, "loss" if name in ("source_only", "finetune", "ddc", "dan", "jan", "deep_coral") else "ce"
  )
  assert all(np.isfinite(h["loss"]) for h in hist)


def test_wdgrl_trains(moons):
  batches = _batches(*moons, STEPS)
  _, hist = _train(methods.build("wdgrl"), batches, lr=0.005)
  _decreasing(hist, "ce")
  assert all(np.isfinite(h["loss"]) for h in hist)
  assert all(h["gradient_penalty"] >= 0 for h in hist)


def test_instance_weighted_uses_weights(moons):
  src, tgt = moons
  # weight 0 on class 1: the weighted source loss ignores those examples entirely.
  w = (np.asarray(src.y_train) == 0).astype(np.float32)
  batches = _batches(src, tgt, 1, weights=w)
  method = methods.build("instance_weighted", base="source_only", weights=None)
  model = _model()
  state, tx = train.create_train_state(
    model, method, key=jax.random.key(0), example_x=batches[0]["x_s"], learning_rate=0.1
  )
  step = jax.jit(train.make_train_step(model, method, tx))
  _, m = step(state, batches[0])
  # reference: cross-entropy of the class-0 examples only (float64 NumPy); the base
  # method never looks at the target, so the step runs the model (and its BatchNorm
  # statistics) on the source batch alone
  b = batches[0]
  assert not method.uses_target
  out, _ = train.apply_model(
    model,
    {"params": state.params["model"], "batch_stats": state.batch_stats["model"]},
    b["x_s"],
    train=True,
  )
  z = np.asarray(out["logits"][: len(b["y_s"])], np.float64)
  y = np.asarray(b["y_s"])
  lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
  ce = lse - z[np.arange(len(y)), y]
  np.testing.assert_allclose(float(m["loss"]), ce[y == 0].mean(), rtol=1e-5)
  with pytest.raises(ValueError, match="w_s"):
    batches_nw = _batches(src, tgt, 1)
    step(state, batches_nw[0])
  # a batch whose weights are all zero (KMM puts zero weight on most source examples)
  # contributes nothing, instead of 0 / 0: loss and gradients are 0, not NaN
  zero = dict(b, w_s=np.zeros_like(b["w_s"]))
  new_state, m0 = step(state, zero)
  assert float(m0["loss"]) == 0.0
  for a, c in zip(
    jax.tree.leaves(new_state.params["model"]), jax.tree.leaves(state.params["model"]), strict=True
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
  # and it trains
  _, hist = _train(method, _batches(src, tgt, STEPS, weights=w + 0.5))
  _decreasing(hist, "loss")


def test_adda_two_stages(moons):
  src, tgt = moons
  batches = _batches(src, tgt, STEPS)
  model = _model()
  stage1, hist1 = _train(methods.build("adda", stage=1), batches, model=model)
  _decreasing(hist1, "loss")
  stage1_model = {"params": stage1.params["model"], "batch_stats": stage1.batch_stats["model"]}

  method2 = methods.build("adda", stage=2, source_model=model)
  stage2, hist2 = _train(
    method2,
    batches,
    model=model,
    lr=0.01,
    key=2,
    model_variables=stage1_model,
    extra_variables={"source_model": jax.tree.map(jnp.array, stage1_model)},
  )
  assert all(np.isfinite(h["loss"]) for h in hist2)
  _decreasing(hist2, "discriminator_loss")
  # the frozen source encoder and the classifier head are bit-identical
  for a, b in zip(
    jax.tree.leaves(stage2.params["extra"]["source_model"]),
    jax.tree.leaves(stage1_model["params"]),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(
    jax.tree.leaves(stage2.batch_stats["extra"]["source_model"]),
    jax.tree.leaves(stage1_model["batch_stats"]),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(
    jax.tree.leaves(stage2.params["model"]["head"]),
    jax.tree.leaves(stage1_model["params"]["head"]),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # while the target encoder moved
  assert not np.allclose(
    stage2.params["model"]["backbone"]["fc1"]["kernel"],
    stage1_model["params"]["backbone"]["fc1"]["kernel"],
  )


def test_distill_teacher_frozen(moons):
  src, tgt = moons
  batches = _batches(src, tgt, STEPS)
  teacher_model = models.TransferModel(
    models.MLP(hidden=(64,), batch_norm=True), None, models.Classifier(2)
  )
  teacher, _ = _train(methods.build("source_only"), batches, model=teacher_model)
  t_vars = {"params": teacher.params["model"], "batch_stats": teacher.batch_stats["model"]}
  method = methods.build("distill", teacher=teacher_model, temperature=2.0)
  model = _model()
  t_copy = jax.tree.map(np.array, t_vars)
  student, hist = _train(method, batches, model=model, key=3, extra_variables={"teacher": t_vars})
  _decreasing(hist, "distill")
  for a, b in zip(
    jax.tree.leaves(student.params["extra"]["teacher"]),
    jax.tree.leaves(t_copy["params"]),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), b)
  for a, b in zip(
    jax.tree.leaves(student.batch_stats["extra"]["teacher"]),
    jax.tree.leaves(t_copy["batch_stats"]),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(a), b)
  # the distillation term equals the library loss on the teacher's eval-mode logits
  t_logits, _ = train.apply_model(teacher_model, t_copy, batches[0]["x_s"], train=False)
  assert t_logits["logits"].shape == (32, 2)


def test_loss_method_composes_user_loss(moons):
  def my_loss(inputs):
    ce = inputs.source_cross_entropy()
    t = losses.coral(inputs.source["bottleneck"], inputs.target["bottleneck"])
    return ce + 0.5 * t, {"coral": t}

  method = methods.LossMethod(my_loss, name="my_coral")
  batches = _batches(*moons, STEPS)
  _, hist = _train(method, batches)
  _decreasing(hist, "loss")
  assert "coral" in hist[0]


def test_build_errors():
  with pytest.raises(ValueError, match="unknown method"):
    methods.build("nope")
  with pytest.raises(ValueError, match="bad hyperparameters"):
    methods.build("dan", not_a_param=1)
  with pytest.raises(ValueError, match="stage"):
    methods.build("adda", stage=3)


def test_mdd_adversarial_head_uses_mdd_init():
  """MDD's adversarial head: kernels ~ N(0, 0.01^2) and zero biases (Zhang et al. 2019;
  TLlib's MDD classifier), not the default Dense init."""
  model = models.TransferModel(
    models.MLP(hidden=(32,)), models.Bottleneck(features=256), models.Classifier(10)
  )
  state, _ = train.create_train_state(
    model,
    methods.build("mdd"),
    key=jax.random.key(3),
    example_x=jnp.zeros((2, 8), jnp.float32),
    learning_rate=0.1,
  )
  head = state.params["extra"]["adversarial_head"]["fc"]
  kernel = np.asarray(head["kernel"], np.float64)
  assert kernel.shape == (256, 10)
  np.testing.assert_array_equal(np.asarray(head["bias"]), 0.0)
  # 2560 draws: the sample std is within 10% of 0.01 with overwhelming probability,
  # while lecun_normal would give 1/sqrt(256) = 0.0625.
  assert abs(kernel.std() - 0.01) < 0.001, kernel.std()


@pytest.mark.parametrize("name", ["dann", "cdan", "cdan_e", "wdgrl"])
def test_grl_methods_default_to_tllibs_warm_start(moons, name):
  """DANN, CDAN, CDAN+E and WDGRL reverse with TLlib's WarmStartGradientReverseLayer by
  default: lambda(i) = 2 / (1 + exp(-i / 1000)) - 1 at step i (float64 closed form)."""
  src, tgt = moons
  method = methods.build(name, hidden=(16, 16))
  _, hist = _train(method, _batches(src, tgt, 4))
  want = 2.0 / (1.0 + np.exp(-np.arange(4) / 1000.0)) - 1.0
  np.testing.assert_allclose([h["grl_coeff"] for h in hist], want, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name,trade_off", [("mcc", 0.7), ("entropy_min", 0.3)])
def test_target_regularizer_methods_match_numpy(name, trade_off):
  """MCC / entropy minimization as methods: CE_s + trade_off * R(target logits), with R
  from the float64 NumPy references of the loss tests."""
  from tests.losses.test_entropy import np_entropy_exact, np_mcc, np_softmax

  rng = np.random.default_rng(3)
  z_s, z_t = rng.normal(size=(6, 4)) * 2, rng.normal(size=(8, 4)) * 2
  y = rng.integers(0, 4, 6)
  inputs = methods.MethodInputs(
    source={"logits": jnp.asarray(z_s)},
    target={"logits": jnp.asarray(z_t)},
    labels=jnp.asarray(y),
    step=jnp.asarray(0),
    rng=jax.random.key(0),
    source_weights=None,
    total_steps=10,
  )
  loss, metrics = methods.build(name, trade_off=trade_off).loss(inputs)
  p_s = np_softmax(z_s)
  ce = -np.mean(np.log(p_s[np.arange(6), y]))
  r = np_mcc(z_t, 2.5) if name == "mcc" else np_entropy_exact(np_softmax(z_t)).mean()
  np.testing.assert_allclose(float(metrics["ce"]), ce, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["transfer"]), r, rtol=1e-5)
  np.testing.assert_allclose(float(loss), ce + trade_off * r, rtol=1e-5)
  with pytest.raises(ValueError, match="trade_off"):
    methods.build(name, trade_off=-1.0)


def test_cdan_randomized_map_matrices_are_constants_of_the_step(rng):
  """CDAN's randomized map uses the matrices drawn once from ``map_seed`` (equal to drawing
  them from that key, as ``randomized_multilinear_map(key=...)`` does) and the traced
  computation draws no random numbers for them (they are constants of the step)."""
  method = methods.CDAN(hidden=(8,), randomized=True, randomized_dim=64)
  f = jnp.asarray(rng.normal(size=(6, 20)), jnp.float32)
  logits = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  want = losses.randomized_multilinear_map(
    f, jax.nn.softmax(logits, axis=-1), key=jax.random.key(method.map_seed), dim=64
  )
  np.testing.assert_allclose(np.asarray(method._map(f, logits)), np.asarray(want), rtol=1e-5)
  jaxpr = str(jax.make_jaxpr(method._map)(f, logits))
  assert "random_bits" not in jaxpr and "threefry" not in jaxpr, jaxpr
  # drawn once per shape: the same arrays on every trace
  assert method._matrices(20, 4, jnp.float32)[0] is method._matrices(20, 4, jnp.float32)[0]
