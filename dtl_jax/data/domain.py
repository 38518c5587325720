"""The uniform domain representation and the registry of bundled domains.

Every data source in :mod:`dtl_jax.data` ends up either as an in-memory
:class:`Domain` (bundled domains, small TFDS datasets) or as a lazily decoded
:class:`~dtl_jax.data.sources.Source` (image folders, large TFDS datasets). Both are
consumed by :class:`~dtl_jax.data.sampler.PairSampler`.

Conventions of a :class:`Domain`:

* images are NHWC ``float32`` in ``[0, 1]`` (``x_train``: ``[n_train, H, W, C]``);
  tabular domains (``moons``, ``blobs``) are ``[n, d]`` ``float32``;
* labels are ``int32`` in ``[0, num_classes)``;
* all arrays are read-only (domains are cached and shared).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Domain:
  """One domain: fixed train / test splits held in memory.

  Attributes:
    name: registry name (``"digits_m"``) or a descriptive name.
    x_train: ``[n_train, H, W, C]`` float32 in [0, 1] (or ``[n_train, d]`` features).
    y_train: ``[n_train]`` int32 labels.
    x_test: ``[n_test, ...]`` like ``x_train``.
    y_test: ``[n_test]`` int32 labels.
    num_classes: number of classes; labels lie in ``[0, num_classes)``.
    class_names: one name per class.
    description: what the domain is and which shift it represents.
    ids_train: ``[n_train]`` int64 identifiers of the underlying raw examples
      (for the digits domains: indices into scikit-learn's 1,797 ``load_digits``
      images), or ``None``. Two domains built from the same raw pool share an
      image iff they share an id.
    ids_test: ``[n_test]`` like ``ids_train``.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  description: str = ""
  ids_train: np.ndarray | None = None
  ids_test: np.ndarray | None = None

  def __post_init__(self):
    for split in ("train", "test"):
      x = getattr(self, f"x_{split}")
      y = getattr(self, f"y_{split}")
      if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"Domain {self.name!r}: x_{split} has {x.shape[0]} rows but y_{split} "
            f"has {y.shape[0]}; they must match.")
      if y.ndim != 1:
        raise ValueError(f"Domain {self.name!r}: y_{split} must be [n], got {y.shape}.")
      if y.size and (y.min() < 0 or y.max() >= self.num_classes):
        raise ValueError(
            f"Domain {self.name!r}: y_{split} must lie in [0, {self.num_classes}), got "
            f"[{y.min()}, {y.max()}].")
    if len(self.class_names) != self.num_classes:
      raise ValueError(
          f"Domain {self.name!r}: class_names has {len(self.class_names)} entries, "
          f"expected num_classes={self.num_classes}.")
    for field in ("x_train", "y_train", "x_test", "y_test", "ids_train", "ids_test"):
      arr = getattr(self, field)
      if arr is not None:
        arr.setflags(write=False)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one example, e.g. ``(28, 28, 3)`` or ``(2,)``."""
    return tuple(self.x_train.shape[1:])

  @property
  def num_train(self) -> int:
    return int(self.x_train.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.x_test.shape[0])

  def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(x, y)`` of ``split`` in ``{"train", "test"}``."""
    if split not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

  def __repr__(self) -> str:
    return (f"Domain(name={self.name!r}, train={self.x_train.shape}, "
            f"test={self.x_test.shape}, num_classes={self.num_classes})")


