"""MLP activations against a float64 NumPy forward pass with the same parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtl_jax.models import MLP

pytestmark = pytest.mark.usefixtures("fast_compile")

NUMPY = {
  "relu": lambda z: np.maximum(z, 0.0),
  "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
  "tanh": np.tanh,
}


@pytest.mark.parametrize("activation", sorted(NUMPY))
def test_activation_matches_numpy(rng, activation):
  x = rng.normal(size=(7, 3))
  model = MLP((5, 4), activation=activation)
  variables = model.init(jax.random.key(0), jnp.asarray(x), train=False)
  got = np.asarray(model.apply(variables, jnp.asarray(x), train=False))
  h = x
  for name in ("fc1", "fc2"):
    p = variables["params"][name]
    h = NUMPY[activation](h @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"]))
  np.testing.assert_allclose(got, h, rtol=1e-5, atol=1e-6)


def test_unknown_activation_is_named():
  with pytest.raises(ValueError, match="activation must be one of"):
    MLP((3,), activation="gelu").init(jax.random.key(0), jnp.zeros((1, 2)), train=False)
