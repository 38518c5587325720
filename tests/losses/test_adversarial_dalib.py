"""Comparison with dalib 0.2 (TLlib's first release): values and gradients, float64.

Compared: ``GradientReverseFunction`` / ``WarmStartGradientReverseLayer``,
``DomainAdversarialLoss`` (same discriminator weights and outputs),
``ConditionalDomainAdversarialLoss`` (full map, randomized map with the same matrices,
entropy conditioning on and off) and ``MarginDisparityDiscrepancy``.

dalib 0.2's ``grl.py`` calls ``np.float`` (removed in NumPy 1.24), hence the alias below.
"""

import numpy as np

np.float = float  # dalib 0.2's WarmStartGradientReverseLayer uses np.float

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from dalib.adaptation.cdan import ConditionalDomainAdversarialLoss  # noqa: E402
from dalib.adaptation.dann import DomainAdversarialLoss  # noqa: E402
from dalib.adaptation.mdd import MarginDisparityDiscrepancy  # noqa: E402
from dalib.modules.grl import GradientReverseFunction, WarmStartGradientReverseLayer  # noqa: E402

from dtl_jax.losses import (  # noqa: E402
  cdan_features,
  cdan_loss,
  dann_loss,
  domain_accuracy,
  gradient_reverse,
  mdd_loss,
  warm_start_schedule,
)

ATOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _torch_float64():
  """dalib builds its domain labels with ``torch.ones``: make those float64 too."""
  old = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)
  yield
  torch.set_default_dtype(old)


def close(jax_value, torch_value):
  t = torch_value.detach().numpy() if isinstance(torch_value, torch.Tensor) else torch_value
  np.testing.assert_allclose(np.asarray(jax_value), t, atol=ATOL, rtol=0)


def t64(x, requires_grad=True):
  return torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=requires_grad)


def make_discriminator(in_features, seed, hidden=8):
  """Linear-ReLU-Linear-Sigmoid in torch, and the same network's *logits* in JAX."""
  torch.manual_seed(seed)
  net = torch.nn.Sequential(
    torch.nn.Linear(in_features, hidden),
    torch.nn.ReLU(),
    torch.nn.Linear(hidden, 1),
    torch.nn.Sigmoid(),
  ).double()
  params = {k: jnp.asarray(v.detach().numpy()) for k, v in net.state_dict().items()}

  def logits_fn(params, h):
    a = jax.nn.relu(h @ params["0.weight"].T + params["0.bias"])
    return a @ params["2.weight"].T + params["2.bias"]

  return net, params, logits_fn


def torch_param_grads(net):
  return {k: v.grad.numpy() for k, v in net.named_parameters()}


# ---- gradient reversal --------------------------------------------------------------


@pytest.mark.parametrize("coeff", [0.0, 0.37, 1.0, 3.0])
def test_gradient_reverse_function(rng, coeff):
  x = rng.normal(size=(4, 3))
  xt = t64(x)
  y = GradientReverseFunction.apply(xt, coeff)
  (torch.sin(y) * y**2).sum().backward()
  f = lambda x: jnp.sum(jnp.sin(x) * x**2)
  out = gradient_reverse(jnp.asarray(x), coeff)
  close(out, y)
  close(jax.jit(jax.grad(lambda x, c: f(gradient_reverse(x, c))))(jnp.asarray(x), coeff), xt.grad)


@pytest.mark.parametrize(
  "hi,lo,alpha,max_iters", [(1.0, 0.0, 1.0, 1000), (0.1, 0.0, 1.0, 1000), (2.0, 0.5, 5.0, 40)]
)
def test_warm_start_layer(rng, hi, lo, alpha, max_iters):
  layer = WarmStartGradientReverseLayer(
    alpha=alpha, lo=lo, hi=hi, max_iters=max_iters, auto_step=True
  )
  schedule = warm_start_schedule(hi=hi, lo=lo, alpha=alpha, max_iters=max_iters)
  grad_fn = jax.jit(jax.grad(lambda x, i: jnp.sum(gradient_reverse(x, schedule(i)) ** 3)))
  x = rng.normal(size=(5,))
  for step in range(0, 120, 7):
    layer.iter_num = step
    xt = t64(x)
    (layer(xt) ** 3).sum().backward()
    close(grad_fn(jnp.asarray(x), step), xt.grad)


# ---- DANN ---------------------------------------------------------------------------


@pytest.mark.parametrize("iter_num", [0, 250])
def test_domain_adversarial_loss(rng, iter_num):
  n, d = 6, 5
  f_s, f_t = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 0.5
  net, params, logits_fn = make_discriminator(d, seed=1)
  dalib_loss = DomainAdversarialLoss(net)
  dalib_loss.grl.iter_num = iter_num  # coefficient used by this forward pass
  fs_t, ft_t = t64(f_s), t64(f_t)
  out = dalib_loss(fs_t, ft_t)
  out.backward()

  coeff = warm_start_schedule(hi=1.0, lo=0.0, alpha=1.0, max_iters=1000)(iter_num)

  def ours(f_s, f_t, params):
    h = gradient_reverse(jnp.concatenate([f_s, f_t]), coeff)
    logits = logits_fn(params, h)
    return dann_loss(logits[:n], logits[n:]), logits

  (value, logits), grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2), has_aux=True))(
    jnp.asarray(f_s), jnp.asarray(f_t), params
  )
  close(value, out)
  close(grads[0], fs_t.grad)
  close(grads[1], ft_t.grad)
  for k, g in torch_param_grads(net).items():
    close(grads[2][k], g)
  # dalib's binary_accuracy is computed in float32 (a percentage): compare at float32 precision
  np.testing.assert_allclose(
    100 * float(domain_accuracy(logits[:n], logits[n:])),
    float(dalib_loss.domain_discriminator_accuracy),
    rtol=1e-6,
  )


