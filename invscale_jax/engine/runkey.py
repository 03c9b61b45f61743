"""Run keys: a content hash of everything that determines a run's numbers.

(checkpoint identity, network config, vocabulary, task data, variant and prompt options,
scoring options, engine version). Options that change only speed (batch size, packing)
are left out: scores do not depend on them, so a run may resume with other values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from invscale_jax import content_hash

ENGINE_VERSION = "2"  # 2: the prompt prefix (BOS) is the model's convention


def network_identity(config: Any) -> dict[str, Any]:
  """The fields of a network config (a dataclass) that differ from their defaults, without
  `dtype` (the run's activation dtype is a scoring option): adding a field with a default
  keeps every existing key."""
  return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
          if f.name != "dtype" and (f.default is dataclasses.MISSING
                                    or getattr(config, f.name) != f.default)}


def checkpoint_identity(path: os.PathLike | str) -> str:
  """What changes whenever any byte of the checkpoint does (see `content_hash`)."""
  return content_hash.tree_identity(path)


def run_key(parts: dict[str, Any]) -> str:
  """The first 16 hex digits of sha256 over the canonical JSON of `parts`."""
  blob = json.dumps(dict(parts, engine_version=ENGINE_VERSION), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]
