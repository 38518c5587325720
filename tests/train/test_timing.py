"""PhaseClock: exclusive phases that add up to the total; fit reports its phases."""

import time

import jax.numpy as jnp
import pytest

from dtl_jax.train import fit
from dtl_jax.train.timing import PhaseClock
from tests.train.test_loop import _config

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_phases_are_exclusive_and_add_up():
  x = jnp.ones(2)  # JAX initialised outside the timed phases
  clock = PhaseClock()
  time.sleep(0.02)
  clock.lap("a")

  @clock.timed("inner")
  def inner(x):
    time.sleep(0.03)
    return x

  with clock.phase("outer"):
    time.sleep(0.02)
    assert inner(x).shape == (2,)
  time.sleep(0.01)
  clock.lap("b")
  s = clock.summary()
  assert set(s) == {"a_s", "inner_s", "outer_s", "b_s", "total_s"}
  assert 0.02 <= s["a_s"] < 0.2
  assert 0.03 <= s["inner_s"] < 0.2
  assert 0.02 <= s["outer_s"] < s["inner_s"] + 0.02  # the inner 0.03 s is not in it
  assert 0.01 <= s["b_s"] < 0.05  # neither outer nor inner is in the lap
  parts = sum(v for k, v in s.items() if k != "total_s")
  assert parts == pytest.approx(s["total_s"], abs=0.01)


def test_fit_reports_its_phases(tmp_path):
  r = fit(_config(10, method="source_only"), str(tmp_path / "run"))
  t = r["timings"]
  assert set(t) == {
    "data_s",
    "build_s",
    "first_step_s",
    "steps_s",
    "eval_s",
    "checkpoint_s",
    "finish_s",
    "total_s",
  }
  assert all(v >= 0 for v in t.values())
  assert t["eval_s"] > 0 and t["checkpoint_s"] > 0 and t["first_step_s"] > 0
  parts = sum(v for k, v in t.items() if k != "total_s")
  assert parts == pytest.approx(t["total_s"], rel=0.02)
