"""Every broken checkpoint gives a one-line CheckpointError naming the path and parameter."""

import json
import os
import re

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import serialization

from invscale_jax import checkpoint_layout
from invscale_jax.checkpoints import CheckpointError, count_params, read_checkpoint
from invscale_jax.checkpoints import write_checkpoint

WO = "target.decoder.layers_0.mlp.wo.kernel"


@pytest.fixture(name="checkpoint")
def _checkpoint(tmp_path):
  params = {"decoder": {"layers_0": {"mlp": {"wo": {"kernel": np.ones((64, 32), np.float32)}}},
                        "decoder_norm": {"scale": np.ones(32, np.float32)}}}
  return write_checkpoint(tmp_path, params, step=2, max_chunk_bytes=2048)


def _error(path, **kwargs) -> str:
  """The message of the CheckpointError that reading `path` raises; it must be one line."""
  with pytest.raises(CheckpointError) as info:
    read_checkpoint(path, **kwargs)
  message = str(info.value)
  assert "\n" not in message and "tensorstore_spec" not in message
  assert isinstance(info.value, ValueError)
  return message


def _expected(**changes):
  shapes = {"decoder/layers_0/mlp/wo/kernel": (64, 32), "decoder/decoder_norm/scale": (32,),
            **changes}
  flat = {tuple(name.split("/")): jax.ShapeDtypeStruct(shape, jnp.float32)
          for name, shape in shapes.items() if shape is not None}
  return checkpoint_layout.unflatten(flat)


def test_missing_parameter(checkpoint):
  expected = _expected(**{"decoder/layers_3/mlp/wo/kernel": (64, 32)})
  assert _error(checkpoint, expected=expected) == (
      f"checkpoint {checkpoint}: missing parameter decoder/layers_3/mlp/wo/kernel "
      "(expected shape (64, 32))")


def test_shape_mismatch(checkpoint):
  expected = _expected(**{"decoder/layers_0/mlp/wo/kernel": (32, 64)})
  assert _error(checkpoint, expected=expected) == (
      f"checkpoint {checkpoint}: parameter decoder/layers_0/mlp/wo/kernel has shape (64, 32) "
      "in the checkpoint, expected (32, 64)")


def test_unexpected_parameter_and_problem_count(checkpoint):
  expected = _expected(**{"decoder/decoder_norm/scale": None, "decoder/extra": (3,)})
  assert _error(checkpoint, expected=expected) == (
      f"checkpoint {checkpoint}: missing parameter decoder/extra (expected shape (3,)) "
      "(and 1 more)")
  expected = _expected(**{"decoder/decoder_norm/scale": None})
  assert _error(checkpoint, expected=expected) == (
      f"checkpoint {checkpoint}: unexpected parameter decoder/decoder_norm/scale (shape (32,)) "
      "that the model does not have")


def test_missing_chunk_file(checkpoint):
  os.remove(os.path.join(checkpoint, WO, "1.0"))
  message = _error(checkpoint)
  assert message.startswith(f"checkpoint {checkpoint}: cannot read parameter "
                            "decoder/layers_0/mlp/wo/kernel: ")
  assert re.search(rf"{WO}/1\.0\" is missing", message)


def test_corrupt_chunk_file(checkpoint):
  with open(os.path.join(checkpoint, WO, "0.0"), "r+b") as f:
    f.truncate(10)
  assert _error(checkpoint).startswith(
      f"checkpoint {checkpoint}: cannot read parameter decoder/layers_0/mlp/wo/kernel: ")


def test_missing_array_directory(checkpoint):
  os.rename(os.path.join(checkpoint, WO), os.path.join(checkpoint, "moved"))
  assert _error(checkpoint) == (f"checkpoint {checkpoint}: parameter "
                                f"decoder/layers_0/mlp/wo/kernel: missing array directory {WO}")


