"""Run keys follow every byte of a checkpoint, whatever its size, and re-runs do not re-hash."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

from invscale_jax import checkpoints, content_hash
from invscale_jax.engine import runkey


@pytest.fixture
def checkpoint(tmp_path) -> pathlib.Path:
  params = {"decoder": {"w": np.arange(4096, dtype=np.float32).reshape(64, 64)}}
  return pathlib.Path(checkpoints.write_checkpoint(tmp_path / "model", params, dtype="float32"))


def test_a_checkpoint_rewritten_in_place_with_equal_sizes_gets_a_new_key(checkpoint):
  before = runkey.checkpoint_identity(checkpoint)
  chunk = next(p for p in checkpoint.rglob("*") if p.is_file() and p.parent.name != "model"
               and not p.name.startswith(".") and p.name != "checkpoint")
  stat = chunk.stat()
  data = bytearray(chunk.read_bytes())
  data[-1] ^= 0xFF
  chunk.write_bytes(bytes(data))
  os.utime(chunk, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
  assert chunk.stat().st_size == stat.st_size
  assert runkey.checkpoint_identity(checkpoint) != before


def test_the_same_files_elsewhere_have_the_same_identity(checkpoint, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  copy = shutil.copytree(checkpoint, tmp_path / "copy")
  assert runkey.checkpoint_identity(copy) == runkey.checkpoint_identity(checkpoint)


def test_unchanged_files_are_hashed_once(checkpoint, monkeypatch):
  runkey.checkpoint_identity(checkpoint)
  calls = []
  real = content_hash._sha256_file
  monkeypatch.setattr(content_hash, "_sha256_file", lambda p: calls.append(p) or real(p))
  first = runkey.checkpoint_identity(checkpoint)
  assert calls == []  # every file's hash came from the cache
  (checkpoint / "checkpoint").write_bytes((checkpoint / "checkpoint").read_bytes() + b"\0")
  assert runkey.checkpoint_identity(checkpoint) != first
  assert [pathlib.Path(p).name for p in calls] == ["checkpoint"]


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such directory"):
    runkey.checkpoint_identity(tmp_path / "nope")
