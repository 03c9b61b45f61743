"""Writing T5X checkpoints in either layout T5X reads: legacy msgpack + zarr, or Orbax."""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from invscale_jax import checkpoint_layout as layout
from invscale_jax.checkpoints import legacy, orbax_io, zarr_io

FORMATS = (layout.LEGACY, layout.ORBAX)


def write_checkpoint(model_dir: str | os.PathLike[str],
                     params: Mapping[str, Any] | Iterable[tuple[layout.Key, Any]], *,
                     step: int = 0, dtype: Any = None, format: str = layout.LEGACY,  # pylint: disable=redefined-builtin
                     max_chunk_bytes: int = zarr_io.DEFAULT_MAX_CHUNK_BYTES) -> str:
  """Writes `params` as `model_dir/checkpoint_<step>` in `format` (see `legacy` and
  `orbax_io`); returns that directory. `params` is a nested dict or an iterable of
  (name path, array) pairs, which the legacy writer consumes one array at a time."""
  if format == layout.ORBAX:
    tree = params if isinstance(params, Mapping) else layout.unflatten(dict(params))
    return orbax_io.write_checkpoint(model_dir, tree, step=step, dtype=dtype)
  if format != layout.LEGACY:
    raise ValueError(f"checkpoint format: {format!r} is not one of {', '.join(FORMATS)}")
  return legacy.write_checkpoint(model_dir, params, step=step, dtype=dtype,
                                 max_chunk_bytes=max_chunk_bytes)
