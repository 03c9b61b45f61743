"""Reading T5X checkpoints (legacy or Orbax, scanned layers or not) into parameter trees,
and counting params."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from invscale_jax import checkpoint_layout as layout
from invscale_jax.checkpoints import legacy, orbax_io, scanned
from invscale_jax.checkpoint_errors import CheckpointError

PathLike = str | os.PathLike[str]
Shardings = Mapping[layout.Key, jax.sharding.Sharding]


def _check_expected(path: str, shapes: Mapping[layout.Key, tuple[int, ...]],
                    want: Mapping[layout.Key, tuple[int, ...]]) -> None:
  """Every expected parameter is present with its shape, and nothing else is."""
  problems = []
  for key, shape in want.items():
    name = layout.param_name(key)
    if key not in shapes:
      problems.append(f"missing parameter {name} (expected shape {shape})")
    elif shapes[key] != shape:
      problems.append(f"parameter {name} has shape {shapes[key]} in the checkpoint, "
                      f"expected {shape}")
  problems += [f"unexpected parameter {layout.param_name(key)} (shape {shapes[key]}) that "
               "the model does not have" for key in shapes if key not in want]
  if problems:
    more = len(problems) - 1
    raise CheckpointError(path, problems[0] + (f" (and {more} more)" if more else ""))


def _flat_shardings(path: str, shapes: Mapping[layout.Key, Any],
                    shardings: Mapping[str, Any]) -> Shardings:
  flat = layout.flatten(shardings)
  for key in shapes:
    if key not in flat:
      raise CheckpointError(path, f"no sharding given for parameter {layout.param_name(key)}")
  return flat


def _materialize(source: legacy.ArraySource, dtype: np.dtype | None,
                 sharding: jax.sharding.Sharding | None) -> np.ndarray | jax.Array:
  """Reads a whole parameter to host, or each addressable shard's slice to its device."""

  def read(index: tuple[slice, ...]) -> np.ndarray:
    array = source.read(index)
    return array if dtype is None else array.astype(dtype, copy=False)

  if sharding is None:
    return read(())
  slices: dict[tuple, np.ndarray] = {}  # replicated shards read their slice once

  def read_once(index: tuple[slice, ...]) -> np.ndarray:
    key = tuple((s.start, s.stop, s.step) for s in index)
    if key not in slices:
      slices[key] = read(index)
    return slices[key]

  return jax.make_array_from_callback(source.shape, sharding, read_once)


Opened = tuple[dict[layout.Key, tuple[int, ...]], Callable[[Shardings | None], dict]]


def _reader(sources: Mapping[layout.Key, legacy.ArraySource], dtype: np.dtype | None) -> Opened:
  shapes = {key: source.shape for key, source in sources.items()}
  return shapes, lambda shardings: {
      key: _materialize(source, dtype, None if shardings is None else shardings[key])
      for key, source in sources.items()}


def _sources(located: layout.Located) -> dict[layout.Key, legacy.ArraySource]:
  """Every target parameter of the checkpoint, from metadata only (no array data)."""
  if located.format == layout.ORBAX:
    return orbax_io.target_sources(located)
  return legacy.target_sources(located.path)


def _open(located: layout.Located, dtype: np.dtype | None) -> Opened:
  """Shapes of the target parameters (from metadata only) and a function reading them."""
  return _reader(_sources(located), dtype)


def _open_arranged(located: layout.Located, dtype: np.dtype | None,
                   placements: Mapping[layout.Key, scanned.Placement]) -> Opened:
  """`_open` for a scalable_t5 checkpoint: the expected parameters, each read from where
  it is placed; stored parameters no placement uses are kept, so they are reported as
  unexpected."""
  stored = _sources(located)
  used = {p.key for p in placements.values()}
  sources = {key: scanned.LayerSource(stored[p.key], p) for key, p in placements.items()}
  sources.update({key: source for key, source in stored.items() if key not in used})
  return _reader(sources, dtype)


def read_checkpoint(path: PathLike, *, dtype: Any = None, expected: Mapping[str, Any] | None = None,
                    shardings: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The target parameter tree of a T5X checkpoint (legacy msgpack+zarr, or Orbax).

  Args:
    path: a `checkpoint_<step>` directory, or a model directory (its latest step is read).
    dtype: cast every parameter to this dtype on restore (e.g. float32 from bfloat16).
    expected: a tree of `jax.ShapeDtypeStruct` (e.g. `jax.eval_shape(model.init, ...)
      ["params"]`): each must be in the checkpoint with that shape, and the checkpoint's
      target must hold nothing else. Optimizer state is never read. A scalable_t5
      checkpoint (scanned layers, attention kernels with head axes) is read into this
      per-layer tree (see `scanned`).
    shardings: a tree of `jax.sharding.Sharding` with the parameters' structure; each
      parameter becomes a `jax.Array` whose devices read only their own slice.

  Returns:
    Nested dicts of numpy arrays (no `shardings`) or of sharded `jax.Array`s.

  Raises:
    CheckpointError: a one-line message naming the checkpoint and the parameter.
  """
  located = layout.locate(path)
  dtype = None if dtype is None else jnp.dtype(dtype)
  shapes, load = _open(located, dtype)
  if expected is not None:
    want = {key: tuple(leaf.shape) for key, leaf in layout.flatten(expected).items()}
    placements = scanned.arrange(located.path, shapes, want)
    if placements is not None:
      shapes, load = _open_arranged(located, dtype, placements)
    _check_expected(located.path, shapes, want)
  if shardings is not None:
    shardings = _flat_shardings(located.path, shapes, shardings)
  return layout.unflatten(load(shardings))


def count_params(path: PathLike) -> int:
  """Total size of the target parameters, from metadata only (no array data is read)."""
  shapes, _ = _open(layout.locate(path), None)
  return sum(math.prod(shape) for shape in shapes.values())
