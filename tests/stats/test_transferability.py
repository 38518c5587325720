"""LEEP, LogME (both of the authors' variants) and H-score against float64 NumPy references,
under jit, and ranking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtl_jax.stats import h_score, leep, logme

NUM_CLASSES = 3


# ----------------------------------------------------------------------------- references


def _leep_reference(theta, y):
  """Nguyen et al. (2020), Eqs. (1)-(3)."""
  n, z = theta.shape
  joint = np.zeros((y.max() + 1, z))
  for i in range(n):
    joint[y[i]] += theta[i] / n
  cond = joint / joint.sum(0, keepdims=True)
  return np.mean([np.log(cond[y[i]] @ theta[i]) for i in range(n)])


class ReleasedLogME:
  """float64 transcription of the authors' released ``LogME.py`` (thuml/LogME, commit
  56551ca94a3295bcc37e6a01b1291911af985f07, 2023): ``each_evidence``, ``truncated_svd``,
  ``_fit_icml`` and ``_fit_fixed_point`` line by line, without numba. ``fit`` is
  ``_fit_fixed_point``, as in the released class."""

  @staticmethod
  def each_evidence(y_, f, fh, v, s, vh, N, D):
    epsilon = 1e-5
    alpha = 1.0
    beta = 1.0
    lam = alpha / beta
    tmp = vh @ (f @ np.ascontiguousarray(y_))
    for _ in range(11):
      gamma = (s / (s + lam)).sum()
      m = v @ (tmp * beta / (alpha + beta * s))
      alpha_de = (m * m).sum()
      alpha = gamma / (alpha_de + epsilon)
      beta_de = ((y_ - fh @ m) ** 2).sum()
      beta = (N - gamma) / (beta_de + epsilon)
      new_lam = alpha / beta
      if np.abs(new_lam - lam) / lam < 0.01:
        break
      lam = new_lam
    evidence = (
      D / 2.0 * np.log(alpha)
      + N / 2.0 * np.log(beta)
      - 0.5 * np.sum(np.log(alpha + beta * s))
      - beta / 2.0 * (beta_de + epsilon)
      - alpha / 2.0 * (alpha_de + epsilon)
      - N / 2.0 * np.log(2 * np.pi)
    )
    return evidence / N

  @staticmethod
  def truncated_svd(x):
    u, s, vh = np.linalg.svd(x.transpose() @ x)
    s = np.sqrt(s)
    u_times_sigma = x @ vh.transpose()
    k = np.sum((s > 1e-10) * 1)
    s = s.reshape(-1, 1)
    s = s[:k]
    vh = vh[:k]
    u = u_times_sigma[:, :k] / s.reshape(1, -1)
    return u, s, vh

  def __init__(self, regression=False):
    self.regression = regression

  def _columns(self, y):
    num_dim = y.shape[1] if self.regression else int(y.max() + 1)
    for i in range(num_dim):
      yield y[:, i] if self.regression else (y == i).astype(np.float64)

  def fit_icml(self, f, y):
    f, y = self._prepare(f, y)
    fh = f
    f = f.transpose()
    D, N = f.shape
    v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
    return np.mean([self.each_evidence(y_, f, fh, v, s, vh, N, D) for y_ in self._columns(y)])

  def fit_fixed_point(self, f, y):
    f, y = self._prepare(f, y)
    N, D = f.shape
    if N > D:
      u, s, vh = self.truncated_svd(f)
    else:
      u, s, vh = np.linalg.svd(f, full_matrices=False)
    s = s.reshape(-1, 1)
    sigma = s**2
    evidences = []
    for y_ in self._columns(y):
      y_ = y_.reshape(-1, 1)
      x = u.T @ y_
      x2 = x**2
      res_x2 = (y_**2).sum() - x2.sum()
      alpha, beta = 1.0, 1.0
      for _ in range(11):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum()
        m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
        res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
        alpha = gamma / (m2 + 1e-5)
        beta = (N - gamma) / (res2 + 1e-5)
        t_ = alpha / beta
        if abs(t_ - t) / t <= 1e-3:
          break
      evidence = (
        D / 2.0 * np.log(alpha)
        + N / 2.0 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * sigma))
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - N / 2.0 * np.log(2 * np.pi)
      )
      evidences.append(evidence / N)
    return np.mean(evidences)

  fit = fit_fixed_point

  def _prepare(self, f, y):
    f = np.asarray(f).astype(np.float64)
    if self.regression:
      y = np.asarray(y).astype(np.float64)
      if len(y.shape) == 1:
        y = y.reshape(-1, 1)
    return f, y


def _logme_reference(features, y):
  """The authors' default (``LogME().fit``)."""
  return ReleasedLogME().fit(features, y)


