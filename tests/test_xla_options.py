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
