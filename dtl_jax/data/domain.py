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
from collections.abc import Callable
from typing import Any

import numpy as np


def check_labels(domain: Any, *, kind: str) -> None:
  """The checks every domain type runs at construction: each split's rows and labels
  match, labels are ``[n]`` in ``[0, num_classes)``, one class name per class.

  Raises:
    ValueError: naming the ``kind`` (``"Domain"``, ``"StreamingDomain"``), the domain and
      the split.
  """
  for split in ("train", "test"):
    x, y = getattr(domain, f"x_{split}"), getattr(domain, f"y_{split}")
    if len(x) != y.shape[0]:
      raise ValueError(
        f"{kind} {domain.name!r}: x_{split} has {len(x)} rows but y_{split} "
        f"has {y.shape[0]}; they must match."
      )
    if y.ndim != 1:
      raise ValueError(f"{kind} {domain.name!r}: y_{split} must be [n], got {y.shape}.")
    if y.size and (y.min() < 0 or y.max() >= domain.num_classes):
      raise ValueError(
        f"{kind} {domain.name!r}: y_{split} must lie in [0, {domain.num_classes}), got "
        f"[{y.min()}, {y.max()}]."
      )
  if len(domain.class_names) != domain.num_classes:
    raise ValueError(
      f"{kind} {domain.name!r}: class_names has {len(domain.class_names)} entries, "
      f"expected num_classes={domain.num_classes}."
    )


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
    check_labels(self, kind="Domain")
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
    return (
      f"Domain(name={self.name!r}, train={self.x_train.shape}, "
      f"test={self.x_test.shape}, num_classes={self.num_classes})"
    )


PairOptions = Callable[[str, str], "tuple[dict[str, Any], dict[str, Any]]"]


@dataclasses.dataclass(frozen=True)
class _Entry:
  builder: Callable[..., Domain]
  description: str
  pair_options: PairOptions | None


_REGISTRY: dict[str, _Entry] = {}
_PREFIXES: dict[str, tuple[Callable[[str], Callable[..., Domain]], str]] = {}


def register_domain(name: str, description: str = "", *, pair_options: PairOptions | None = None):
  """Decorator registering ``builder(*, seed, **options) -> Domain`` under ``name``.

  Builders register themselves (the modules that define them call this when they are
  imported); the registry imports no builder.

  Args:
    name: the registry name.
    description: one line: what the domain is and which shift it represents.
    pair_options: ``(source_name, target_name) -> (source_options, target_options)``,
      the defaults :func:`load_pair` gives two domains of the same family (both must
      have registered the same function), e.g. disjoint raw-image pools.
  """

  def decorator(builder):
    if name in _REGISTRY:
      raise ValueError(f"domain {name!r} is already registered.")
    _REGISTRY[name] = _Entry(builder, description, pair_options)
    return builder

  return decorator


def register_prefix(
  prefix: str, description: str, factory: Callable[[str], Callable[..., Domain]]
) -> None:
  """Registers a family of names ``<prefix><rest>`` (e.g. ``folder:<path>``).

  ``factory(rest)`` returns the builder of one such name; it may raise ``ValueError``
  (e.g. a missing folder), which :func:`check_domain_name` reports.
  """
  if prefix in _PREFIXES:
    raise ValueError(f"domain prefix {prefix!r} is already registered.")
  _PREFIXES[prefix] = (factory, description)


def available_domains() -> dict[str, str]:
  """Registered domains ``{name: one-line description}``, and the name prefixes
  (``"folder:<path>"``, ``"tfds:<name>"``)."""
  out = {name: e.description for name, e in _REGISTRY.items()}
  out.update({f"{p}<{'path' if p == 'folder:' else 'name'}>": d for p, (_, d) in _PREFIXES.items()})
  return dict(sorted(out.items()))


def _entry(name: str) -> _Entry:
  if name in _REGISTRY:
    return _REGISTRY[name]
  for prefix, (factory, description) in _PREFIXES.items():
    if isinstance(name, str) and name.startswith(prefix):
      builder = factory(name[len(prefix) :])
      _REGISTRY[name] = _Entry(builder, f"{description}: {name[len(prefix) :]}", None)
      return _REGISTRY[name]
  known = ", ".join(sorted(_REGISTRY)) or "(none registered)"
  prefixes = " or ".join(f"{p}..." for p in _PREFIXES)
  raise ValueError(
    f"unknown domain name {name!r}; available: {known}"
    + (f"; or {prefixes}" if prefixes else "")
    + "."
  )


def check_domain_name(name: str) -> None:
  """Raises ``ValueError`` (listing the known names) unless ``name`` can be loaded."""
  _entry(name)


def domain_options(name: str) -> list[str]:
  """The options (keyword arguments besides ``seed``) domain ``name`` accepts."""
  return [
    p.name
    for p in inspect.signature(_entry(name).builder).parameters.values()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "seed"
  ]


