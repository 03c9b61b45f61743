"""The partitioner: a device mesh with `data` and `model` axes, T5X-style logical-axis rules,
and helpers to put host data onto the mesh and bring results back.

Parameters are sharded by their logical axis names (`Model.param_axes()`): `vocab`, `mlp`,
`heads` and `joined_kv` go over `model`, the rest is replicated; batches go over `data`.
Works unchanged on one CPU, on 8 forced CPU devices, and across hosts (every host holds the
same full batch on its side and contributes the slices its devices own).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
MODEL = "model"

LOGICAL_AXIS_RULES = (
    ("batch", DATA),
    ("vocab", MODEL),
    ("mlp", MODEL),
    ("heads", MODEL),
    ("joined_kv", MODEL),
    ("embed", None),
    ("kv", None),
    ("relpos_buckets", None),
    ("layers", None),
    ("length", None),
)


def make_mesh(model_parallel: int = 1) -> Mesh:
  """All devices (of all hosts) as a (data, model) mesh with `model_parallel` model shards."""
  devices = jax.devices()
  if len(devices) % model_parallel:
    raise ValueError(f"model_parallel: {model_parallel} does not divide {len(devices)} devices")
  grid = np.asarray(devices).reshape(len(devices) // model_parallel, model_parallel)
  return Mesh(grid, (DATA, MODEL))


def param_shardings(param_axes: Any, mesh: Mesh) -> Any:
  """NamedShardings for a tree of logical axis-name tuples."""
  def one(axes: tuple[str, ...]) -> NamedSharding:
    return nn.logical_to_mesh_sharding(P(*axes), mesh, LOGICAL_AXIS_RULES)
  return jax.tree_util.tree_map(one, param_axes, is_leaf=lambda x: isinstance(x, tuple))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def to_global(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global jax.Array from a host-local full copy (each process fills its own shards)."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(array: jax.Array) -> np.ndarray:
  """The full value of a (possibly multi-host) array on every host."""
  if jax.process_count() == 1:
    return np.asarray(array)
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))