@pytest.mark.parametrize("corrupt", [lambda data: data[:len(data) // 2], lambda _: b"\xc1junk",
                                     lambda _: b""], ids=["truncated", "garbage", "empty"])
def test_corrupt_msgpack(checkpoint, corrupt):
  file = os.path.join(checkpoint, "checkpoint")
  with open(file, "rb") as f:
    data = f.read()
  with open(file, "wb") as f:
    f.write(corrupt(data))
  assert _error(checkpoint).startswith(
      f"checkpoint {checkpoint}: corrupt or truncated msgpack file {file}: ")


def test_msgpack_without_target(checkpoint):
  with open(os.path.join(checkpoint, "checkpoint"), "wb") as f:
    f.write(msgpack.packb({"version": 3, "optimizer": {"state": {}}}))
  assert "has no optimizer/target tree" in _error(checkpoint)


@pytest.mark.parametrize("text", ['{"chunks": [8, ', '{"chunks": [8, 8]}'],
                         ids=["bad_json", "no_shape"])
def test_corrupt_zarray(checkpoint, text):
  with open(os.path.join(checkpoint, WO, ".zarray"), "w") as f:
    f.write(text)
  assert _error(checkpoint).startswith(
      f"checkpoint {checkpoint}: corrupt .zarray of parameter decoder/layers_0/mlp/wo/kernel")
  with pytest.raises(CheckpointError, match="corrupt .zarray"):
    count_params(checkpoint)


def test_unknown_dtype_in_zarray(checkpoint):
  file = os.path.join(checkpoint, WO, ".zarray")
  with open(file) as f:
    metadata = json.load(f)
  with open(file, "w") as f:
    json.dump({**metadata, "dtype": "float128x"}, f)
  assert _error(checkpoint) == (f"checkpoint {checkpoint}: unknown dtype 'float128x' of "
                                "parameter decoder/layers_0/mlp/wo/kernel")


@pytest.mark.parametrize("chunks, message", [
    ([1000000000, 1000000000], "chunks (1000000000, 1000000000) of 4000000000000000000 bytes, "
     "more than the 2147483648 read at once"),
    ([1e9, 1e9], "bad chunks [1000000000.0, 1000000000.0] for shape (64, 32)"),
    ([8], "bad chunks [8] for shape (64, 32)")])
def test_chunks_too_large_to_read(checkpoint, chunks, message):
  """A lying .zarray would make tensorstore allocate each chunk whole (std::bad_alloc)."""
  file = os.path.join(checkpoint, WO, ".zarray")
  with open(file) as f:
    metadata = json.load(f)
  with open(file, "w") as f:
    json.dump({**metadata, "chunks": chunks}, f)
  assert _error(checkpoint) == (
      f"checkpoint {checkpoint}: parameter decoder/layers_0/mlp/wo/kernel: {message}")


def test_unknown_dtype_inline(tmp_path):
  packed = msgpack.packb(((3,), "float128x", b"\0" * 48), use_bin_type=True)
  contents = {"version": 3, "optimizer": {"target": {"scale": msgpack.ExtType(1, packed)}}}
  with open(tmp_path / "checkpoint", "wb") as f:
    f.write(msgpack.packb(contents))
  assert _error(tmp_path) == f"checkpoint {tmp_path}: unknown dtype 'float128x' of parameter scale"


def test_old_version(tmp_path):
  with open(tmp_path / "checkpoint", "wb") as f:
    f.write(serialization.msgpack_serialize({"version": 2, "optimizer": {"target": {}}}))
  assert "unsupported T5X checkpoint version 2" in _error(tmp_path)


def test_no_checkpoint(tmp_path):
  assert _error(tmp_path) == (f"checkpoint {tmp_path}: no checkpoint found (expected "
                              "checkpoint_<step>/checkpoint, or an Orbax _METADATA file)")
  assert _error(tmp_path / "absent") == f"checkpoint {tmp_path / 'absent'}: no such directory"


def test_missing_sharding(checkpoint):
  shardings = {"decoder": {"decoder_norm": {"scale": jax.sharding.SingleDeviceSharding(
      jax.devices()[0])}}}
  assert _error(checkpoint, shardings=shardings) == (
      f"checkpoint {checkpoint}: no sharding given for parameter decoder/layers_0/mlp/wo/kernel")


def test_corrupt_orbax_metadata(tmp_path):
  item = tmp_path / "checkpoint_1" / "state"
  ocp.PyTreeCheckpointer().save(item, {"target": {"a": np.ones((4, 4), np.float32)}})
  with open(item / "_METADATA", "w") as f:
    f.write("{junk")
  assert _error(tmp_path) == (f"checkpoint {tmp_path / 'checkpoint_1'}: corrupt Orbax "
                              f"metadata in {item}")
