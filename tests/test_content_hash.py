"""Run keys follow every byte of a checkpoint, whatever its size, and re-runs do not re-hash."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("special", ["fifo", "dev-zero"])
def test_a_device_or_fifo_in_a_checkpoint_is_refused_not_read(checkpoint, special):
  """Hashing a FIFO would wait for a writer, a link to /dev/zero read forever."""
  import threading  # pylint: disable=g-import-not-at-top
  path = checkpoint / "extra"
  if special == "fifo":
    os.mkfifo(path)
  else:
    path.symlink_to("/dev/zero")
  outcome = []

  def identity():
    try:
      runkey.checkpoint_identity(checkpoint)
    except ValueError as e:
      outcome.append(str(e))

  thread = threading.Thread(target=identity, daemon=True)
  thread.start()
  thread.join(20)
  assert outcome == [f"{path}: not a regular file (a device, FIFO or socket, or a "
                     f"link to one or to a directory); only regular files are hashed"]


def test_a_legacy_checkpoint_naming_arrays_outside_itself_is_refused(checkpoint, tmp_path):
  """Weights read from outside the directory would not be in its identity: a re-run after
  they change would reuse the old results. They are refused instead."""
  import msgpack  # pylint: disable=g-import-not-at-top
  outside = tmp_path / "outside"
  outside.mkdir()
  (checkpoint / "target.decoder.w").rename(outside / "target.decoder.w")
  msgpack_file = checkpoint / "checkpoint"
  contents = msgpack.unpackb(msgpack_file.read_bytes(), raw=False)
  contents["optimizer"]["target"]["decoder"]["w"]["kvstore"]["path"] = (
      "../../outside/target.decoder.w")
  msgpack_file.write_bytes(msgpack.packb(contents))
  with pytest.raises(checkpoints.CheckpointError) as raised:
    checkpoints.read_checkpoint(checkpoint)
  assert str(raised.value) == (f"checkpoint {checkpoint}: parameter decoder/w: its array "
                               "'../../outside/target.decoder.w' is outside the checkpoint "
                               "directory (only paths inside it are read)")


def test_an_hf_index_naming_weights_outside_the_directory_is_refused(tmp_path):
  from invscale_jax.convert import hf  # pylint: disable=g-import-not-at-top
  model = tmp_path / "model"
  model.mkdir()
  index = model / "model.safetensors.index.json"
  index.write_text(json.dumps({"weight_map": {"a": "model-1.safetensors",
                                              "b": "../outside/w.safetensors"}}))
  with pytest.raises(ValueError) as raised:
    hf.tensor_names(model)
  assert str(raised.value) == (f"{index}: weight_map names '../outside/w.safetensors', "
                               "outside the model directory (only files inside it are read)")
