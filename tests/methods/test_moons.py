"""Two moons (Ganin et al., JMLR 2016, Sec. 5.1.1): DANN beats source-only on the
rotated target, averaged over seeds.

Settings: 2 x 150 source points (noise 0.1), target = an independent draw rotated by
35 degrees; a one-hidden-layer network (32 ReLU units) whose hidden layer is the
feature representation; DANN's domain classifier reads the hidden layer through a
gradient reversal layer with constant lambda = 1; SGD (TLlib optimizer, lr 0.01),
batch 32 + 32, 4000 steps. Target labels are used only for the final accuracy.
"""

import jax
import jax.numpy as jnp
import numpy as np

from dtl_jax import data, methods, models, train

STEPS = 4000
SEEDS = (0, 1, 2)


def _run_method(method, src, tgt):
  model = models.TransferModel(models.MLP(hidden=(32,)), None, models.Classifier(2))
  x0 = jnp.asarray(src.x_train[:2], jnp.float32)
  tllib_sgd = {
    "learning_rate": 0.01,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 1e-3,
    "lr_gamma": 1e-3,
  }
  _, tx = train.create_train_state(model, method, key=jax.random.key(0), example_x=x0, **tllib_sgd)
  step = train.make_train_step(model, method, tx, total_steps=STEPS)
  xs, ys = jnp.asarray(src.x_train, jnp.float32), jnp.asarray(src.y_train)
  xt = jnp.asarray(tgt.x_train, jnp.float32)

  @jax.jit
  def run(state, idx_s, idx_t):
    def body(st, idx):
      i_s, i_t = idx
      st, m = step(st, {"x_s": xs[i_s], "y_s": ys[i_s], "x_t": xt[i_t]})
      return st, m["loss"]

    return jax.lax.scan(body, state, (idx_s, idx_t))

  eval_step = train.make_eval_step(model)
  accs = []
  for seed in SEEDS:
    state, _ = train.create_train_state(
      model, method, key=jax.random.key(seed), example_x=x0, **tllib_sgd
    )
    sampler = data.PairSampler(src, tgt, batch_size=32, seed=seed)
    idx_s = np.stack([sampler.source_indices(k) for k in range(STEPS)])
    idx_t = np.stack([sampler.target_indices(k) for k in range(STEPS)])
    state, losses = run(state, idx_s, idx_t)
    assert np.all(np.isfinite(np.asarray(losses)))
    logits = eval_step(state, jnp.asarray(tgt.x_test, jnp.float32))["logits"]
    accs.append(float(np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(tgt.y_test))))
  return accs


def test_dann_beats_source_only_on_moons(record_property):
  src = data.load_domain("moons", seed=0)
  tgt = data.load_domain("moons_rot", seed=0)
  so = _run_method(methods.SourceOnly(), src, tgt)
  dann = _run_method(
    methods.DANN(
      hidden=(32, 32), batch_norm=False, feature_key="features", schedule="constant", hi=1.0
    ),
    src,
    tgt,
  )
  report = (
    f"two moons target accuracy over seeds {SEEDS}: source_only "
    f"{np.mean(so):.3f} {np.round(so, 3).tolist()}, dann {np.mean(dann):.3f} "
    f"{np.round(dann, 3).tolist()}"
  )
  print(report)
  record_property("moons_target_accuracy", report)
  assert np.mean(dann) > np.mean(so) + 0.02, report
