"""AdaBN, Tent, SHOT method objects and online test-time adaptation
(dtl_jax/methods/source_free.py, dtl_jax/methods/test_time.py).

References: float64 NumPy forward passes of small models written here, the analytic Tent
gradient of a linear + BatchNorm model, and the NumPy transcription of SHOT's
``obtain_label`` from tests/losses/test_source_free.py.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dtl_jax import losses, models
from dtl_jax import params as params_lib
from dtl_jax.methods.base import MethodInputs
from dtl_jax.methods.source_free import (
  SHOT,
  AdaBN,
  Tent,
  adabn,
  bn_modules,
  tent_apply_fn,
  tent_optimizer,
  tent_param_labels,
)
from dtl_jax.methods.test_time import TentState, make_tent_step, online_tta
from dtl_jax.models import BatchNorm
from tests.losses.test_source_free import np_im, np_obtain_label, np_softmax

pytestmark = pytest.mark.usefixtures("fast_compile")

F64 = jnp.float64
EPS = 1e-5  # BatchNorm epsilon


class ConvNet(nn.Module):
  """1x1 conv -> BN (over n, h, w) -> ReLU -> spatial mean -> Dense -> BN -> head."""

  @nn.compact
  def __call__(self, x, *, train):
    h = nn.Conv(4, (1, 1), param_dtype=F64, name="conv")(x)
    h = BatchNorm(param_dtype=F64, name="bn1")(h, train=train)
    h = nn.relu(h).mean(axis=(1, 2))
    h = nn.Dense(3, param_dtype=F64, name="fc")(h)
    h = BatchNorm(param_dtype=F64, name="bn2")(h, train=train)
    return {"bottleneck": h, "logits": nn.Dense(2, param_dtype=F64, name="head")(h)}


def _convnet(rng):
  model = ConvNet()
  x = rng.normal(size=(40, 2, 2, 3)) * 2 + 1  # NHWC
  v = models.init_variables(model, jax.random.key(1), jnp.asarray(x[:2]))
  # non-trivial affine parameters and (source) statistics
  for bn, c in (("bn1", 4), ("bn2", 3)):
    v["params"][bn] = {
      "scale": jnp.asarray(rng.uniform(0.5, 2, c)),
      "bias": jnp.asarray(rng.normal(size=c)),
    }
    v["batch_stats"][bn] = {
      "mean": jnp.asarray(rng.normal(size=c)),
      "var": jnp.asarray(rng.uniform(0.5, 2, c)),
    }
  return model, v, x


def _np_params(v):
  return jax.tree.map(np.asarray, v["params"])


def _np_bn1_input(p, x):
  return x @ p["conv"]["kernel"][0, 0] + p["conv"]["bias"]  # [n, h, w, 4]


def _np_bn2_input(p, h1_normalized_affine):
  h = np.maximum(h1_normalized_affine, 0).mean(axis=(1, 2))
  return h @ p["fc"]["kernel"] + p["fc"]["bias"]


def _affine(p, bn, h, mean, var):
  return (h - mean) / np.sqrt(var + EPS) * p[bn]["scale"] + p[bn]["bias"]


def _np_adabn_sequential(v, x, ddof):
  """Population statistics, each layer at inference with the earlier ones adapted."""
  p = _np_params(v)
  a1 = _np_bn1_input(p, x).reshape(-1, 4)
  m1, v1 = a1.mean(0), a1.var(0, ddof=ddof)
  h1 = _affine(p, "bn1", _np_bn1_input(p, x), m1, v1)
  a2 = _np_bn2_input(p, h1)
  return {"bn1": (m1, v1), "bn2": (a2.mean(0), a2.var(0, ddof=ddof))}


def _np_adabn_single_pass(v, xs, ddof):
  """Population statistics of the inputs when every layer uses the batch statistics."""
  p = _np_params(v)
  a1s, a2s = [], []
  for x in xs:
    a1 = _np_bn1_input(p, x)
    flat = a1.reshape(-1, 4)
    h1 = _affine(p, "bn1", a1, flat.mean(0), flat.var(0))
    a2 = _np_bn2_input(p, h1)
    a1s.append(flat)
    a2s.append(a2)
  a1, a2 = np.concatenate(a1s), np.concatenate(a2s)
  return {"bn1": (a1.mean(0), a1.var(0, ddof=ddof)), "bn2": (a2.mean(0), a2.var(0, ddof=ddof))}


# -------------------------------------------------------------------------- AdaBN


@pytest.mark.parametrize("mode", ["sequential", "single_pass"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_adabn_equals_numpy_population_statistics(rng, mode, unbiased):
  model, v, x = _convnet(rng)
  batches = [x[:7], x[7:20], x[20:]]
  got = adabn(model, v, batches, mode=mode, unbiased=unbiased)
  ddof = 1 if unbiased else 0
  want = (
    _np_adabn_sequential(v, x, ddof)
    if mode == "sequential"
    else _np_adabn_single_pass(v, batches, ddof)
  )
  for bn, (mean, var) in want.items():
    np.testing.assert_allclose(np.asarray(got["batch_stats"][bn]["mean"]), mean, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(got["batch_stats"][bn]["var"]), var, rtol=1e-10)
  assert got["params"] is v["params"]
  # the adapted model then normalizes with these statistics at inference
  out = model.apply(got, jnp.asarray(x), train=False)
  assert np.all(np.isfinite(np.asarray(out["logits"])))


def test_adabn_modes_differ_after_first_layer_and_batching_does_not_matter(rng):
  model, v, x = _convnet(rng)
  seq = adabn(model, v, [x])
  seq_cut = adabn(model, v, lambda: iter([x[:11], x[11:]]))
  single = adabn(model, v, [x[:11], x[11:]], mode="single_pass")
  for bn in ("bn1", "bn2"):
    for k in ("mean", "var"):
      np.testing.assert_allclose(
        np.asarray(seq_cut["batch_stats"][bn][k]), np.asarray(seq["batch_stats"][bn][k]), rtol=1e-12
      )
  np.testing.assert_allclose(
    np.asarray(single["batch_stats"]["bn1"]["mean"]),
    np.asarray(seq["batch_stats"]["bn1"]["mean"]),
    rtol=1e-12,
  )
  assert not np.allclose(
    np.asarray(single["batch_stats"]["bn2"]["var"]), np.asarray(seq["batch_stats"]["bn2"]["var"])
  )


def test_adabn_on_library_model_keeps_dtype_and_params(rng):
  model = models.TransferModel(
    models.MLP(hidden=(6,), batch_norm=True, dropout=0.5),
    models.Bottleneck(features=4),
    models.Classifier(3),
  )
  x = rng.normal(size=(30, 5)).astype(np.float32)
  v = models.init_variables(model, jax.random.key(0), jnp.asarray(x[:2]))
  got = AdaBN().adapt(model, v, [x[:10], x[10:]])
  assert set(bn_modules(got["batch_stats"])) == {"backbone/bn1", "bottleneck/bn"}
  a1 = x.astype(np.float64) @ np.asarray(
    v["params"]["backbone"]["fc1"]["kernel"], np.float64
  ) + np.asarray(v["params"]["backbone"]["fc1"]["bias"], np.float64)
  np.testing.assert_allclose(
    np.asarray(got["batch_stats"]["backbone"]["bn1"]["mean"]), a1.mean(0), rtol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(got["batch_stats"]["backbone"]["bn1"]["var"]), a1.var(0, ddof=1), rtol=1e-5
  )
  assert got["batch_stats"]["bottleneck"]["bn"]["var"].dtype == jnp.float32
  for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(v["params"]), strict=True):
    assert a is b


def test_adabn_errors(rng):
  model, v, x = _convnet(rng)
  with pytest.raises(ValueError, match="one-shot iterator"):
    adabn(model, v, iter([x]))
  with pytest.raises(ValueError, match="non-empty array"):
    adabn(model, v, [x[:0]])
  with pytest.raises(ValueError, match="holds no target example"):
    adabn(model, v, [])
  with pytest.raises(ValueError, match="at least 2 values"):
    adabn(
      models.TransferModel(models.MLP(hidden=(3,), batch_norm=True)),
      models.init_variables(
        models.TransferModel(models.MLP(hidden=(3,), batch_norm=True)),
        jax.random.key(0),
        jnp.ones((2, 2)),
      ),
      [np.ones((1, 2))],
    )
  with pytest.raises(ValueError, match="mode must be"):
    adabn(model, v, [x], mode="ema")
  with pytest.raises(ValueError, match="holds no BatchNorm layer"):
    mlp = models.TransferModel(models.MLP(hidden=(3,)))
    adabn(mlp, models.init_variables(mlp, jax.random.key(0), jnp.ones((2, 2))), [np.ones((4, 2))])

  class FlaxBN(nn.Module):
    @nn.compact
    def __call__(self, x, *, train):
      return {"logits": nn.BatchNorm(use_running_average=not train)(x)}

  fv = models.init_variables(FlaxBN(), jax.random.key(0), jnp.ones((2, 3)))
  with pytest.raises(TypeError, match="is a flax.linen.BatchNorm"):
    adabn(FlaxBN(), fv, [np.ones((4, 3))])
  with pytest.raises(ValueError, match="takes no gradient step"):
    AdaBN().loss(None)


# --------------------------------------------------------------------------- Tent


def _paths(tree, label):
  return {
    params_lib.path_str(p)
    for p, lab in jax.tree_util.tree_flatten_with_path(tree)[0]
    if lab == label
  }


@pytest.mark.parametrize("name", ["lenet", "dtn", "resnet18", "mlp"])
def test_tent_trains_exactly_the_bn_affine_parameters(name):
  backbone = {
    "lenet": models.LeNet(),
    "dtn": models.DTN(),
    "resnet18": models.ResNet18(),
    "mlp": models.MLP(hidden=(8, 8), batch_norm=True),
  }[name]
  model = models.TransferModel(backbone, models.Bottleneck(features=16), models.Classifier(4))
  x = jnp.zeros((2, 8) if name == "mlp" else (2, 32, 32, 3), jnp.float32)
  shapes = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), x))
  mods = bn_modules(shapes["batch_stats"])
  want = {f"{m}/{v}" for m in mods for v in ("scale", "bias")}
  labels = tent_param_labels(shapes["params"], shapes["batch_stats"])
  assert _paths(labels, "bn") == want
  # the freeze patterns, as a loop applies them to the {"model": ...} tree
  for tent in (Tent(), Tent(bn_modules=mods)):
    rules = [(f"model/{rx}", "frozen") for rx in tent.freeze_patterns()] + [(".*", "trainable")]
    lab = params_lib.label_params({"model": shapes["params"]}, rules)
    assert _paths(lab, "trainable") == {f"model/{p}" for p in want}
    # as frozen_bn regexes they freeze no BatchNorm layer (Tent needs batch statistics)
    assert not any(models.layers.is_frozen_path(m.split("/"), tent.freeze_patterns()) for m in mods)
  assert tent.uses_source is False and tent.uses_target is True


def test_tent_step_updates_only_bn_affine_leaves(rng):
  model = models.TransferModel(
    models.MLP(hidden=(6,), batch_norm=True, dropout=0.5),
    models.Bottleneck(features=5, dropout=0.5),
    models.Classifier(3),
  )
  x = rng.normal(size=(24, 4)).astype(np.float32)
  v = models.init_variables(model, jax.random.key(0), jnp.asarray(x[:2]))
  tx = tent_optimizer(v, learning_rate=0.05)
  step = make_tent_step(model, tx)
  state = TentState(v["params"], v["batch_stats"], tx.init(v["params"]))
  # the step's logits are the model's in train mode with dropout off (same params)
  no_dropout = models.TransferModel(
    models.MLP(hidden=(6,), batch_norm=True),
    models.Bottleneck(features=5, dropout=0.0),
    models.Classifier(3),
  )
  want_logits, _ = no_dropout.apply(v, jnp.asarray(x[:8]), train=True, mutable=["batch_stats"])
  state, logits, loss = step(state, jnp.asarray(x[:8]))
  # (compiled step vs op-by-op apply: equal up to float32 rounding, which XLA's fusion may
  # change; a dropout mask would change the logits by far more)
  np.testing.assert_allclose(
    np.asarray(logits), np.asarray(want_logits["logits"]), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(float(loss), float(losses.tent_loss(want_logits["logits"])), rtol=1e-5)
  for i in (1, 2):
    state, _, _ = step(state, jnp.asarray(x[8 * i : 8 * (i + 1)]))
  before = dict(jax.tree_util.tree_flatten_with_path(v["params"])[0])
  trainable = {
    "backbone/bn1/scale",
    "backbone/bn1/bias",
    "bottleneck/bn/scale",
    "bottleneck/bn/bias",
  }
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
    old = np.asarray(before[path])
    if params_lib.path_str(path) in trainable:
      assert not np.array_equal(np.asarray(leaf), old), params_lib.path_str(path)
    else:  # bit-identical
      assert np.asarray(leaf).tobytes() == old.tobytes(), params_lib.path_str(path)


def test_tent_method_loss_and_apply_fn(rng):
  z = rng.normal(size=(6, 4))
  inputs = MethodInputs(
    source={},
    target={"logits": jnp.asarray(z)},
    labels=jnp.zeros((0,), jnp.int32),
    step=jnp.asarray(0),
    rng=jax.random.key(0),
    source_weights=None,
    total_steps=1,
  )
  loss, metrics = Tent().loss(inputs)
  p = np_softmax(z)
  np.testing.assert_allclose(float(loss), np.mean(-np.sum(p * np.log(p), 1)), rtol=1e-12)
  assert float(metrics["entropy"]) == float(loss)
  # tent_apply_fn: deterministic in train mode (dropout off), BN statistics updated
  model = models.TransferModel(models.MLP(hidden=(5,), batch_norm=True, dropout=0.9))
  x = jnp.asarray(rng.normal(size=(8, 3)))
  v = models.init_variables(model, jax.random.key(0), x[:2])
  apply = tent_apply_fn(model)
  a, state = apply(v, x, train=True)
  b, _ = apply(v, x, train=True, rngs={"dropout": jax.random.key(5)})
  np.testing.assert_array_equal(np.asarray(a["features"]), np.asarray(b["features"]))
  h = np.asarray(x) @ np.asarray(v["params"]["backbone"]["fc1"]["kernel"], np.float64) + np.asarray(
    v["params"]["backbone"]["fc1"]["bias"], np.float64
  )
  np.testing.assert_allclose(
    np.asarray(state["batch_stats"]["backbone"]["bn1"]["mean"]),
    0.1 * h.mean(0),
    rtol=1e-5,
    atol=1e-7,
  )


def test_tent_errors(rng):
  with pytest.raises(ValueError, match="non-empty sequence"):
    Tent(bn_modules="bn")
  mlp = models.TransferModel(models.MLP(hidden=(3,)), head=models.Classifier(2))
  v = models.init_variables(mlp, jax.random.key(0), jnp.ones((2, 2)))
  with pytest.raises(ValueError, match="holds no BatchNorm layer"):
    tent_optimizer(v)
  with pytest.raises(ValueError, match="lack the affine parameters"):
    tent_param_labels(
      {"fc": {"kernel": jnp.ones(2)}, "bn": {"w": jnp.ones(2)}},
      {"bn": {"mean": jnp.ones(2), "var": jnp.ones(2)}},
    )


# --------------------------------------------------------------------------- SHOT


def _inputs(logits, features=None, pseudo=None):
  target = {"logits": jnp.asarray(logits)}
  if features is not None:
    target["bottleneck"] = jnp.asarray(features)
  return MethodInputs(
    source={},
    target=target,
    labels=jnp.zeros((0,), jnp.int32),
    step=jnp.asarray(0),
    rng=jax.random.key(0),
    source_weights=None,
    total_steps=1,
    target_pseudo_labels=None if pseudo is None else jnp.asarray(pseudo),
  )


def test_shot_method_refresh_and_loss(rng):
  n, c = 50, 4
  y = rng.integers(0, c, size=n)
  fea = rng.normal(size=(c, 6))[y] * 2 + rng.normal(size=(n, 6))
  logits = fea @ rng.normal(size=(6, c)) + rng.normal(size=(n, c))
  shot = SHOT()
  pseudo = shot.refresh(fea, logits)
  np.testing.assert_array_equal(np.asarray(pseudo), np_obtain_label(fea, logits)[0])
  idx = np.array([3, 17, 17, 42, 0, 8])  # the batch's example indices
  z = logits[idx]
  # under jit, as in a train step (the inputs are built inside the traced function)
  loss, metrics = jax.jit(lambda z, pl: shot.loss(_inputs(z, pseudo=pl)))(
    z, np.asarray(pseudo)[idx]
  )
  logp = np.log(np_softmax(z))
  ce = -np.mean(logp[np.arange(len(idx)), np.asarray(pseudo)[idx]])
  np.testing.assert_allclose(float(loss), 0.3 * ce + np_im(z), rtol=1e-10)
  np.testing.assert_allclose(float(metrics["pseudo_ce"]), ce, rtol=1e-10)
  np.testing.assert_allclose(
    float(metrics["pseudo_agreement"]), np.mean(z.argmax(1) == np.asarray(pseudo)[idx])
  )
  # SHOT-IM needs no pseudo-labels
  loss_im, metrics_im = SHOT(beta=0.0).loss(_inputs(z))
  np.testing.assert_allclose(float(loss_im), np_im(z), rtol=1e-10)
  assert "pseudo_ce" not in metrics_im
  # euclidean distance and a threshold reach shot_pseudo_labels
  np.testing.assert_array_equal(
    np.asarray(SHOT(distance="euclidean", threshold=3).refresh(fea, logits)),
    np_obtain_label(fea, logits, "euclidean", 3)[0],
  )


def test_shot_freezes_exactly_the_head():
  model = models.TransferModel(models.LeNet(), models.Bottleneck(features=8), models.Classifier(10))
  shapes = jax.eval_shape(
    lambda: models.init_variables(model, jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
  )
  shot = SHOT()
  rules = [(f"model/{rx}", "frozen") for rx in shot.freeze_patterns()] + [(".*", "trainable")]
  lab = params_lib.label_params({"model": shapes["params"]}, rules)
  assert _paths(lab, "frozen") == {"model/head/fc/kernel", "model/head/fc/bias"}
  assert shot.uses_source is False and shot.takes_gradient_steps
  assert AdaBN().takes_gradient_steps is False and AdaBN().model_frozen()


def test_shot_errors():
  with pytest.raises(ValueError, match="needs the target batch's pseudo-labels"):
    SHOT().loss(_inputs(np.zeros((3, 2))))
  with pytest.raises(ValueError, match="beta and im_weight must be >= 0"):
    SHOT(beta=-0.3)
  with pytest.raises(ValueError, match="distance must be"):
    SHOT(distance="l1")


# ----------------------------------------------------------------------- online TTA


class LinearBN(nn.Module):
  """logits = BN(x W): Tent's gradient on (scale, bias) has a closed form."""

  @nn.compact
  def __call__(self, x, *, train):
    h = nn.Dense(3, use_bias=False, param_dtype=F64, name="fc")(x)
    return {"logits": BatchNorm(param_dtype=F64, name="bn")(h, train=train)}