def _h_score_reference(f, y):
  """Bao et al. (2019): tr(cov(f)^+ cov(E[f|y]))."""

  def cov(x):
    xc = x - x.mean(0, keepdims=True)
    return xc.T @ xc / (len(x) - 1)

  g = np.zeros_like(f)
  for c in np.unique(y):
    g[y == c] = f[y == c].mean(0)
  return np.trace(np.linalg.pinv(cov(f), rcond=1e-15) @ cov(g))


# ----------------------------------------------------------------------------- data


@pytest.fixture
def task(rng):
  n, d = 240, 6
  y = rng.integers(0, NUM_CLASSES, size=n)
  means = rng.normal(size=(NUM_CLASSES, d)) * 2.0
  good = means[y] + rng.normal(size=(n, d))
  bad = 0.3 * means[y] + rng.normal(size=(n, d)) * 2.0
  # Source classifiers with 5 source classes: one predicts a source class tied to y.
  src_of = np.array([0, 2, 4])
  good_logits = 3.0 * np.eye(5)[src_of[y]] + rng.normal(size=(n, 5))
  bad_logits = rng.normal(size=(n, 5))

  def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)

  return dict(
    y=y, good=good, bad=bad, good_probs=softmax(good_logits), bad_probs=softmax(bad_logits)
  )


# ----------------------------------------------------------------------------- tests


def test_leep_matches_reference(task):
  for probs in (task["good_probs"], task["bad_probs"]):
    got = leep(probs, task["y"])
    np.testing.assert_allclose(float(got), _leep_reference(probs, task["y"]), rtol=1e-5)


@pytest.mark.parametrize("variant", ["fixed_point", "icml"])
@pytest.mark.parametrize("shape", [(240, 6), (40, 64)], ids=["n>D", "n<D"])
def test_logme_matches_the_released_algorithm(rng, variant, shape):
  n, d = shape
  y = rng.integers(0, NUM_CLASSES, size=n)
  means = rng.normal(size=(NUM_CLASSES, d)) * 2.0
  reference = getattr(ReleasedLogME(), f"fit_{variant}")
  for scale in (1.0, 0.3):
    feats = scale * means[y] + rng.normal(size=(n, d))
    got = logme(feats, y, variant=variant)
    np.testing.assert_allclose(float(got), reference(feats, y), rtol=1e-9)


@pytest.mark.parametrize("variant", ["fixed_point", "icml"])
def test_logme_rank_deficient_features(rng, variant):
  """n > D with rank(F) < D (all-zero feature columns, e.g. dead ReLUs): the fixed point
  keeps the k nonzero singular values (truncated_svd), the ICML form sums
  log(α + βσ) over all D eigenvalues."""
  y = rng.integers(0, NUM_CLASSES, size=120)
  base = rng.normal(size=(120, 4)) + np.eye(NUM_CLASSES, 4)[y] * 2
  feats = np.concatenate([base[:, :2], np.zeros((120, 3)), base[:, 2:]], axis=1)  # rank 4 of 7
  reference = getattr(ReleasedLogME(), f"fit_{variant}")
  np.testing.assert_allclose(float(logme(feats, y, variant=variant)), reference(feats, y), 1e-7)


def test_logme_default_is_the_authors_default(task):
  for feats in (task["good"], task["bad"]):
    np.testing.assert_allclose(
      float(logme(feats, task["y"])), _logme_reference(feats, task["y"]), rtol=1e-9
    )
  # The variants differ (here by more than the float64 noise, less than 1%).
  a = float(logme(task["good"], task["y"], variant="fixed_point"))
  b = float(logme(task["good"], task["y"], variant="icml"))
  assert 1e-9 < abs(a - b) < 0.01 * abs(a)