# ---- CDAN ---------------------------------------------------------------------------


def _corrected_randomized_forward(self, f, g):
  """dalib 0.2's ``RandomizedMultiLinearMap.forward`` multiplies ``mm(Rf, f)`` (operands
  swapped; it raises for any batch size != output_dim). TLlib fixed it to the row-wise
  ``mm(f, Rf)``, the paper's map; we patch that fix in and keep the rest of dalib's loss."""
  return torch.mm(f, self.Rf) * torch.mm(g, self.Rg) / np.sqrt(float(self.output_dim))


def test_dalib_02_randomized_map_is_broken():
  """Why the comparison below patches the map's forward (see _corrected_randomized_forward)."""
  from dalib.adaptation.cdan import RandomizedMultiLinearMap

  with pytest.raises(RuntimeError):
    RandomizedMultiLinearMap(6, 3, 16)(torch.randn(4, 6), torch.randn(4, 3))


@pytest.mark.parametrize("randomized", [False, True])
@pytest.mark.parametrize("entropy_conditioning", [False, True])
def test_conditional_domain_adversarial_loss(rng, randomized, entropy_conditioning):
  n, feat, classes, rdim = 5, 4, 3, 16
  f_s, f_t = rng.normal(size=(n, feat)), rng.normal(size=(n, feat))
  g_s, g_t = rng.normal(size=(n, classes)) * 2, rng.normal(size=(n, classes)) * 2
  in_dim = rdim if randomized else feat * classes
  net, params, logits_fn = make_discriminator(in_dim, seed=2)
  dalib_loss = ConditionalDomainAdversarialLoss(
    net,
    entropy_conditioning=entropy_conditioning,
    randomized=randomized,
    num_classes=classes,
    features_dim=feat,
    randomized_dim=rdim,
  )
  matrices = None
  if randomized:
    r_f, r_g = rng.normal(size=(feat, rdim)), rng.normal(size=(classes, rdim))
    dalib_loss.map.Rf = torch.tensor(r_f)
    dalib_loss.map.Rg = torch.tensor(r_g)
    dalib_loss.map.forward = _corrected_randomized_forward.__get__(dalib_loss.map)
    matrices = (jnp.asarray(r_f), jnp.asarray(r_g))
  dalib_loss.grl.iter_num = 400
  tensors = [t64(a) for a in (g_s, f_s, g_t, f_t)]
  out = dalib_loss(*tensors)
  out.backward()

  coeff = warm_start_schedule(hi=1.0, lo=0.0, alpha=1.0, max_iters=1000)(400)

  def ours(g_s, f_s, g_t, f_t, params):
    z = jnp.concatenate([g_s, g_t])
    h = cdan_features(jnp.concatenate([f_s, f_t]), z, matrices=matrices)
    logits = logits_fn(params, gradient_reverse(h, coeff))
    loss = cdan_loss(
      logits[:n],
      logits[n:],
      logits_source=g_s,
      logits_target=g_t,
      entropy_conditioning=entropy_conditioning,
    )
    return loss, logits

  args = [jnp.asarray(a) for a in (g_s, f_s, g_t, f_t)]
  (value, logits), grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2, 3, 4), has_aux=True))(
    *args, params
  )
  close(value, out)
  for ours_g, t in zip(grads[:4], tensors, strict=True):
    close(ours_g, t.grad if t.grad is not None else torch.zeros_like(t))
  for k, g in torch_param_grads(net).items():
    close(grads[4][k], g)
  # dalib's binary_accuracy is computed in float32 (a percentage): compare at float32 precision
  np.testing.assert_allclose(
    100 * float(domain_accuracy(logits[:n], logits[n:])),
    float(dalib_loss.domain_discriminator_accuracy),
    rtol=1e-6,
  )


# ---- MDD ----------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [1.0, 4.0])
def test_margin_disparity_discrepancy(rng, margin):
  n_s, n_t, c = 6, 4, 5
  y_s, y_s_adv = rng.normal(size=(n_s, c)) * 2, rng.normal(size=(n_s, c)) * 2
  y_t, y_t_adv = rng.normal(size=(n_t, c)) * 2, rng.normal(size=(n_t, c)) * 2
  # exercise the shift_log clamp: adversary certain of / certainly against the prediction
  y_t_adv[0] = -40.0
  y_t_adv[0, np.argmax(y_t[0])] = 40.0
  y_t_adv[1] = 40.0
  y_t_adv[1, np.argmax(y_t[1])] = -40.0
  tensors = [t64(a) for a in (y_s, y_s_adv, y_t, y_t_adv)]
  out = MarginDisparityDiscrepancy(margin=margin)(*tensors)
  out.backward()
  args = [jnp.asarray(a) for a in (y_s, y_s_adv, y_t, y_t_adv)]
  value, grads = jax.jit(
    jax.value_and_grad(lambda *a: mdd_loss(*a, margin=margin), argnums=(0, 1, 2, 3))
  )(*args)
  close(value, out)
  for ours_g, t in zip(grads, tensors, strict=True):
    close(ours_g, t.grad if t.grad is not None else torch.zeros_like(t))
