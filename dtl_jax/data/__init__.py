"""Data: bundled offline domains, TFDS, image folders, samplers.

* :func:`load_domain` / :func:`load_pair` -- bundled offline domains (``digits``,
  ``digits_m``, ``digits_rot``, ``digits_inv``, ``digits_thick``, ``digits_noisy``,
  the real ``mnist``, ``mnist_m`` and ``uci_digits``, ``moons``, ``moons_rot``, ``blobs``,
  ``blobs_shift``) and real datasets by name
  (``folder:<path>``, ``tfds:<name>``) as :class:`Domain` objects. Builders register
  themselves (:func:`register_domain`, :func:`register_prefix`).
* :func:`load_tfds` / :class:`TFDSSource` -- TFDS through ``tfds.data_source``
  (prepared ``data_dir``, no TensorFlow).
* :class:`ImageFolder` / :class:`ImageList` -- ``root/<class>/<image>`` trees and TLlib
  image-list files, decoded with PIL; :mod:`dtl_jax.data.transforms` for TLlib-style
  preprocessing.
* :class:`PairSampler` -- infinite, shuffled, resumable source / target batches for
  one device, ``pmap`` (``[devices, per_device, ...]``) or ``jit`` (``NamedSharding``),
  with background :class:`Prefetcher`; :func:`eval_batches` for evaluation.

Importing this package is light (NumPy only): scikit-learn is never needed at import
time, PIL and tensorflow_datasets are imported on first use, TensorFlow never.
"""

# The builders register themselves with the registry in dtl_jax.data.domain.
from dtl_jax.data import digits, external, mnist, toy, transforms  # noqa: F401  (registration)
from dtl_jax.data.domain import (
  Domain,
  available_domains,
  check_domain_name,
  domain_options,
  load_domain,
  load_pair,
  register_domain,
  register_prefix,
)
from dtl_jax.data.folder import CorruptImageError, ImageFolder, ImageList, decode_image
from dtl_jax.data.prefetch import Prefetcher, prefetch
from dtl_jax.data.sampler import Batch, PairSampler, data_sharding, eval_batches
from dtl_jax.data.sources import ArraySource, Source, as_source, check_same_classes
from dtl_jax.data.tfds_source import TFDS_DATASETS, TFDSSource, load_tfds

__all__ = [
  "ArraySource",
  "Batch",
  "CorruptImageError",
  "Domain",
  "ImageFolder",
  "ImageList",
  "PairSampler",
  "Prefetcher",
  "Source",
  "TFDSSource",
  "TFDS_DATASETS",
  "as_source",
  "available_domains",
  "check_domain_name",
  "check_same_classes",
  "domain_options",
  "data_sharding",
  "decode_image",
  "eval_batches",
  "load_domain",
  "load_pair",
  "load_tfds",
  "prefetch",
  "register_domain",
  "register_prefix",
  "transforms",
]
