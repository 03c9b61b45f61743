"""Newer T5X checkpoints: written with orbax-checkpoint, read with tensorstore directly.

T5X saves its train state `{"target": params, "state": optimizer state}` as an Orbax PyTree
item (`checkpoint_<step>/state/` holding `_METADATA`, or `_METADATA` beside `checkpoint`
in older Orbax versions). Only the `target` subtree (or `params`, for plain Flax trees) is
read.

The reader follows what orbax-checkpoint (0.12) writes, without Orbax's own path layer
(etils.epath, which with TensorFlow installed goes through tf.io.gfile: other credentials
and settings than tensorstore's, and no way to reach a GCS emulator), so a local and a
`gs://` checkpoint are read the same way. `_METADATA` is JSON, read through `storage`: it
lists every leaf by its key path and says how arrays are stored (`use_ocdbt`,
`use_zarr3`). The leaf at keys (k1, k2, ...) is the zarr (or zarr3) array named
`k1.k2...`, inside the OCDBT database of the item directory, or without OCDBT in the item
directory's subdirectory of that name. Each array's shape and dtype come from its own
zarr metadata (no data is read until asked), and each is a `zarr_io.ZarrSource`, so a
sharded restore reads only each device's slice, as for legacy checkpoints.

`write_checkpoint` writes what T5X's Orbax checkpointer writes (t5x/checkpoints.py,
OrbaxCheckpointManagerInterface): an Orbax CheckpointManager over the model dir with step
prefix `checkpoint`, one item `state` saved by a PyTree handler with OCDBT, holding
`{"target": params, "state": {"step": step}}`: the state T5X restores for inference
(infer.py and eval.py build no optimizer; `InferenceState.state_dict()`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from invscale_jax import storage
from invscale_jax import checkpoint_layout as layout
from invscale_jax.checkpoints import zarr_io
from invscale_jax.checkpoint_errors import CheckpointError, describe

_TARGET_KEYS = ("target", "params")
_STEP_PREFIX = "checkpoint"  # T5X's checkpoint_<step>
_METADATA = "_METADATA"
_ARRAY_TYPES = ("np.ndarray", "jax.Array", "scalar")


def _read_metadata(located: layout.Located
                   ) -> tuple[dict[layout.Key, dict[str, Any]], dict[str, Any]]:
  """The item's leaves ({key path: value metadata}) and its storage settings."""
  path = storage.join(located.item_dir, _METADATA)
  try:
    data = storage.read_bytes(path)
  except (OSError, ValueError) as e:
    raise CheckpointError(located.path, f"cannot read Orbax metadata: {describe(e)}") from e
  try:
    metadata = json.loads(data)
    leaves = {tuple(str(k["key"]) for k in leaf["key_metadata"]): dict(leaf["value_metadata"])
              for leaf in metadata["tree_metadata"].values()}
    if not all(key and "value_type" in value for key, value in leaves.items()):
      raise ValueError("a leaf without keys or value type")
  except (ValueError, KeyError, TypeError, AttributeError):
    raise CheckpointError(located.path, f"corrupt Orbax metadata in {located.item_dir}") from None
  return leaves, metadata


def _array_spec(located: layout.Located, name: str, metadata: Mapping[str, Any]) -> dict:
  """The tensorstore spec of the array `name` of the item, as Orbax stored it."""
  if metadata.get("use_ocdbt", True):
    base = storage.kvstore_spec(located.item_dir)
    base["path"] = base["path"].rstrip("/") + "/"
    kvstore = {"driver": "ocdbt", "base": base, "path": name + "/",
               "cache_pool": "cache_pool#ocdbt"}
  else:
    kvstore = storage.kvstore_spec(storage.join(located.item_dir, name))
  # Older Orbax versions leave out chunks equal to the fill value.
  fill = not metadata.get("store_array_data_equal_to_fill_value", False)
  return {"driver": "zarr3" if metadata.get("use_zarr3") else "zarr", "kvstore": kvstore,
          "fill_missing_data_reads": fill, "recheck_cached_data": False,
          "recheck_cached_metadata": False}


def target_sources(located: layout.Located) -> dict[layout.Key, zarr_io.ZarrSource]:
  """A source (with its shape and dtype; it reads any slice) for each array of the params
  subtree."""
  leaves, metadata = _read_metadata(located)
  tops = {key[0] for key in leaves}
  top = next((t for t in _TARGET_KEYS if any(len(k) > 1 and k[0] == t for k in leaves)), None)
  if top is None:
    raise CheckpointError(located.path, f"Orbax tree has no {' or '.join(_TARGET_KEYS)} "
                          f"subtree (top-level keys: {sorted(tops)})")
  arrays = {}
  for key, value in leaves.items():
    if key[0] != top or value.get("skip_deserialize"):  # skipped: empty dicts, None
      continue
    if value["value_type"] not in _ARRAY_TYPES:
      raise CheckpointError(located.path, f"parameter {layout.param_name(key[1:])} is not "
                            f"an array (Orbax value type {value['value_type']!r})")
    arrays[key[1:]] = _array_spec(located, ".".join(key), metadata)
  opening = {key: ts.open(spec, read=True, context=storage.CONTEXT)
             for key, spec in arrays.items()}  # all at once: one round trip, not one each
  sources = {}
  for key, future in opening.items():
    name = layout.param_name(key)
    try:
      store = future.result()
    except ValueError as e:
      raise CheckpointError(located.path, f"cannot open parameter {name}: {describe(e)}") from e
    sources[key] = zarr_io.ZarrSource(located.path, name, tuple(store.shape),
                                      np.dtype(store.dtype.numpy_dtype), arrays[key],
                                      assume_metadata=False, _store=store)
  return sources


def write_checkpoint(model_dir: str | os.PathLike[str], params: Mapping[str, Any], *,
                     step: int = 0, dtype: Any = None) -> str:
  """Writes `params` (a nested dict) as T5X's Orbax checkpointer does; returns the
  `model_dir/checkpoint_<step>` directory. Orbax writes to a temporary directory and
  renames it when complete. `dtype` (e.g. bfloat16) casts every array; None keeps them."""
  model_dir = os.path.abspath(os.fspath(model_dir))
  final = layout.step_dir(model_dir, step)
  if os.path.exists(final):
    raise CheckpointError(final, "already exists")
  cast = lambda x: np.asarray(x) if dtype is None else np.asarray(x).astype(dtype)
  state = {"target": jax.tree.map(cast, dict(params)), "state": {"step": np.int32(step)}}
  options = ocp.CheckpointManagerOptions(step_prefix=_STEP_PREFIX, create=True)
  manager = ocp.CheckpointManager(model_dir, options=options, item_handlers={
      layout.ORBAX_ITEM: ocp.PyTreeCheckpointHandler(use_ocdbt=True)})
  try:
    manager.save(step, args=ocp.args.Composite(**{layout.ORBAX_ITEM: ocp.args.PyTreeSave(state)}))
    manager.wait_until_finished()
  except Exception as e:  # Orbax and tensorstore errors of many types
    raise CheckpointError(final, f"cannot write Orbax checkpoint: {describe(e)}") from e
  finally:
    manager.close()
  return final
