"""Proxy A-distance against the closed form for two Gaussians."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from dtl_jax.stats import proxy_a_distance


@pytest.mark.parametrize("delta", [0.0, 1.0, 2.0])
def test_matches_bayes_error_of_two_gaussians(rng, delta):
  """N(0, 1) vs N(delta, 1): the best balanced error is Phi(-delta/2).

  So PAD ~ 2(1 - 2 Phi(-delta/2)).
  """
  xs = rng.normal(size=(2000, 1))
  xt = rng.normal(size=(1600, 1)) + delta
  pad = float(proxy_a_distance(xs, xt, key=jax.random.key(0)))
  expected = 2 * (1 - 2 * norm.cdf(-delta / 2))
  assert abs(pad - expected) < 0.12, (pad, expected)


def test_separable_domains_and_mlp(rng):
  xs = rng.normal(size=(300, 3))
  xt = rng.normal(size=(300, 3)) + 6.0
  assert float(proxy_a_distance(xs, xt, key=jax.random.key(1))) > 1.95
  # A ring around a blob is not linearly separable; the MLP classifier separates it.
  r = rng.normal(size=(400, 2)) * 0.5
  angle = rng.uniform(0, 2 * np.pi, size=400)
  ring = np.stack([3 * np.cos(angle), 3 * np.sin(angle)], 1) + 0.2 * rng.normal(size=(400, 2))
  lin = float(proxy_a_distance(r, ring, key=jax.random.key(2)))
  mlp = float(
    proxy_a_distance(
      r,
      ring,
      key=jax.random.key(2),
      classifier="mlp",
      hidden_sizes=(16,),
      num_steps=400,
      learning_rate=0.05,
    )
  )
  assert mlp > 1.8 and mlp > lin + 0.5, (lin, mlp)


def test_dtype_and_errors(rng):
  x = rng.normal(size=(20, 2)).astype(np.float32)
  assert proxy_a_distance(x, x + 1, key=jax.random.key(0)).dtype == jnp.float32
  with pytest.raises(ValueError, match="source_features"):
    proxy_a_distance(np.zeros((0, 2)), x, key=jax.random.key(0))
  with pytest.raises(ValueError, match="target_features"):
    proxy_a_distance(x, np.zeros((1, 2)), key=jax.random.key(0))
  with pytest.raises(ValueError, match="same feature dimension"):
    proxy_a_distance(x, x[:, :1], key=jax.random.key(0))
  with pytest.raises(ValueError, match="test_fraction"):
    proxy_a_distance(x, x, key=jax.random.key(0), test_fraction=0.0)
