"""dtl_jax.xla_options: the library's CPU compiler options, where they apply, the opt-outs,
and that a train step compiled with them computes what XLA's defaults compute."""

import re

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest

from dtl_jax import methods, models, train, xla_options

MEASURED = jaxlib.__version__.startswith(xla_options.MEASURED_JAXLIB)


@pytest.fixture
def fresh(monkeypatch):
  xla_options._enabled.cache_clear()
  yield monkeypatch
  xla_options._enabled.cache_clear()


def test_options_on_cpu_for_the_measured_jaxlib_only(fresh):
  fresh.delenv("XLA_FLAGS", raising=False)
  fresh.delenv(xla_options.OPT_OUT_ENV, raising=False)
  want = xla_options.CPU_STEP_OPTIONS if MEASURED and jax.default_backend() == "cpu" else None
  assert xla_options.step_compiler_options() == want


def test_user_flags_and_opt_out_win(fresh):
  fresh.setenv(xla_options.OPT_OUT_ENV, "0")
  assert xla_options.step_compiler_options() is None
  xla_options._enabled.cache_clear()
  fresh.delenv(xla_options.OPT_OUT_ENV)
  fresh.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  assert xla_options.step_compiler_options() is None


@pytest.mark.skipif(not MEASURED or jax.default_backend() != "cpu", reason="jaxlib 0.10 CPU only")
def test_convolutions_leave_ynnpack_products_stay():
  x = jnp.ones((64, 28, 28, 3), jnp.float32)
  w = jnp.ones((5, 5, 3, 32), jnp.float32)
  a = jnp.ones((32, 64), jnp.float32)

  def f(x, w, a):
    y = jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y, a @ a.T

  default = jax.jit(f).lower(x, w, a).compile().as_text()
  ours = (
    jax.jit(f, compiler_options=xla_options.CPU_STEP_OPTIONS).lower(x, w, a).compile().as_text()
  )
  entry = ours[ours.index("ENTRY") :]
  assert re.search(r"= f32\[64,24,24,32\]\S* convolution\(", entry)  # XLA's own convolution
  assert '"__ynn_fusion"' in ours  # the product still goes to YNNPACK
  assert default.count('"__ynn_fusion"') == ours.count('"__ynn_fusion"') + 1  # only the conv


def test_train_step_with_the_options_equals_xla_defaults():
  model = models.TransferModel(
    models.LeNet(dropout=0.0), models.Bottleneck(16, dropout=0.0), models.Classifier(3)
  )
  method = methods.DANN(hidden=(8,), schedule="constant")
  rng = np.random.default_rng(0)
  batch = {
    "x_s": rng.random((4, 28, 28, 1), dtype=np.float32),
    "y_s": rng.integers(0, 3, 4).astype(np.int32),
    "x_t": rng.random((4, 28, 28, 1), dtype=np.float32),
  }
  state, tx = train.create_train_state(
    model, method, key=jax.random.key(0), example_x=batch["x_s"], learning_rate=0.1
  )
  body = train.make_train_step(model, method, tx)
  a, ma = train.jit_step(body, donate=False)(state, batch)
  b, mb = jax.jit(body)(state, batch)
  np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), rtol=1e-5)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_init_options_add_the_loop_emitters_where_the_step_options_apply(fresh):
  fresh.delenv("XLA_FLAGS", raising=False)
  fresh.delenv(xla_options.OPT_OUT_ENV, raising=False)
  opts = xla_options.init_compiler_options()
  assert opts.items() >= xla_options.INIT_COMPILER_OPTIONS.items()
  on = MEASURED and jax.default_backend() == "cpu"
  assert opts.get("xla_cpu_use_fusion_emitters", True) is (not on)
  xla_options._enabled.cache_clear()
  fresh.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")  # the user's choice wins
  assert xla_options.init_compiler_options() == xla_options.INIT_COMPILER_OPTIONS
  xla_options._enabled.cache_clear()
  fresh.delenv("XLA_FLAGS")
  fresh.setenv(xla_options.OPT_OUT_ENV, "0")
  assert xla_options.init_compiler_options() == xla_options.INIT_COMPILER_OPTIONS


def test_run_once_compiles_with_the_init_options(fresh, monkeypatch):
  """The options are not just defined: run_once hands them to jax.jit (a regression of
  27f2d31, whose loop-emitter option was never passed)."""
  seen = []
  real_jit = jax.jit

  def spy(fn, **kwargs):
    seen.append(kwargs.get("compiler_options"))
    return real_jit(fn, **kwargs)

  monkeypatch.setattr(jax, "jit", spy)
  got = xla_options.run_once(jax.random.fold_in, jax.random.key(0), 5)
  assert seen == [xla_options.init_compiler_options()]
  want = jax.random.key_data(jax.random.fold_in(jax.random.key(0), 5))
  np.testing.assert_array_equal(jax.random.key_data(got), want)


def test_split_keys_are_jax_random_split_bit_for_bit():
  key = jax.random.key(7)
  for num in (2, 3, 5):
    got = xla_options.split_keys(key, num)
    assert isinstance(got, tuple) and len(got) == num
    want = np.asarray(jax.random.key_data(jax.random.split(key, num)))
    np.testing.assert_array_equal(np.stack([jax.random.key_data(k) for k in got]), want)


def test_run_once_inside_a_trace_falls_back_to_the_outer_computation():
  def f(key, x):
    a, b = xla_options.split_keys(key, 2)
    y = xla_options.run_once(jax.random.fold_in, a, 3)
    return x * jax.random.uniform(y) + jax.random.uniform(b)

  key = jax.random.key(1)
  a, b = jax.random.split(key)
  want = 2.0 * jax.random.uniform(jax.random.fold_in(a, 3)) + jax.random.uniform(b)
  np.testing.assert_allclose(float(jax.jit(f)(key, 2.0)), float(want), rtol=1e-6)
  assert jax.eval_shape(f, key, 2.0).shape == ()


def test_start_up_state_equals_plain_initialization():
  """create_train_state's start-up computations (run_once) give what the plain JAX calls
  give: the model and discriminator initialized from the documented key splits, the
  optimizer state of tx.init."""
  model = models.TransferModel(
    models.LeNet(dropout=0.0), models.Bottleneck(16, dropout=0.0), models.Classifier(3)
  )
  method = methods.DANN(hidden=(8,), schedule="constant")
  x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
  key = jax.random.key(3)
  state, tx = train.create_train_state(
    model, method, key=key, example_x=x, learning_rate=0.1, momentum=0.9
  )
  init_key, extra_key, run_key = jax.random.split(key, 3)
  pkey, dkey = jax.random.split(init_key)
  want_model = model.init({"params": pkey, "dropout": dkey}, jnp.asarray(x[:1]), train=False)
  disc = models.DomainDiscriminator(hidden=(8,))
  pkey, dkey = jax.random.split(jax.random.fold_in(extra_key, 0))
  want_disc = disc.init({"params": pkey, "dropout": dkey}, jnp.zeros((2, 16)), train=False)
  for got, want in (
    (state.params["model"], want_model["params"]),
    (state.params["extra"]["discriminator"], want_disc["params"]),
    (state.opt_state, tx.init(state.params)),
  ):
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_leaves) == len(want_leaves) > 0
    for g, w in zip(got_leaves, want_leaves, strict=True):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(jax.random.key_data(state.rng), jax.random.key_data(run_key))
