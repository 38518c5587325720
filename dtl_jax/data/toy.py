"""Tabular toy domains: the DANN two-moons problem and a covariate-shift ``blobs`` pair.

``moons`` / ``moons_rot`` follow the toy experiment of Ganin et al., "Domain-Adversarial
Training of Neural Networks" (JMLR 2016, Sec. 5.1, the "inter-twinning moons" 2D
problem): the source sample has an upper moon (label 0) and a lower moon (label 1)
with 150 examples each (300 in all); the target sample is generated the same way
(an independent draw), then every example is rotated by 35 degrees, and its labels are
withheld from training (a sampler only yields target inputs). The paper does not
state a noise level; we use Gaussian noise with standard deviation 0.1. We rotate about
the centre of the two moons, ``(0.5, 0.25)``, so that the target overlaps the source
(rotating about the origin would also translate it). Test splits are further
independent draws of the same size. ``scale=s`` moves both domains to the coordinates of
the authors' released script (``make_trans_moons`` of GRAAL-Research/
domain_adversarial_neural_network's ``experiments_moons.py``, which uses
``2 (x - source mean)``): every point becomes ``s (x - (0.5, 0.25))``, so the moons are
centred on the origin (the target is then rotated about the origin). With the sigmoid
network of the paper's toy, these coordinates matter: see
``experiments/results/two_moons_ablation/``.

The moon geometry is scikit-learn's ``make_moons`` (upper: ``(cos t, sin t)``, lower:
``(1 - cos t, 0.5 - sin t)``, ``t`` evenly spaced in ``[0, pi]``), written in NumPy so
that building a moons domain does not import scikit-learn.

``blobs`` / ``blobs_shift`` are a covariate shift for instance-weighting methods
(KMM, TrAdaBoost, density-ratio weights): both domains share the labelling rule
``p(y | x)``, only ``p(x)`` changes. With ``s = x_1 - 0.5 x_0^2`` the label is
``0`` if ``s < -1``, ``1`` if ``-1 <= s < 1``, else ``2`` (parabolic bands, so a linear
classifier is misspecified and importance weighting matters). Source inputs are
``N(0, 1.5^2 I)``, target inputs ``N((1.5, 1.0, 0, ...), 0.75^2 I)`` in ``dim``
dimensions (the extra dimensions are nuisance features). 500 train / 500 test each.
"""

from __future__ import annotations

import numpy as np

from dtl_jax.data.domain import Domain, register_domain

MOONS_CENTER = np.array([0.5, 0.25])


