"""The two-moons ablation: its transcription of the released DANN code, its data, orders
and inits, and that the library's paper-variant DANN step is the same algorithm."""

import dataclasses
import json

import numpy as np
import pytest

from experiments import two_moons_ablation as tma


def _short(run, steps):
  return dataclasses.replace(
    run, source_idx=run.source_idx[:steps], target_idx=run.target_idx[:steps]
  )


def test_authors_data_is_the_released_scripts():
  # experiments_moons.py: make_trans_moons(35, nb=150) with its own rotation-matrix form
  from sklearn.datasets import make_moons

  X, y = make_moons(150, noise=0.05, random_state=1)
  Xt, _ = make_moons(150, noise=0.05, random_state=2)
  m = X.mean(0)
  X, Xt = 2 * (X - m), 2 * (Xt - m)
  th = -35 * np.pi / 180
  Xt = Xt @ np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]]).T
  d = tma.make_data(tma.AUTHORS, 0)
  np.testing.assert_allclose(d.x_source, X, atol=1e-12)
  np.testing.assert_array_equal(d.y_source, y)
  np.testing.assert_allclose(d.x_target, Xt, atol=1e-12)
  assert len(d.x_test) == 150 and not np.allclose(d.x_test, d.x_target)


def test_library_data_and_holdout_are_the_library_runs():
  from dtl_jax import config as C
  from dtl_jax.train import load_domains, split_source_val

  c = C.load_config(f"{tma.HERE}/configs/two_moons.py:dann-paper")
  c.seed = 2
  src, tgt = load_domains(c)
  train, _ = split_source_val(src, c.data.source_val_fraction, 2)
  setting = dataclasses.replace(tma.LIBRARY, center=True, scale=c.data.domain_kwargs.scale)
  d = tma.make_data(setting, 2)
  np.testing.assert_allclose(d.x_source, train.x_train, atol=1e-6)
  np.testing.assert_array_equal(d.y_source, train.y_train)
  np.testing.assert_allclose(d.x_target, tgt.x_train, atol=1e-6)
  np.testing.assert_allclose(d.x_test, tgt.x_test, atol=1e-6)


@pytest.mark.parametrize("uniform", [False, True])
def test_sampler_orders_are_the_librarys(uniform):
  from dtl_jax.data import pipeline

  n_s, n_t = 27, 30
  xs, ys = np.zeros((n_s, 2), np.float32), np.arange(n_s) % 2
  b = pipeline.TrainBatches(
    xs,
    ys,
    np.zeros((n_t, 2), np.float32),
    batch_size=1,
    target_batch_size=1,
    seed=4,
    target_sampling="uniform" if uniform else "epochs",
  )
  steps = 200
  src = tma._sampler_order(n_s, steps, 4, 0)
  tgt = tma._sampler_order(n_t, steps, 4, 1, uniform=uniform)
  np.testing.assert_array_equal(src, [b.source_indices(k)[0] for k in range(steps)])
  np.testing.assert_array_equal(tgt, [b.target_indices(k)[0] for k in range(steps)])


def test_inits():
  rs = np.random.RandomState(0)
  g = tma._init(rs, "glorot_uniform", 15, 2)
  bound = np.sqrt(6 / 17)
  assert g.shape == (15, 2) and np.abs(g).max() <= bound and np.abs(g).max() > 0.8 * bound
  big = tma._init(rs, "lecun_normal", 400, 100)  # fan_in 100: variance 1 / 100
  np.testing.assert_allclose(big.var(), 1 / 100, rtol=0.05)
  assert np.abs(big).max() <= 2 * 0.1 / 0.87962566103423978  # truncated at 2 sigma
  assert not tma._init(rs, "zeros", 1, 15).any()
  with pytest.raises(ValueError, match="init must be one of"):
    tma._init(rs, "he", 2, 2)


def test_released_run_seed_0_reproduces_its_figure():
  # seed 0 is the released script's run (init seed 42); its Fig. 2 panels show the
  # target training points, whose labels come from the same make_moons draw
  from sklearn.datasets import make_moons

  _, yt = make_moons(150, noise=0.05, random_state=2)
  acc = {}
  for adv in (False, True):
    run = tma.make_run(tma.AUTHORS, 0, adversarial=adv)
    acc[adv] = 100 * np.mean(tma.predict(tma.fit_single(run), run.data.x_target) == yt)
  assert acc[True] == pytest.approx(98.0, abs=0.01)  # DANN
  assert acc[False] == pytest.approx(78.0 + 2 / 3, abs=0.01)  # standard NN


