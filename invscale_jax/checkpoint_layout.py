"""Parameter names, tree flattening and where checkpoints live (a local directory or a
`gs://` URL, read through `storage`).

Parameter trees are nested dicts keyed by T5X module names, without the `target` prefix.
Flattened, a parameter is a key tuple such as ("decoder", "layers_0", "mlp", "wi_0",
"kernel"); its name in messages is "decoder/layers_0/mlp/wi_0/kernel" and its zarr array
directory in a legacy checkpoint is "target.decoder.layers_0.mlp.wi_0.kernel".
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping

from invscale_jax import storage
from invscale_jax.checkpoint_errors import CheckpointError, describe

Key = tuple[str, ...]

LEGACY = "legacy"  # msgpack `checkpoint` file plus zarr arrays (T5X format version 3)
ORBAX = "orbax"  # an Orbax PyTree item: a directory holding `_METADATA`
MSGPACK_FILE = "checkpoint"
_ORBAX_METADATA = "_METADATA"
ORBAX_ITEM = "state"  # newer T5X writes the train state as Orbax item `state/`
_STEP_DIR = re.compile(r"checkpoint_(\d+)")  # `checkpoint_<step>.tmp-<time>` never matches


def flatten(tree: Mapping[str, Any],
            is_leaf: Callable[[Any], bool] = lambda _: False) -> dict[Key, Any]:
  """{key tuple: leaf} of nested mappings; empty mappings (param-less modules) vanish."""
  flat = {}
  for name, value in tree.items():
    if isinstance(value, Mapping) and not is_leaf(value):
      flat.update({(str(name), *key): leaf for key, leaf in flatten(value, is_leaf).items()})
    else:
      flat[(str(name),)] = value
  return flat


def unflatten(flat: Mapping[Key, Any]) -> dict[str, Any]:
  """Inverse of `flatten`."""
  tree: dict[str, Any] = {}
  for key, value in flat.items():
    node = tree
    for name in key[:-1]:
      node = node.setdefault(name, {})
    node[key[-1]] = value
  return tree


def param_name(key: Key) -> str:
  return "/".join(key)


def array_dir_name(key: Key) -> str:
  """The zarr directory T5X gives a target parameter, relative to the checkpoint."""
  return ".".join(("target", *key))


def step_dir(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, f"checkpoint_{step}")


@dataclasses.dataclass(frozen=True)
class Located:
  """A checkpoint found in storage."""

  path: str  # the checkpoint directory (usually `checkpoint_<step>`), for messages
  format: str  # LEGACY or ORBAX
  item_dir: str  # ORBAX: the directory holding `_METADATA`; LEGACY: `path`


def _detect(directory: str) -> Located | None:
  for item_dir in (storage.join(directory, ORBAX_ITEM), directory):
    if storage.is_file(storage.join(item_dir, _ORBAX_METADATA)):
      return Located(directory, ORBAX, item_dir)
  if storage.is_file(storage.join(directory, MSGPACK_FILE)):
    return Located(directory, LEGACY, directory)
  return None


def _find(path: str) -> Located:
  if storage.basename(path) == MSGPACK_FILE and storage.is_file(path):
    path = storage.parent(path)
  found = _detect(path)
  if found is not None:
    return found
  if not storage.is_dir(path):
    raise CheckpointError(path, "no such directory")
  steps = sorted(((int(m.group(1)), name) for name in storage.children(path)
                  if (m := _STEP_DIR.fullmatch(name))), reverse=True)
  found = next(filter(None, (_detect(storage.join(path, name)) for _, name in steps)), None)
  if found is None:
    raise CheckpointError(path, "no checkpoint found (expected checkpoint_<step>/checkpoint, "
                          "or an Orbax _METADATA file)")
  return found


def locate(path: str | os.PathLike[str]) -> Located:
  """The checkpoint at `path` (a directory or gs:// URL): a checkpoint directory, or a
  model dir (its latest step)."""
  path = storage.absolute(path)
  try:
    return _find(path)
  except (OSError, storage.StorageError) as e:  # e.g. a bucket the credentials may not read
    raise CheckpointError(path, describe(e)) from None