@pytest.mark.parametrize("variant", ["fixed_point", "icml"])
def test_logme_regression_matches_the_released_algorithm(task, rng, variant):
  feats = task["good"]
  targets = np.stack([feats @ rng.normal(size=6), rng.normal(size=240)], axis=1)
  reference = getattr(ReleasedLogME(regression=True), f"fit_{variant}")
  got = logme(feats, targets, regression=True, variant=variant)
  # The first target is exactly linear in the features: its residual ||y||^2 - sum x^2
  # cancels to round-off, so the two float64 programs agree to 1e-7 here.
  np.testing.assert_allclose(float(got), reference(feats, targets), rtol=1e-6)
  got1 = logme(feats, targets[:, 0], regression=True, variant=variant)
  np.testing.assert_allclose(float(got1), reference(feats, targets[:, 0]), rtol=1e-6)


def test_logme_iteration_cap_matters(rng):
  """The released cap of 11 iterations: without it the ICML iteration runs further and
  the value moves (the library's previous cap of 100)."""
  y = rng.integers(0, NUM_CLASSES, size=60)
  feats = rng.normal(size=(60, 30)) + np.eye(NUM_CLASSES, 30)[y]
  capped = float(logme(feats, y, variant="icml"))
  np.testing.assert_allclose(capped, ReleasedLogME().fit_icml(feats, y), rtol=1e-9)
  longer = float(logme(feats, y, variant="icml", max_iterations=100, tol=1e-12))
  assert capped != longer


def test_h_score_matches_reference(task):
  for feats in (task["good"], task["bad"]):
    got = h_score(feats, task["y"], rtol=1e-15)
    np.testing.assert_allclose(float(got), _h_score_reference(feats, task["y"]), rtol=1e-5)


def test_scores_run_under_jit(task):
  y = jnp.asarray(task["y"])
  f = jnp.asarray(task["good"])
  p = jnp.asarray(task["good_probs"])
  jitted = jax.jit(
    lambda f, p, y: (
      leep(p, y, num_classes=NUM_CLASSES),
      logme(f, y, num_classes=NUM_CLASSES),
      h_score(f, y, num_classes=NUM_CLASSES, rtol=1e-15),
    )
  )
  got = jitted(f, p, y)
  refs = (
    _leep_reference(task["good_probs"], task["y"]),
    _logme_reference(task["good"], task["y"]),
    _h_score_reference(task["good"], task["y"]),
  )
  for g, r in zip(got, refs, strict=True):
    np.testing.assert_allclose(float(g), r, rtol=1e-5)


def test_float32_in_float32_out(task):
  y = task["y"]
  f32 = task["good"].astype(np.float32)
  assert logme(f32, y).dtype == jnp.float32
  assert h_score(f32, y).dtype == jnp.float32
  assert leep(task["good_probs"].astype(np.float32), y).dtype == jnp.float32
  np.testing.assert_allclose(float(logme(f32, y)), _logme_reference(task["good"], y), rtol=1e-3)


def test_better_features_rank_first(task):
  y = task["y"]
  assert float(logme(task["good"], y)) > float(logme(task["bad"], y))
  assert float(h_score(task["good"], y)) > float(h_score(task["bad"], y))
  assert float(leep(task["good_probs"], y)) > float(leep(task["bad_probs"], y))


def test_errors(task):
  y = task["y"]
  with pytest.raises(ValueError, match="features"):
    logme(np.zeros((0, 4)), np.zeros(0, int))
  with pytest.raises(ValueError, match="empty|features"):
    h_score(np.zeros((0, 4)), np.zeros(0, int))
  with pytest.raises(ValueError, match="source_probs"):
    leep(np.zeros((0, 5)), np.zeros(0, int))
  bad = y.copy()
  bad[3] = 7
  with pytest.raises(ValueError, match=r"labels.*\[0, 3\)"):
    logme(task["good"], bad, num_classes=3)
  with pytest.raises(ValueError, match="labels"):
    h_score(task["good"], -np.ones_like(y))
  with pytest.raises(ValueError, match=r"target_labels.*\[0, 2\)"):
    leep(task["good_probs"], y, num_classes=2)
  with pytest.raises(ValueError, match="logits"):
    leep(np.log(task["good_probs"]), y)
  with pytest.raises(ValueError, match=r"shape \[240\]"):
    logme(task["good"], y[:10])
  with pytest.raises(ValueError, match="num_classes"):
    jax.jit(lambda f, y: logme(f, y))(task["good"], y)
  with pytest.raises(ValueError, match="variant"):
    logme(task["good"], y, variant="mackay")
  with pytest.raises(ValueError, match="max_iterations"):
    logme(task["good"], y, max_iterations=0)
