"""Label-free selection criteria against plain float64 NumPy loops."""

import math

import numpy as np
import pytest

from dtl_jax.train import selection


def _snd_loop(p, tau):
  n = len(p)
  f = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in p]
  total = 0.0
  for i in range(n):
    sims = [sum(a * b for a, b in zip(f[i], f[j], strict=True)) / tau for j in range(n) if j != i]
    m = max(sims)
    z = sum(math.exp(s - m) for s in sims)
    probs = [math.exp(s - m) / z for s in sims]
    total += -sum(q * math.log(q) for q in probs if q > 0)
  return total / n


def test_snd_matches_loop(rng):
  logits = rng.normal(size=(12, 4)) * 2
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  assert selection.snd(p, temperature=0.05) == pytest.approx(_snd_loop(p.tolist(), 0.05), rel=1e-10)
  # identical predictions: every neighbour equally similar -> entropy log(n - 1)
  same = np.tile(p[:1], (12, 1))
  assert selection.snd(same) == pytest.approx(math.log(11), rel=1e-9)
  with pytest.raises(ValueError, match="probs"):
    selection.snd(p[:1])


def test_snd_in_row_blocks_matches_the_whole_matrix(rng):
  """n = 1500: snd works on blocks of 699 rows (memory ~2**20 similarities); the score
  equals the formula on the whole n x n matrix."""
  p = rng.dirichlet(np.ones(4), size=1500)
  f = p / np.linalg.norm(p, axis=1, keepdims=True)
  s = f @ f.T / 0.05
  np.fill_diagonal(s, -np.inf)
  s = s - s.max(1, keepdims=True)
  lp = s - np.log(np.exp(s).sum(1, keepdims=True))
  pr = np.exp(lp)
  want = np.mean(-np.sum(pr * np.where(pr > 0, lp, 0.0), axis=1))
  assert selection.snd(p, temperature=0.05) == pytest.approx(want, rel=1e-10)


def test_dev_and_iwv_match_formulas(rng):
  losses = rng.uniform(0, 2, size=50)
  w = rng.uniform(0.2, 3, size=50)
  wl = w * losses
  eta = -np.cov(wl, w, ddof=1)[0, 1] / np.var(w, ddof=1)
  assert selection.dev_risk(losses, w) == pytest.approx(wl.mean() + eta * w.mean() - eta, rel=1e-12)
  assert selection.iwv_risk(losses, w) == pytest.approx(wl.mean(), rel=1e-12)
  # with constant weights DEV reduces to the plain weighted mean
  assert selection.dev_risk(losses, np.ones(50)) == pytest.approx(losses.mean())


def test_importance_weights_follow_density_ratio(rng):
  xs = rng.normal(size=(400, 1))
  xt = rng.normal(loc=1.0, size=(400, 1))
  w = selection.domain_importance_weights(xs, xt)
  # true ratio N(1,1)/N(0,1) = exp(x - 1/2) is increasing in x
  order = np.argsort(xs[:, 0])
  assert np.corrcoef(w[order], np.exp(xs[order, 0] - 0.5))[0, 1] > 0.9
  assert np.all(w >= 0)


def test_entropy_and_cross_entropy(rng):
  p = np.array([[0.5, 0.5], [1.0, 0.0]])
  assert selection.prediction_entropy(p) == pytest.approx(math.log(2) / 2)
  z = rng.normal(size=(5, 3))
  y = np.array([0, 1, 2, 1, 0])
  ref = [-(z[i, y[i]] - math.log(sum(math.exp(v) for v in z[i]))) for i in range(5)]
  np.testing.assert_allclose(selection.cross_entropy(z, y), ref, rtol=1e-12)


def test_select_picks_best_score_per_criterion():
  hist = [
    {"step": 10, "scores": {"iwv": -1.0, "snd": 3.0}, "oracle_target_acc": 0.5},
    {"step": 20, "scores": {"iwv": -0.5, "snd": 2.0}, "oracle_target_acc": 0.7},
    {"step": 30, "scores": {"iwv": -0.7, "snd": float("nan")}, "oracle_target_acc": 0.6},
  ]
  sel = selection.select(hist, ("iwv", "snd"))
  assert sel["iwv"] == {"step": 20, "score": -0.5, "target_acc": 0.7}
  assert sel["snd"]["step"] == 10
  assert sel["last"]["step"] == 30 and sel["last"]["target_acc"] == 0.6
  with pytest.raises(ValueError, match="history"):
    selection.select([])
