"""Run keys: a content hash of everything that determines a run's numbers.

(checkpoint identity, network config, vocabulary, task data, variant and prompt options,
scoring options, engine version). Options that change only speed (batch size, packing) are left out: scores
do not depend on them, so a run may resume with other values.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

ENGINE_VERSION = "2"  # 2: the prompt prefix (BOS) is the model's convention
# Checkpoints up to this size are hashed byte for byte; larger ones by their metadata
# (the msgpack file's bytes plus every file's relative path and size).
FULL_HASH_LIMIT = 256 << 20


def checkpoint_identity(path: os.PathLike | str) -> str:
  """sha256 over a checkpoint directory's files (contents, or names+sizes when large)."""
  root = pathlib.Path(path)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: checkpoint directory not found")
  files = sorted(p for p in root.rglob("*") if p.is_file())
  total = sum(p.stat().st_size for p in files)
  digest = hashlib.sha256()
  for p in files:
    rel = p.relative_to(root).as_posix()
    digest.update(f"{rel}\0{p.stat().st_size}\0".encode())
    if total <= FULL_HASH_LIMIT or p.name in ("checkpoint", "_METADATA", ".zarray"):
      digest.update(p.read_bytes())
  return digest.hexdigest()


def run_key(parts: dict[str, Any]) -> str:
  """The first 16 hex digits of sha256 over the canonical JSON of `parts`."""
  blob = json.dumps(dict(parts, engine_version=ENGINE_VERSION), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]
