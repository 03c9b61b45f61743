"""One parameter stored as a zarr v2 array (legacy T5X layout), through tensorstore.

Reads go through tensorstore with `fill_missing_data_reads` off, so a missing chunk file is
an error rather than zeros. When `.zarray` is missing, the metadata in the msgpack spec is
assumed (`assume_metadata`), as T5X's spec carries shape, chunks, compressor and dtype.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import ml_dtypes
import numpy as np
import tensorstore as ts

from invscale_jax import storage
from invscale_jax.checkpoint_errors import CheckpointError, describe

DEFAULT_MAX_CHUNK_BYTES = 64 * 2**20  # T5X's target chunk size
_ZARRAY = ".zarray"
MAX_CHUNK_BYTES = 1 << 31  # the largest chunk read: each is decompressed whole in memory
_NUMERIC = frozenset(np.dtype(name) for name in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128"))
_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def parse_dtype(name: Any) -> np.dtype | None:
  """The dtype named in zarr, tensorstore or numpy style ('<f4', 'float32', 'bfloat16')."""
  if name == "bfloat16":
    return _BFLOAT16
  if not isinstance(name, str) or not name:
    return None
  try:
    dtype = np.dtype(name).newbyteorder("=")
  except TypeError:
    return None
  return dtype if dtype in _NUMERIC else None


def choose_chunks(shape: tuple[int, ...], itemsize: int, max_bytes: int) -> list[int]:
  """Chunk shape of at most `max_bytes`: halves the largest dimension until it fits.

  Unlike T5X (which only uses divisors of the shape), edge chunks may be partial, so a
  prime-sized vocabulary does not force one-row chunks.
  """
  chunks = [max(1, size) for size in shape]
  while chunks and math.prod(chunks) * itemsize > max_bytes and max(chunks) > 1:
    largest = chunks.index(max(chunks))
    chunks[largest] = -(-chunks[largest] // 2)
  return chunks


def spec(path: str, dtype: np.dtype, shape: tuple[int, ...], chunks: list[int]) -> dict:
  """A tensorstore zarr spec as T5X writes it into the msgpack (`path` relative there)."""
  return {"driver": "zarr", "dtype": dtype.name, "kvstore": {"driver": "file", "path": path},
          "metadata": {"compressor": {"id": "gzip"}, "shape": list(shape), "chunks": chunks,
                       "dimension_separator": "."}}


def write_array(checkpoint: str, name: str, directory: str, array: np.ndarray,
                max_chunk_bytes: int) -> dict:
  """Writes `array` to `checkpoint/directory`; returns the spec to store in the msgpack."""
  if parse_dtype(array.dtype.name) is None:
    raise CheckpointError(checkpoint, f"parameter {name} has unsupported dtype {array.dtype}")
  relative = spec(directory, array.dtype, array.shape,
                  choose_chunks(array.shape, array.dtype.itemsize, max_chunk_bytes))
  absolute = {**relative, "kvstore": {"driver": "file",
                                      "path": os.path.join(checkpoint, directory)}}
  try:
    ts.open(absolute, create=True, context=storage.CONTEXT).result().write(array).result()
  except ValueError as e:  # tensorstore reports I/O and format errors as ValueError
    raise CheckpointError(checkpoint, f"cannot write parameter {name}: {describe(e)}") from e
  return relative


@dataclasses.dataclass
class ZarrSource:
  """A parameter stored as a zarr array; `read` reads one slice and nothing more."""

  checkpoint: str  # checkpoint directory, for messages
  name: str  # parameter name, e.g. "decoder/layers_0/mlp/wi_0/kernel"
  shape: tuple[int, ...]
  dtype: np.dtype
  open_spec: dict[str, Any]
  assume_metadata: bool  # `.zarray` is missing: take the metadata from the spec
  _store: ts.TensorStore | None = dataclasses.field(default=None, repr=False)

  def read(self, index: tuple[slice, ...] = ()) -> np.ndarray:
    try:
      if self._store is None:
        self._store = ts.open(self.open_spec, read=True, assume_metadata=self.assume_metadata,
                              context=storage.CONTEXT).result()
      return self._store[index].read().result()
    except ValueError as e:
      raise CheckpointError(self.checkpoint,
                            f"cannot read parameter {self.name}: {describe(e)}") from e


def _read_zarray(checkpoint: str, name: str, directory: str) -> dict | None:
  """The parsed `.zarray` of an array, None if absent; errors name the parameter."""
  file = storage.join(directory, _ZARRAY)
  try:
    data = storage.read_stamped(file).data
  except (OSError, ValueError) as e:
    raise CheckpointError(checkpoint, f"cannot read .zarray of parameter {name}: "
                          f"{describe(e)}") from e
  if data is None:
    return None
  try:
    metadata = json.loads(data)
  except ValueError as e:
    raise CheckpointError(checkpoint, f"corrupt .zarray of parameter {name}: {describe(e)}") from e
  if not isinstance(metadata, dict) or not {"shape", "chunks", "dtype"} <= metadata.keys():
    raise CheckpointError(checkpoint, f"corrupt .zarray of parameter {name}: "
                          "expected a JSON object with shape, chunks and dtype")
  return metadata


def _check_chunks(checkpoint: str, name: str, chunks: Any, shape: list[int],
                  dtype: np.dtype) -> None:
  """Chunks (when given) of the array's rank, each read whole in at most MAX_CHUNK_BYTES."""
  if chunks is None:
    return
  if not (isinstance(chunks, list) and len(chunks) == len(shape) and all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in chunks)):
    raise CheckpointError(checkpoint, f"parameter {name}: bad chunks {chunks!r} for shape "
                          f"{tuple(shape)}")
  if math.prod(chunks) * dtype.itemsize > MAX_CHUNK_BYTES:
    raise CheckpointError(checkpoint, f"parameter {name}: chunks {tuple(chunks)} of "
                          f"{math.prod(chunks) * dtype.itemsize} bytes, more than the "
                          f"{MAX_CHUNK_BYTES} read at once")