def load_domain(name: str, *, seed: int = 0, **options: Any) -> Domain:
  """Builds (or returns the cached) domain ``name``.

  Bundled domains need no network: each is generated from data that installed
  packages ship (scikit-learn's digits and sample photos) or from closed-form
  generators. Results are cached in memory, keyed by all arguments; the returned
  arrays are read-only.

  Args:
    name: one of :func:`available_domains` (``digits``, ``digits_m``, ``digits_rot``,
      ``digits_inv``, ``digits_thick``, ``digits_noisy``, ``moons``, ``moons_rot``,
      ``blobs``, ``blobs_shift``), ``folder:<path>`` or ``tfds:<name>``.
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
  allowed = domain_options(name)
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(f"domain {name!r} does not accept option(s) {unknown}; accepted: {allowed}.")
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
  frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
  return _cached_build(name, int(seed), frozen)


@functools.lru_cache(maxsize=64)
def _cached_build(name: str, seed: int, options: tuple) -> Domain:
  return _REGISTRY[name].builder(seed=seed, **dict(options))


def with_channels(domain: Domain, channels: int) -> Domain:
  """``domain`` with grayscale images repeated to ``channels`` (1 -> 3)."""
  c = domain.input_shape[-1] if len(domain.input_shape) == 3 else None
  if c == channels:
    return domain
  if c != 1 or len(domain.input_shape) != 3:
    raise ValueError(
      f"cannot turn the {domain.input_shape} inputs of {domain.name!r} into "
      f"{channels} channels (only 1 -> {channels} by repetition)."
    )
  return dataclasses.replace(
    domain,
    x_train=np.repeat(domain.x_train, channels, axis=-1),
    x_test=np.repeat(domain.x_test, channels, axis=-1),
  )


def load_pair(
  source: str, target: str, *, seed: int = 0, image_size: int | None = None, **options: Any
) -> tuple[Domain, Domain]:
  """Loads a source / target pair of domains with the same input shape.

  * Two domains of one family get that family's pair defaults (digits: disjoint halves
    of scikit-learn's digits, the source from pool ``"a"`` and the target from pool
    ``"b"``, about 900 raw images each; and a common channel count).
  * ``image_size`` goes to every domain that takes a ``size`` (image domains); tabular
    domains ignore it.
  * Each other option goes to the domains that accept it (``angle`` only to
    ``moons_rot``); an option neither accepts is an error.
  * A grayscale domain paired with a colour one has its channel repeated.

  Args:
    source: source domain name.
    target: target domain name (different from ``source``).
    seed: as in :func:`load_domain` (both domains).
    image_size: height = width of image domains; ``None`` or 0: their own size.
    **options: domain options.

  Returns:
    ``(source_domain, target_domain)``.

  Raises:
    ValueError: unknown names or options, ``source == target``, or domains whose
      class counts or input shapes differ.
  """
  entries = {n: _entry(n) for n in (source, target)}
  if source == target:
    raise ValueError(f"source and target must differ, both are {source!r}.")
  per: dict[str, dict[str, Any]] = {source: {}, target: {}}
  hook = entries[source].pair_options
  if hook is not None and hook is entries[target].pair_options:
    per[source], per[target] = (dict(d) for d in hook(source, target))
  for k, v in options.items():
    takers = [n for n in (source, target) if k in domain_options(n)]
    if not takers:
      raise ValueError(f"option {k!r} is accepted by neither {source!r} nor {target!r}.")
    for n in takers:
      per[n][k] = v
  if image_size:
    for n in (source, target):
      if "size" in domain_options(n):
        per[n]["size"] = int(image_size)
  src = load_domain(source, seed=seed, **per[source])
  tgt = load_domain(target, seed=seed, **per[target])
  if src.num_classes != tgt.num_classes:
    raise ValueError(
      f"{source!r} has {src.num_classes} classes but {target!r} has "
      f"{tgt.num_classes}; a pair must share the label space."
    )
  if src.class_names != tgt.class_names:
    only_s = sorted(set(src.class_names) - set(tgt.class_names))
    only_t = sorted(set(tgt.class_names) - set(src.class_names))
    raise ValueError(
      f"the class lists of {source!r} and {target!r} differ (only in the "
      f"source: {only_s[:10]}; only in the target: {only_t[:10]}); a pair must "
      "share its classes, in the same order."
    )
  if len(src.input_shape) == 3 and len(tgt.input_shape) == 3:
    channels = max(src.input_shape[-1], tgt.input_shape[-1])
    src, tgt = with_channels(src, channels), with_channels(tgt, channels)
  if src.input_shape != tgt.input_shape:
    raise ValueError(
      f"input shapes differ: {source!r} {src.input_shape} vs {target!r} "
      f"{tgt.input_shape}; set the same image size for both."
    )
  return src, tgt
