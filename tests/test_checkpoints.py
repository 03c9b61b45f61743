"""Round trips of T5X checkpoints: our writer, hand-built T5X layouts, and Orbax."""

import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import msgpack
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from flax import serialization

from invscale_jax.checkpoints import CheckpointError, count_params, read_checkpoint
from invscale_jax.checkpoints import write_checkpoint

KERNEL = "target.decoder.layers_0.mlp.wi_0.kernel"


def _params(seed=0):
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  return {"decoder": {
      "token_embedder": {"embedding": normal(70, 33)},
      "layers_0": {"mlp": {"wi_0": {"kernel": normal(33, 24)}},
                   "pre_mlp_layer_norm": {"scale": normal(33)},
                   "self_attention": {"query": {"kernel": normal(33, 4, 6)}}},
      "decoder_norm": {"scale": normal(33)}}}


def _assert_tree_equal(actual, expected, dtype=None):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert a.dtype == (e.dtype if dtype is None else dtype)
    np.testing.assert_array_equal(a, e if dtype is None else e.astype(dtype))


def _shapes(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def test_float32_round_trip_and_t5x_layout(tmp_path):
  params = _params()
  path = write_checkpoint(tmp_path, params, step=7, max_chunk_bytes=1024)
  assert path == str(tmp_path / "checkpoint_7")
  assert sorted(os.listdir(tmp_path)) == ["checkpoint_7"]  # the temporary dir was renamed
  with open(os.path.join(path, KERNEL, ".zarray")) as f:
    zarray = json.load(f)
  assert zarray["compressor"]["id"] == "gzip" and zarray["dimension_separator"] == "."
  assert zarray["dtype"] == "<f4" and zarray["shape"] == [33, 24]
  assert np.prod(zarray["chunks"]) * 4 <= 1024  # chunked, edge chunks allowed
  assert os.path.isfile(os.path.join(path, KERNEL, "1.1"))
  with open(os.path.join(path, "checkpoint"), "rb") as f:
    contents = msgpack.unpackb(f.read())
  assert contents["version"] == 3
  spec = contents["optimizer"]["target"]["decoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  assert spec["driver"] == "zarr" and spec["kvstore"]["path"] == KERNEL  # relative path
  assert contents["optimizer"]["state"]["step"].code == 1  # inline ndarray, flax ext type 1
  _assert_tree_equal(read_checkpoint(path), params)
  assert count_params(path) == sum(x.size for x in jax.tree.leaves(params))


def test_bfloat16_storage_and_cast_on_restore(tmp_path):
  params = _params()
  path = write_checkpoint(tmp_path, params, dtype=jnp.bfloat16, max_chunk_bytes=512)
  with open(os.path.join(path, KERNEL, ".zarray")) as f:
    assert json.load(f)["dtype"] == "bfloat16"
  as_bf16 = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), params)
  _assert_tree_equal(read_checkpoint(path), as_bf16)
  restored = read_checkpoint(path, dtype=jnp.float32, expected=_shapes(params))
  _assert_tree_equal(restored, jax.tree.map(lambda x: x.astype(np.float32), as_bf16))


def test_model_dir_reads_latest_complete_step(tmp_path):
  write_checkpoint(tmp_path, _params(1), step=3)
  write_checkpoint(tmp_path, _params(2), step=12)
  os.makedirs(tmp_path / "checkpoint_20.tmp-1700000000")  # an interrupted write
  _assert_tree_equal(read_checkpoint(tmp_path), _params(2))
  _assert_tree_equal(read_checkpoint(tmp_path / "checkpoint_3" / "checkpoint"), _params(1))


def test_interrupted_write_leaves_no_checkpoint(tmp_path):
  params = {"a": {"kernel": np.ones((2, 3), np.float32)}, "b": {"name": np.array("text")}}
  with pytest.raises(CheckpointError, match="parameter b/name has unsupported dtype"):
    write_checkpoint(tmp_path, params, step=4)
  assert os.listdir(tmp_path) == []
  with pytest.raises(CheckpointError, match="no checkpoint found"):
    read_checkpoint(tmp_path)