def zarr_source(checkpoint: str, name: str, ts_spec: Mapping[str, Any]) -> ZarrSource:
  """The array a msgpack tensorstore spec points to (its path is relative to `checkpoint`).

  Only the relative path of the spec's kvstore is used, so a checkpoint is read where it
  is now (a local directory or a gs:// URL), whichever kvstore driver wrote it.
  """
  kvstore = ts_spec.get("kvstore")
  relative = kvstore.get("path") if isinstance(kvstore, Mapping) else ts_spec.get("path")
  if not isinstance(relative, str):
    raise CheckpointError(checkpoint, f"parameter {name}: tensorstore spec has no path")
  if not storage.stays_inside(relative):  # read, it would not be in the run key
    raise CheckpointError(checkpoint, f"parameter {name}: its array {relative!r} is outside "
                          f"the checkpoint directory (only paths inside it are read)")
  directory = storage.join(checkpoint, relative.rstrip("/"))
  zarray = _read_zarray(checkpoint, name, directory)
  if zarray is None and not storage.is_dir(directory):
    raise CheckpointError(checkpoint, f"parameter {name}: missing array directory {relative}")
  spec_metadata = ts_spec.get("metadata")
  spec_metadata = dict(spec_metadata) if isinstance(spec_metadata, Mapping) else {}
  metadata = spec_metadata if zarray is None else zarray
  shape = metadata.get("shape")
  if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
    where = "msgpack spec (no .zarray)" if zarray is None else ".zarray"
    raise CheckpointError(checkpoint, f"parameter {name}: bad shape {shape!r} in {where}")
  if zarray is not None and spec_metadata.get("shape", shape) != shape:
    raise CheckpointError(checkpoint, f"parameter {name}: shape {tuple(shape)} in .zarray "
                          f"but {tuple(spec_metadata['shape'])} in the msgpack spec")
  dtype_name = metadata.get("dtype", ts_spec.get("dtype"))
  dtype = parse_dtype(dtype_name)
  if dtype is None:
    raise CheckpointError(checkpoint, f"unknown dtype {dtype_name!r} of parameter {name}")
  _check_chunks(checkpoint, name, metadata.get("chunks"), shape, dtype)
  open_spec = {"driver": "zarr", "kvstore": storage.kvstore_spec(directory),
               "fill_missing_data_reads": False}
  if zarray is None:
    open_spec.update(dtype=dtype.name, metadata=spec_metadata)
  return ZarrSource(checkpoint, name, tuple(shape), dtype, open_spec, zarray is None)