def _np_forward(p, stats, x, batch_stats_mode):
  h = x @ p["fc"]["kernel"]
  if batch_stats_mode:
    mean, var = h.mean(0), h.var(0)
  else:
    mean, var = stats["mean"], stats["var"]
  xhat = (h - mean) / np.sqrt(var + EPS)
  return xhat * p["bn"]["scale"] + p["bn"]["bias"], xhat


def _np_tent_sgd_step(p, x, lr):
  """One SGD step of Tent on (scale, bias): dL/dz = -p (log p + H) / n."""
  z, xhat = _np_forward(p, None, x, True)
  pr = np_softmax(z)
  h = -np.sum(pr * np.log(pr), 1, keepdims=True)
  g = -pr * (np.log(pr) + h) / len(x)
  new = {
    "fc": p["fc"],
    "bn": {
      "scale": p["bn"]["scale"] - lr * np.sum(g * xhat, 0),
      "bias": p["bn"]["bias"] - lr * np.sum(g, 0),
    },
  }
  return new


def _np_entropy(z):
  pr = np_softmax(z)
  return float(np.mean(-np.sum(pr * np.log(pr), 1)))


def test_online_tta_scores_each_batch_before_its_update(rng):
  model = LinearBN()
  v = models.init_variables(model, jax.random.key(0), jnp.ones((2, 4)))
  p0 = {
    "fc": {"kernel": rng.normal(size=(4, 3))},
    "bn": {"scale": rng.uniform(0.5, 1.5, 3), "bias": rng.normal(size=3) * 0.5},
  }
  stats = {"mean": rng.normal(size=3), "var": rng.uniform(0.5, 2, 3)}
  v = {
    "params": jax.tree.map(jnp.asarray, p0),
    "batch_stats": {"bn": jax.tree.map(jnp.asarray, stats)},
  }
  xs = [rng.normal(size=(16, 4)) for _ in range(3)]
  ys = [rng.integers(0, 3, size=16) for _ in range(3)]
  lr = 40.0
  shifts = {"a": [(xs[0], ys[0]), (xs[1], ys[1])], "b": [(xs[2], ys[2])]}

  def acc(p, x, y, bs=True):
    return float(np.mean(_np_forward(p, stats, x, bs)[0].argmax(1) == y))

  p1 = _np_tent_sgd_step(p0, xs[0], lr)
  p2 = _np_tent_sgd_step(p1, xs[1], lr)
  # the references must tell "before" from "after" apart for the test to mean anything
  assert acc(p1, xs[0], ys[0]) != acc(p0, xs[0], ys[0])
  assert acc(p2, xs[2], ys[2]) != acc(p0, xs[2], ys[2])

  res = online_tta(model, v, shifts, mode="tent", reset="shift", base_tx=optax.sgd(lr))
  np.testing.assert_allclose(res.per_batch["a"], [acc(p0, xs[0], ys[0]), acc(p1, xs[1], ys[1])])
  np.testing.assert_allclose(res.per_batch["b"], [acc(p0, xs[2], ys[2])])  # reset
  np.testing.assert_allclose(
    res.losses["a"],
    [
      _np_entropy(_np_forward(p0, None, xs[0], 1)[0]),
      _np_entropy(_np_forward(p1, None, xs[1], 1)[0]),
    ],
    rtol=1e-10,
  )
  np.testing.assert_allclose(res.per_shift["a"], np.mean(res.per_batch["a"]))
  np.testing.assert_allclose(res.accuracy, (res.per_batch["a"].sum() + res.per_batch["b"][0]) / 3)
  np.testing.assert_array_equal(res.batch_sizes["a"], [16, 16])

  cont = online_tta(model, v, shifts, mode="tent", reset="never", base_tx=optax.sgd(lr))
  np.testing.assert_allclose(cont.per_batch["b"], [acc(p2, xs[2], ys[2])])
  np.testing.assert_allclose(
    np.asarray(cont.variables["params"]["bn"]["scale"]),
    _np_tent_sgd_step(p2, xs[2], lr)["bn"]["scale"],
    rtol=1e-10,
  )

  norm = online_tta(model, v, shifts, mode="norm")
  np.testing.assert_allclose(norm.per_batch["a"], [acc(p0, xs[0], ys[0]), acc(p0, xs[1], ys[1])])
  src = online_tta(model, v, shifts, mode="source")
  np.testing.assert_allclose(src.per_batch["b"], [acc(p0, xs[2], ys[2], bs=False)])
  assert np.all(np.isnan(src.losses["a"]))


def test_online_tta_errors(rng):
  model = LinearBN()
  v = models.init_variables(model, jax.random.key(0), jnp.ones((2, 4)))
  x, y = rng.normal(size=(4, 4)), np.zeros(4, int)
  with pytest.raises(ValueError, match="mode must be one of"):
    online_tta(model, v, {"a": [(x, y)]}, mode="bn")
  with pytest.raises(ValueError, match="reset must be one of"):
    online_tta(model, v, {"a": [(x, y)]}, reset="batch")
  with pytest.raises(ValueError, match="non-empty mapping"):
    online_tta(model, v, [(x, y)])
  with pytest.raises(ValueError, match=r"shift 'a', batch 0: expected an \(x, y\) pair"):
    online_tta(model, v, {"a": [x]})
  with pytest.raises(ValueError, match=r"y must have shape \[4\]"):
    online_tta(model, v, {"a": [(x, y[:3])]})
  with pytest.raises(ValueError, match="shift 'a' has no batch"):
    online_tta(model, v, {"a": []}, mode="source")