def make_moons(
  n_per_class: int, *, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Two moons as scikit-learn's ``make_moons(shuffle=False)``: ``[2n, 2]``, ``[2n]``."""
  t = np.linspace(0, np.pi, n_per_class)
  upper = np.stack([np.cos(t), np.sin(t)], axis=1)
  lower = np.stack([1 - np.cos(t), 1 - np.sin(t) - 0.5], axis=1)
  x = np.concatenate([upper, lower])
  y = np.concatenate([np.zeros(n_per_class, np.int32), np.ones(n_per_class, np.int32)])
  if noise:
    x = x + rng.normal(scale=noise, size=x.shape)
  return x, y


def rotate_2d(x: np.ndarray, angle_deg: float, *, center=MOONS_CENTER) -> np.ndarray:
  """Rotates ``[n, 2]`` points counter-clockwise by ``angle_deg`` about ``center``."""
  a = np.deg2rad(angle_deg)
  rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  return (x - center) @ rot.T + center


def _moons(name, code, seed, n_per_class, noise, angle, scale):
  if n_per_class < 2:
    raise ValueError(f"n_per_class must be >= 2, got {n_per_class}.")
  if noise < 0:
    raise ValueError(f"noise must be >= 0, got {noise}.")
  if scale is not None and (
    isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < np.inf
  ):
    raise ValueError(f"scale must be None or a finite number > 0, got {scale!r}.")
  splits = []
  for split in (0, 1):
    rng = np.random.default_rng([seed, code, split])
    x, y = make_moons(n_per_class, noise=noise, rng=rng)
    if angle:
      x = rotate_2d(x, angle)
    if scale is not None:
      x = scale * (x - MOONS_CENTER)
    perm = rng.permutation(len(y))
    splits.append((x[perm].astype(np.float32), y[perm]))
  desc = (
    "two moons (DANN toy), source"
    if not angle
    else f"two moons (DANN toy) rotated by {angle} degrees, target"
  )
  return Domain(
    name=name,
    x_train=splits[0][0],
    y_train=splits[0][1],
    x_test=splits[1][0],
    y_test=splits[1][1],
    num_classes=2,
    class_names=("upper", "lower"),
    description=desc,
  )


@register_domain("moons", "DANN two-moons toy, source: 2 x 150 points, noise 0.1")
def build_moons(
  *, seed: int = 0, n_per_class: int = 150, noise: float = 0.1, scale: float | None = None
) -> Domain:
  """The DANN toy source domain (upper moon 0, lower moon 1), ``x``: ``[2 n, 2]``.

  ``scale``: ``None`` keeps make_moons' coordinates; a number ``s`` maps every point to
  ``s (x - (0.5, 0.25))`` (the released DANN code's moons use ``s = 2``).
  """
  return _moons("moons", 100, seed, n_per_class, noise, 0.0, scale)


@register_domain("moons_rot", "DANN two-moons toy, target: independent draw rotated 35 deg")
def build_moons_rot(
  *,
  seed: int = 0,
  n_per_class: int = 150,
  noise: float = 0.1,
  angle: float = 35.0,
  scale: float | None = None,
) -> Domain:
  """The DANN toy target: an independent moons draw rotated by ``angle`` degrees about
  the moons' centre, then mapped like :func:`build_moons` by ``scale``."""
  return _moons("moons_rot", 101, seed, n_per_class, noise, float(angle), scale)


def blobs_label(x: np.ndarray) -> np.ndarray:
  """The shared labelling rule of ``blobs`` / ``blobs_shift`` (see module docstring)."""
  s = x[:, 1] - 0.5 * x[:, 0] ** 2
  return np.where(s < -1, 0, np.where(s < 1, 1, 2)).astype(np.int32)


def _blobs(name, code, seed, n, dim, mean, std, description):
  if dim < 2:
    raise ValueError(f"dim must be >= 2, got {dim}.")
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}.")
  mu = np.zeros(dim)
  mu[:2] = mean
  splits = []
  for split in (0, 1):
    rng = np.random.default_rng([seed, code, split])
    x = mu + std * rng.normal(size=(n, dim))
    splits.append((x.astype(np.float32), blobs_label(x)))
  return Domain(
    name=name,
    x_train=splits[0][0],
    y_train=splits[0][1],
    x_test=splits[1][0],
    y_test=splits[1][1],
    num_classes=3,
    class_names=("low", "middle", "high"),
    description=description,
  )


@register_domain("blobs", "covariate shift source: N(0, 1.5^2 I), parabolic-band labels")
def build_blobs(*, seed: int = 0, n: int = 500, dim: int = 2) -> Domain:
  """Covariate-shift source domain, ``x``: ``[n, dim]``."""
  return _blobs(
    "blobs", 200, seed, n, dim, (0.0, 0.0), 1.5, "covariate shift source: x ~ N(0, 1.5^2 I)"
  )


@register_domain("blobs_shift", "covariate shift target: N((1.5, 1), 0.75^2 I), same p(y|x)")
def build_blobs_shift(*, seed: int = 0, n: int = 500, dim: int = 2) -> Domain:
  """Covariate-shift target domain (same labelling rule), ``x``: ``[n, dim]``."""
  return _blobs(
    "blobs_shift",
    201,
    seed,
    n,
    dim,
    (1.5, 1.0),
    0.75,
    "covariate shift target: x ~ N((1.5, 1), 0.75^2 I)",
  )