@pytest.mark.parametrize("name", ["authors", "library", "L+b2+d3"])
def test_batched_equals_single(name):
  setting = {s.name: s for s in tma.ALL_SETTINGS}[name]
  setting = dataclasses.replace(setting, dtype="float64")
  runs = [
    _short(tma.make_run(setting, seed, adversarial=adv), 400)
    for seed in (0, 1)
    for adv in (False, True)
  ]
  # different lengths: the shorter run stops
  runs[1] = _short(runs[1], 250)
  got = tma.fit_batched(runs)
  for r, g in zip(runs, got, strict=True):
    ref = tma.fit_single(r)
    for k in ref:
      np.testing.assert_allclose(g[k], ref[k], rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.usefixtures("fast_compile")
def test_library_paper_dann_is_the_transcribed_algorithm(tmp_path):
  """dtl_jax's -paper DANN from its own init, data and order = the transcription's
  update rule (the differences the study switches are then the only ones)."""
  import jax

  from dtl_jax import config as C
  from dtl_jax import methods, models
  from dtl_jax.train import create_train_state, fit, load_domains, split_source_val
  from dtl_jax.train.loop import initial_variables

  steps = 300
  c = C.load_config(f"{tma.HERE}/configs/two_moons.py:dann-paper")
  c.train.num_steps = c.train.eval_every = c.train.log_every = steps
  c.train.checkpoint_every = steps
  c.train.progress = c.train.tensorboard = False
  src, tgt = load_domains(c)
  train, _ = split_source_val(src, c.data.source_val_fraction, c.seed)
  model = models.build(c.model, num_classes=2)
  method = methods.build(c.method, **dict(c.method_kwargs))
  key = jax.random.key(c.seed)
  ex = np.asarray(train.x_train[:2])
  v = initial_variables(c, model, key, ex[:1])
  ctx = methods.SetupContext(
    model=model,
    model_variables=v,
    init_from="",
    source_inputs=train.x_train,
    target_inputs=tgt.x_train,
    seed=c.seed,
    load_run=None,
  )
  state, _ = create_train_state(
    model,
    method,
    key=key,
    example_x=ex,
    model_variables=v,
    extra_variables=method.setup(ctx).extra_variables,
    **dict(c.optim),
  )
  result = fit(c, tmp_path / "run")

  def as_np(params):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    fc, head = p["model"]["backbone"]["fc1"], p["model"]["head"]["fc"]
    disc = p["extra"]["discriminator"]["fc1"]
    return {
      "W": fc["kernel"].T,
      "b": fc["bias"],
      "V": head["kernel"].T,
      "c": head["bias"],
      "w": disc["kernel"][:, 0],
      "d": disc["bias"][0],
    }

  p0, p1 = as_np(state.params), as_np(result["state"].params)
  assert not (p0["b"].any() or p0["c"].any() or p0["d"])
  setting = dataclasses.replace(
    tma.LIBRARY, center=True, scale=c.data.domain_kwargs.scale, target_order="sampler_uniform"
  )
  run = tma.make_run(setting, c.seed, adversarial=True)
  run = dataclasses.replace(run, W=p0["W"], V=p0["V"], w=p0["w"])
  ref = tma.fit_single(run, steps=steps)
  for k in ref:
    np.testing.assert_allclose(p1[k], ref[k], atol=2e-5, err_msg=k)


def test_study_report(tmp_path):
  settings = [dataclasses.replace(s, passes=2) for s in tma.ALL_SETTINGS[:3]]
  records = tma.run(settings, seeds=(0, 1))
  assert len(records) == 3 * 2 * 2
  paths = tma.write_results(records, seeds=(0, 1), out=tmp_path, seconds=1.0, settings=settings)
  data = json.loads(paths["json"].read_text())
  assert data["metadata"]["seeds"] == [0, 1]
  assert [s["name"] for s in data["metadata"]["config"]["settings"]] == [s.name for s in settings]
  for row in data["rows"]:
    dann = [
      r["target_acc"] for r in records if r["setting"] == row["setting"] and r["method"] == "dann"
    ]
    assert row["dann"][0] == pytest.approx(np.mean(dann))
    assert row["follows"] == f"{sum(a >= tma.FOLLOWS for a in dann)}/2"
  assert "| authors |" in paths["md"].read_text()