def _write_zarr(directory, array, chunks):
  """A zarr array written by tensorstore directly, as T5X does."""
  spec = {"driver": "zarr", "dtype": array.dtype.name,
          "kvstore": {"driver": "file", "path": str(directory)},
          "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                       "chunks": list(chunks)}}
  ts.open(spec, create=True).result().write(array).result()


def _t5x_spec(name, array, chunks):
  """The msgpack leaf T5X writes: tensorstore's own JSON of a spec with a relative path."""
  return ts.Spec({"driver": "zarr", "dtype": array.dtype.name,
                  "kvstore": {"driver": "file", "path": name},
                  "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                               "chunks": list(chunks)}}).to_json()


def _hand_built_t5x(checkpoint):
  """A T5X-style checkpoint built without our writer; returns its target params."""
  rng = np.random.default_rng(3)
  embedding = rng.standard_normal((70, 33)).astype(ml_dtypes.bfloat16)
  query = rng.standard_normal((6, 2, 4)).astype(np.float32)
  wo = rng.standard_normal((8, 6)).astype(np.float32)
  norm = rng.standard_normal(6).astype(np.float32)
  wo_v = np.abs(wo)
  arrays = {"target.decoder.token_embedder.embedding": (embedding, (32, 16)),
            "target.decoder.layers_0.self_attention.query.kernel": (query, (4, 2, 3)),
            "target.decoder.layers_0.mlp.wo.kernel": (wo, (3, 6)),
            "state.param_states.decoder.layers_0.mlp.wo.kernel.v": (wo_v, (8, 6))}
  for name, (array, chunks) in arrays.items():
    _write_zarr(checkpoint / name, array, chunks)
  os.remove(checkpoint / "target.decoder.layers_0.mlp.wo.kernel" / ".zarray")
  specs = {name: _t5x_spec(name, *value) for name, value in arrays.items()}
  # Written on GCS, copied to local disk: T5X's dummy bucket, path still relative.
  specs["target.decoder.layers_0.self_attention.query.kernel"]["kvstore"] = {
      "driver": "gcs", "bucket": "t5x-dummy-bucket",
      "path": "target.decoder.layers_0.self_attention.query.kernel"}
  target = {"decoder": {
      "token_embedder": {"embedding": specs["target.decoder.token_embedder.embedding"]},
      "layers_0": {
          "self_attention": {"query": {"kernel": specs[
              "target.decoder.layers_0.self_attention.query.kernel"]}},
          "mlp": {"wo": {"kernel": specs["target.decoder.layers_0.mlp.wo.kernel"]}}},
      "decoder_norm": {"scale": norm}}}  # inline: flax ext type 1
  state = {"step": np.asarray(1000, np.int32), "param_states": {"decoder": {
      "token_embedder": {"embedding": {"v_row": np.ones(70, np.float32),
                                       "v_col": np.ones(33, np.float32)}},
      "layers_0": {"mlp": {"wo": {"kernel": {
          "v": specs["state.param_states.decoder.layers_0.mlp.wo.kernel.v"]}}}}}}}
  with open(checkpoint / "checkpoint", "wb") as f:
    f.write(serialization.msgpack_serialize(
        {"version": 3, "optimizer": {"target": target, "state": state}}))
  return {"decoder": {"token_embedder": {"embedding": embedding},
                      "layers_0": {"self_attention": {"query": {"kernel": query}},
                                   "mlp": {"wo": {"kernel": wo}}},
                      "decoder_norm": {"scale": norm}}}


def test_hand_built_t5x_checkpoint(tmp_path):
  checkpoint = tmp_path / "checkpoint_1000"
  params = _hand_built_t5x(checkpoint)
  with open(checkpoint / "target.decoder.token_embedder.embedding" / ".zarray") as f:
    assert json.load(f)["dtype"] == "bfloat16"
  assert os.path.isfile(checkpoint / "target.decoder.token_embedder.embedding" / "2.2")
  restored = read_checkpoint(tmp_path, expected=_shapes(params))  # optimizer state ignored
  _assert_tree_equal(restored, params)
  _assert_tree_equal(read_checkpoint(checkpoint, dtype=jnp.float32), params, dtype=np.float32)
  assert count_params(checkpoint) == 70 * 33 + 6 * 2 * 4 + 8 * 6 + 6


def _save_orbax(directory, params):
  ocp.PyTreeCheckpointer().save(directory, {"target": params, "state": {
      "step": np.int32(5), "param_states": jax.tree.map(np.zeros_like, params)}})


@pytest.mark.parametrize("item", ["state", ""], ids=["state_subdir", "metadata_beside"])
def test_orbax_round_trip(tmp_path, item):
  params = _params()
  _save_orbax(tmp_path / "checkpoint_5" / item, params)
  _assert_tree_equal(read_checkpoint(tmp_path, expected=_shapes(params)), params)
  restored = read_checkpoint(tmp_path / "checkpoint_5", dtype=jnp.bfloat16)
  _assert_tree_equal(restored, params, dtype=jnp.bfloat16)
  assert count_params(tmp_path) == sum(x.size for x in jax.tree.leaves(params))
  expected = _shapes(params)
  expected["decoder"]["decoder_norm"]["scale"] = jax.ShapeDtypeStruct((34,), jnp.float32)
  with pytest.raises(CheckpointError, match=r"parameter decoder/decoder_norm/scale has shape "
                     r"\(33,\) in the checkpoint, expected \(34,\)"):
    read_checkpoint(tmp_path, expected=expected)


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_orbax_writer_layout_is_t5x_and_orbax_reads_it(tmp_path, dtype):
  """Our Orbax writer: `checkpoint_<step>/state/` as T5X's Orbax checkpointer writes it;
  read back by our reader and by Orbax's own CheckpointManager and PyTreeCheckpointer."""
  params = _params()
  path = write_checkpoint(tmp_path, params, step=3, dtype=dtype, format="orbax")
  assert path == str(tmp_path / "checkpoint_3")
  assert sorted(os.listdir(tmp_path)) == ["checkpoint_3"]  # no temporary directory left
  assert os.path.isfile(os.path.join(path, "state", "_METADATA"))
  assert os.path.isfile(os.path.join(path, "state", "manifest.ocdbt"))  # OCDBT, as T5X
  expected_dtype = np.float32 if dtype is None else dtype
  _assert_tree_equal(read_checkpoint(tmp_path, expected=_shapes(params)), params,
                     dtype=expected_dtype)
  assert count_params(path) == sum(x.size for x in jax.tree.leaves(params))

  options = ocp.CheckpointManagerOptions(step_prefix="checkpoint")
  with ocp.CheckpointManager(tmp_path, item_names=("state",), options=options) as manager:
    assert manager.all_steps() == [3]
    state = manager.restore(3, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))["state"]
  assert int(state["state"]["step"]) == 3
  _assert_tree_equal(state["target"], params, dtype=expected_dtype)
  direct = ocp.PyTreeCheckpointer().restore(os.path.join(path, "state"))
  _assert_tree_equal(direct["target"], params, dtype=expected_dtype)

  with pytest.raises(CheckpointError, match="checkpoint_3: already exists"):
    write_checkpoint(tmp_path, params, step=3, format="orbax")
  with pytest.raises(ValueError, match="'zarr' is not one of legacy, orbax"):
    write_checkpoint(tmp_path, params, step=4, format="zarr")
