"""Newer T5X checkpoints, written and read with orbax-checkpoint.

T5X saves its train state `{"target": params, "state": optimizer state}` as an Orbax PyTree
item (`checkpoint_<step>/state/` holding `_METADATA`, or `_METADATA` beside `checkpoint`
in older Orbax versions). Only the `target` subtree (or `params`, for plain Flax trees) is
restored; Orbax reads each device's slice itself when shardings are given.

`write_checkpoint` writes what T5X's Orbax checkpointer writes (t5x/checkpoints.py,
OrbaxCheckpointManagerInterface): an Orbax CheckpointManager over the model dir with step
prefix `checkpoint`, one item `state` saved by a PyTree handler with OCDBT, holding
`{"target": params, "state": {"step": step}}`: the state T5X restores for inference
(infer.py and eval.py build no optimizer; `InferenceState.state_dict()`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from invscale_jax.checkpoints import layout
from invscale_jax.checkpoints.errors import CheckpointError, describe

_TARGET_KEYS = ("target", "params")
_STEP_PREFIX = "checkpoint"  # T5X's checkpoint_<step>


def target_metadata(located: layout.Located) -> tuple[str, dict[layout.Key, Any]]:
  """The name of the params subtree and the Orbax metadata of each of its arrays."""
  try:
    metadata = ocp.PyTreeCheckpointer().metadata(located.item_dir).item_metadata
  except Exception as e:  # Orbax raises many types; none may escape without the path
    raise CheckpointError(located.path, f"cannot read Orbax metadata: {describe(e)}") from e
  if metadata is None:  # what Orbax returns for a corrupt or unreadable _METADATA
    raise CheckpointError(located.path, f"corrupt Orbax metadata in {located.item_dir}")
  tree = metadata.tree
  for top in _TARGET_KEYS:
    if isinstance(tree.get(top), Mapping):
      return top, layout.flatten(tree[top])
  raise CheckpointError(located.path, f"Orbax tree has no {' or '.join(_TARGET_KEYS)} "
                        f"subtree (top-level keys: {sorted(tree)})")


def restore(located: layout.Located, top: str, metadata: Mapping[layout.Key, Any],
            dtype: np.dtype | None,
            shardings: Mapping[layout.Key, jax.sharding.Sharding] | None
            ) -> dict[layout.Key, Any]:
  """Reads the arrays of `metadata`: numpy arrays, or jax.Arrays placed by `shardings`."""

  def restore_args(key: layout.Key) -> ocp.RestoreArgs:
    if shardings is None:
      return ocp.RestoreArgs(restore_type=np.ndarray, dtype=dtype)
    return ocp.ArrayRestoreArgs(sharding=shardings[key], dtype=dtype,
                                global_shape=tuple(metadata[key].shape))

  args = ocp.args.PyTreeRestore(
      item={top: layout.unflatten(metadata)},
      restore_args={top: layout.unflatten({key: restore_args(key) for key in metadata})},
      partial_restore=True)
  try:
    restored = ocp.PyTreeCheckpointer().restore(located.item_dir, args=args)
  except Exception as e:  # Orbax and tensorstore errors of many types
    raise CheckpointError(located.path, f"cannot restore Orbax checkpoint: {describe(e)}") from e
  return layout.flatten(restored[top])


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
