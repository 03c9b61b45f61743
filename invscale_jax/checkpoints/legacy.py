"""Legacy T5X checkpoints (format version 3): a msgpack tree plus one zarr array per param.

`checkpoint_<step>/checkpoint` holds, in flax's msgpack conventions,
`{"version": 3, "optimizer": {"target": <params>, "state": {"step", "param_states"}}}`.
A leaf of `target` is either an inline array (msgpack ext type 1: shape, dtype name, bytes)
or a tensorstore spec whose kvstore path names a zarr directory in the checkpoint.
Only `optimizer/target` is read; optimizer state is never touched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Any, Iterable, Mapping, Protocol

import jax.numpy as jnp
import msgpack
import numpy as np
from flax import serialization

from invscale_jax import storage
from invscale_jax import checkpoint_layout as layout
from invscale_jax.checkpoints import zarr_io
from invscale_jax.checkpoint_errors import CheckpointError, describe

VERSION = 3
_INLINE_ARRAY_CODES = (1, 3)  # flax msgpack ext types: ndarray, numpy scalar


class ArraySource(Protocol):
  """A stored parameter: its shape and dtype are known before any data is read."""

  shape: tuple[int, ...]
  dtype: np.dtype

  def read(self, index: tuple[slice, ...] = ()) -> np.ndarray:
    """The values at `index` (a tuple of slices; `()` reads everything)."""


@dataclasses.dataclass(frozen=True)
class InlineSource:
  """A parameter stored inline in the msgpack file."""

  array: np.ndarray

  @property
  def shape(self) -> tuple[int, ...]:
    return self.array.shape

  @property
  def dtype(self) -> np.dtype:
    return self.array.dtype

  def read(self, index: tuple[slice, ...] = ()) -> np.ndarray:
    return self.array[index]


def _is_ts_spec(node: Mapping[str, Any]) -> bool:
  return "driver" in node and ("kvstore" in node or "path" in node)


def _inline_array(checkpoint: str, name: str, packed: bytes) -> np.ndarray:
  """Decodes flax's inline array encoding: msgpack of (shape, dtype name, C-order bytes)."""
  try:
    shape, dtype_name, buffer = msgpack.unpackb(packed, raw=False)
  except (ValueError, TypeError) as e:
    raise CheckpointError(checkpoint, f"corrupt inline array {name}: {describe(e)}") from e
  dtype = zarr_io.parse_dtype(dtype_name)
  if dtype is None:
    raise CheckpointError(checkpoint, f"unknown dtype {dtype_name!r} of parameter {name}")
  try:
    return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()  # writable, like zarr reads
  except (ValueError, TypeError) as e:
    raise CheckpointError(checkpoint, f"corrupt inline array {name}: {describe(e)}") from e


def _source(checkpoint: str, key: layout.Key, leaf: Any) -> ArraySource:
  name = layout.param_name(key)
  if isinstance(leaf, msgpack.ExtType) and leaf.code in _INLINE_ARRAY_CODES:
    return InlineSource(_inline_array(checkpoint, name, leaf.data))
  if isinstance(leaf, Mapping):
    return zarr_io.zarr_source(checkpoint, name, leaf)
  raise CheckpointError(checkpoint, f"parameter {name}: unsupported msgpack leaf "
                        f"{type(leaf).__name__}")


def _read_target(checkpoint: str) -> Mapping[str, Any]:
  """The `optimizer/target` tree of the msgpack file, leaves still undecoded."""
  file = storage.join(checkpoint, layout.MSGPACK_FILE)
  try:
    data = storage.read_bytes(file)
  except (OSError, ValueError) as e:
    raise CheckpointError(checkpoint, f"cannot read {describe(e)}") from e
  try:
    contents = msgpack.unpackb(data, raw=False)
  except ValueError as e:  # msgpack's decoding errors are all ValueErrors
    raise CheckpointError(checkpoint, f"corrupt or truncated msgpack file {file}: "
                          f"{describe(e)}") from e
  if not isinstance(contents, dict):
    raise CheckpointError(checkpoint, f"corrupt msgpack file {file}: not a T5X checkpoint")
  if contents.get("version") != VERSION:
    raise CheckpointError(checkpoint, f"unsupported T5X checkpoint version "
                          f"{contents.get('version')!r} (only {VERSION} is read)")
  optimizer = contents.get("optimizer")
  target = optimizer.get("target") if isinstance(optimizer, dict) else None
  if not isinstance(target, dict):
    raise CheckpointError(checkpoint, f"msgpack file {file} has no optimizer/target tree")
  return target


def target_sources(checkpoint: str) -> dict[layout.Key, ArraySource]:
  """Every target parameter of a legacy checkpoint, from metadata only (no array data)."""
  flat = layout.flatten(_read_target(checkpoint), is_leaf=_is_ts_spec)
  return {key: _source(checkpoint, key, leaf) for key, leaf in flat.items()}


def write_checkpoint(model_dir: str | os.PathLike[str],
                     params: Mapping[str, Any] | Iterable[tuple[layout.Key, Any]], *,
                     step: int = 0, dtype: Any = None,
                     max_chunk_bytes: int = zarr_io.DEFAULT_MAX_CHUNK_BYTES) -> str:
  """Writes `params` as a legacy T5X checkpoint `model_dir/checkpoint_<step>`; returns it.

  `params` is a nested dict, or an iterable of (name path, array) pairs that is consumed
  one array at a time (converters stream a large model through it without holding it).

  Every parameter becomes a gzip zarr array `target.<name>` with chunks of at most
  `max_chunk_bytes`, stored as `dtype` (e.g. bfloat16; None keeps each array's dtype).
  The checkpoint is written to `checkpoint_<step>.tmp-<time>` and renamed when complete,
  so an interrupted write never leaves a `checkpoint_<step>`. Single-process only.
  """
  final = layout.step_dir(os.path.abspath(os.fspath(model_dir)), step)
  if os.path.exists(final):
    raise CheckpointError(final, "already exists")
  tmp = f"{final}.tmp-{int(time.time())}"
  save_dtype = None if dtype is None else jnp.dtype(dtype)
  os.makedirs(tmp)
  try:
    specs = {}
    pairs = layout.flatten(params).items() if isinstance(params, Mapping) else params
    for key, value in pairs:
      key = tuple(key)
      array = np.asarray(value)
      if save_dtype is not None:
        array = array.astype(save_dtype, copy=False)
      specs[key] = zarr_io.write_array(tmp, layout.param_name(key), layout.array_dir_name(key),
                                       array, max_chunk_bytes)
    contents = {"version": VERSION, "optimizer": {
        "target": layout.unflatten(specs),
        "state": {"step": np.asarray(step, np.int32), "param_states": {}}}}
    with open(os.path.join(tmp, layout.MSGPACK_FILE), "wb") as f:
      f.write(serialization.msgpack_serialize(contents))
    os.rename(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return final
