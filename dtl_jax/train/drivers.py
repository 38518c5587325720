"""Drivers: how one step body runs on the devices (``jit``, ``pmap``, ``shard_map``, ``sharded``).

The step body (:func:`dtl_jax.train.make_train_step`) is written once, with an optional
device ``axis_name``. A driver compiles it for a placement and says how batches and the
state travel between host and devices:

================  ===========  =======================================================
driver            axis_name    what runs
================  ===========  =======================================================
``"jit"``         ``None``     ``jax.jit`` on one device
``"pmap"``        ``"batch"``  ``jax.pmap`` over the local devices (what the user asked
                               for; in maintenance mode since JAX 0.8); state
                               replicated with a leading device axis
``"shard_map"``   ``"batch"``  ``jax.shard_map`` over a 1-D mesh of all devices; the
                               same body as ``pmap``: explicit ``all_gather`` /
                               ``pmean`` over the axis
``"sharded"``     ``None``     ``jax.jit`` over a ``Mesh`` with ``NamedSharding``
                               (what JAX recommends for new code): the batch is split
                               along a ``"data"`` axis, the state replicated, and XLA
                               places the collectives of the global-batch body
================  ===========  =======================================================

With an axis name, the model's BatchNorm layers must average their statistics over the
same axis (``models.build(..., bn_axis_name=driver_axis_name(name))``); the ``sharded``
driver needs none: its body sees the global batch. Every driver gives the same loss,
parameters and BatchNorm statistics as ``jit`` on the concatenated batch (tested on 8
CPU devices).

Multi-process (``jax.process_count() > 1``, every driver but ``jit``): each process
reads only its rows ``[p B/P, (p+1) B/P)`` of every global batch
(:class:`dtl_jax.data.pipeline.TrainBatches`) and ``put_batch`` takes that slice: ``pmap``
splits it over the local devices; ``shard_map`` and ``sharded`` assemble the global
batch from the processes' slices (``jax.make_array_from_process_local_data``; the mesh
orders devices by process, so the global rows keep their order). The state is
replicated on every device of every process; ``to_host`` returns this process's copy
(a single-device array per leaf), which evaluation reads and
:class:`~dtl_jax.train.checkpoint.Checkpointer` assembles into global arrays to save.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dtl_jax import xla_options
from dtl_jax.train import step as step_lib

DRIVERS = ("jit", "pmap", "shard_map", "sharded")
AXIS = "batch"
DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Driver:
  """A compiled step and the transfers around it.

  Attributes:
    name: one of :data:`DRIVERS`.
    step: ``(device_state, device_batch) -> (device_state, metrics)``; the state
      buffers are donated.
    put_state: host :class:`~dtl_jax.train.TrainState` -> its device placement.
    put_batch: this process's rows of the global batch ``{"x_s", "y_s", "x_t"[,
      "w_s"]}`` (numpy; all of it with one process) -> its device placement.
    to_host: device state -> one :class:`~dtl_jax.train.TrainState` (for evaluation
      and checkpoints).
  """

  name: str
  step: Callable[[Any, Any], tuple[Any, dict]]
  put_state: Callable[[Any], Any]
  put_batch: Callable[[Mapping[str, np.ndarray]], Any]
  to_host: Callable[[Any], Any]


def driver_axis_name(name: str) -> str | None:
  """The device axis the step body and the model's BatchNorm use under driver ``name``."""
  if name not in DRIVERS:
    raise ValueError(f"train.driver must be one of {', '.join(map(repr, DRIVERS))}, got {name!r}")
  return AXIS if name in ("pmap", "shard_map") else None


def process_slice(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """This process's rows ``[p B/P, (p+1) B/P)`` of a global batch (the rows
  :class:`dtl_jax.data.pipeline.TrainBatches` decodes in process ``p``)."""
  p, n = jax.process_index(), jax.process_count()
  if n == 1:
    return dict(batch)
  out = {}
  for k, v in batch.items():
    if v.shape[0] % n:
      raise ValueError(f"global batch {k!r} of {v.shape[0]} rows is not divisible by {n} processes")
    m = v.shape[0] // n
    out[k] = v[p * m : (p + 1) * m]
  return out


def make_driver(name: str, step_body: step_lib.StepFn) -> Driver:
  """Compiles ``step_body`` for driver ``name`` (see the module docstring).

  ``step_body`` must have been built with ``axis_name=driver_axis_name(name)``.
  """
  axis = driver_axis_name(name)
  del axis  # checked; the body carries it
  if name == "jit":
    return Driver(
      name,
      step_lib.jit_step(step_body),
      put_state=_identity,
      put_batch=_identity,
      to_host=_identity,
    )
  if name == "pmap":
    n_dev = jax.local_device_count()
    return Driver(
      name,
      step_lib.pmap_step(step_body, axis_name=AXIS),
      put_state=step_lib.replicate,
      put_batch=lambda b: step_lib.shard_batch_for_pmap(b, n_dev),
      to_host=step_lib.unreplicate,
    )
  axis_name = AXIS if name == "shard_map" else DATA_AXIS
  mesh = Mesh(np.asarray(jax.devices()), (axis_name,))
  replicated = NamedSharding(mesh, P())
  split = NamedSharding(mesh, P(axis_name))
  if name == "shard_map":
    compiled = step_lib.shard_map_step(step_body, mesh, axis_name=AXIS)
  else:
    compiled = jax.jit(
      step_body,
      in_shardings=(replicated, split),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,),
      compiler_options=xla_options.step_compiler_options(),
    )
  if jax.process_count() == 1:
    return Driver(
      name,
      compiled,
      put_state=lambda s: jax.device_put(s, replicated),
      put_batch=lambda b: {k: jax.device_put(v, split) for k, v in b.items()},
      to_host=_identity,
    )
  return Driver(
    name,
    compiled,
    put_state=lambda s: _replicate_global(s, replicated),
    put_batch=lambda b: {
      k: jax.make_array_from_process_local_data(split, np.asarray(v)) for k, v in b.items()
    },
    to_host=_local_copy,
  )


def _identity(x: Any) -> Any:
  return x


def _is_key(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _replicate_global(tree: Any, sharding: NamedSharding) -> Any:
  """Host-local leaves, equal on every process -> global arrays replicated by
  ``sharding`` over the devices of all processes (PRNG keys through their key data)."""

  def put(x: Any) -> Any:
    if _is_key(x):
      data = put(jax.random.key_data(x))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  return jax.tree.map(put, tree)


def _local_copy(tree: Any) -> Any:
  """This process's copy of a replicated global state (one device's shard per leaf)."""
  return jax.tree.map(lambda x: x.addressable_data(0), tree)