_BUILDERS: dict[str, Callable[..., Domain]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_domain(name: str, description: str = ""):
  """Decorator registering ``builder(*, seed, **options) -> Domain`` under ``name``."""

  def decorator(builder):
    if name in _BUILDERS:
      raise ValueError(f"domain {name!r} is already registered.")
    _BUILDERS[name] = builder
    _DESCRIPTIONS[name] = description
    return builder

  return decorator


def available_domains() -> dict[str, str]:
  """Registered bundled domains: ``{name: one-line description}``."""
  _ensure_builtin()
  return dict(sorted(_DESCRIPTIONS.items()))


def _ensure_builtin():
  # The builders live in modules that import nothing heavy at module level.
  from dtl_jax.data import digits, toy  # noqa: F401  pylint: disable=g-import-not-at-top


def _options_of(builder) -> list[str]:
  return [p.name for p in inspect.signature(builder).parameters.values()
          if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "seed"]


def load_domain(name: str, *, seed: int = 0, **options: Any) -> Domain:
  """Builds (or returns the cached) bundled domain ``name``.

  Needs no network: every bundled domain is generated from data that installed
  packages ship (scikit-learn's digits and sample photos) or from closed-form
  generators. Results are cached in memory, keyed by all arguments; the returned
  arrays are read-only.

  Args:
    name: one of :func:`available_domains` (``digits``, ``digits_m``, ``digits_rot``,
      ``digits_inv``, ``digits_thick``, ``digits_noisy``, ``moons``, ``moons_rot``,
      ``blobs``, ``blobs_shift``).
    seed: fixes the train / test split and every random transformation. Same seed,
      identical arrays.
    **options: domain options, e.g. ``size=32, channels=3`` for digits domains,
      ``angle=35.0`` for ``moons_rot``.

  Returns:
    the :class:`Domain`.

  Raises:
    ValueError: unknown ``name`` (the message lists the available ones) or an option
      the domain does not accept.
  """
  _ensure_builtin()
  if name not in _BUILDERS:
    raise ValueError(
        f"unknown domain name {name!r}; available: {', '.join(sorted(_BUILDERS))}. "
        "For real datasets use dtl_jax.data.load_tfds or dtl_jax.data.ImageFolder.")
  builder = _BUILDERS[name]
  allowed = _options_of(builder)
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(
        f"domain {name!r} does not accept option(s) {unknown}; accepted: {allowed}.")
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
  frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                        for k, v in options.items()))
  return _cached_build(name, int(seed), frozen)


@functools.lru_cache(maxsize=64)
def _cached_build(name: str, seed: int, options: tuple) -> Domain:
  return _BUILDERS[name](seed=seed, **dict(options))


def load_pair(source: str, target: str, *, seed: int = 0, **options: Any
              ) -> tuple[Domain, Domain]:
  """Loads a source / target pair of bundled domains with the same input shape.

  * Two digits domains get disjoint halves of scikit-learn's digits: the source draws
    from pool ``"a"`` and the target from pool ``"b"`` (about 900 raw images each; pass
    ``pool=...`` to override), and a common channel count (3 if either is colour,
    unless ``channels`` is given).
  * Each option is passed to the domains that accept it (``angle`` only to
    ``moons_rot``); an option neither accepts is an error.

  Args:
    source: source domain name.
    target: target domain name.
    seed: as in :func:`load_domain` (both domains).
    **options: domain options.

  Returns:
    ``(source_domain, target_domain)``.

  Raises:
    ValueError: unknown names or options, ``source == target``, or domains whose
      class counts or input shapes differ.
  """
  _ensure_builtin()
  from dtl_jax.data import digits  # pylint: disable=g-import-not-at-top
  for n in (source, target):
    if n not in _BUILDERS:
      raise ValueError(f"unknown domain name {n!r}; available: {', '.join(sorted(_BUILDERS))}.")
  if source == target:
    raise ValueError(f"source and target must differ, both are {source!r}.")
  per = {source: {}, target: {}}
  both_digits = source in digits.DIGITS_DOMAINS and target in digits.DIGITS_DOMAINS
  if both_digits:
    per[source]["pool"], per[target]["pool"] = "a", "b"
    if "channels" not in options:
      colour = "digits_m" in (source, target)
      per[source]["channels"] = per[target]["channels"] = 3 if colour else 1
  for k, v in options.items():
    takers = [n for n in (source, target) if k in _options_of(_BUILDERS[n])]
    if not takers:
      raise ValueError(f"option {k!r} is accepted by neither {source!r} nor {target!r}.")
    for n in takers:
      per[n][k] = v
  src = load_domain(source, seed=seed, **per[source])
  tgt = load_domain(target, seed=seed, **per[target])
  if src.num_classes != tgt.num_classes:
    raise ValueError(f"{source!r} has {src.num_classes} classes but {target!r} has "
                     f"{tgt.num_classes}; a pair must share the label space.")
  if src.input_shape != tgt.input_shape:
    raise ValueError(f"input shapes differ: {source!r} {src.input_shape} vs {target!r} "
                     f"{tgt.input_shape}; pass channels=/size= to match them.")
  return src, tgt
