"""scalable_t5 checkpoints (t5x/examples/scalable_t5): layers scanned into one stacked
parameter per name, attention kernels with their head axes. Built here from a per-layer
tree the way that network stores it, written with our writer, read back into the
per-layer tree: the same parameters and the same scores."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from invscale_jax import checkpoints
from invscale_jax import checkpoint_layout as layout
from invscale_jax.models.model import build

SCAN_AXIS = 1  # T5X's default param_scan_axis


def scalable_layout(params: dict, num_heads: int, scan: bool) -> dict:
  """`params` as scalable_t5 stores them: query/key/value kernels [emb, heads, head_dim],
  out [heads, head_dim, emb]; with `scan`, `<stack>/layers_<i>/...` stacked on SCAN_AXIS
  as `<stack>/<stack>/...`."""
  flat = {}
  for key, value in layout.flatten(params).items():
    if key[-1] == "kernel" and key[-2] in ("query", "key", "value"):
      value = value.reshape(value.shape[0], num_heads, -1)
    elif key[-1] == "kernel" and key[-2] == "out":
      value = value.reshape(num_heads, -1, value.shape[1])
    flat[key] = value
  if not scan:
    return layout.unflatten(flat)
  stacked, layers = {}, {}
  for key, value in flat.items():
    if len(key) > 2 and key[1].startswith("layers_"):
      layers.setdefault((key[0], key[0], *key[2:]), {})[int(key[1][len("layers_"):])] = value
    else:
      stacked[key] = value
  for key, by_layer in layers.items():
    stacked[key] = np.stack([by_layer[i] for i in range(len(by_layer))], axis=SCAN_AXIS)
  return layout.unflatten(stacked)


@pytest.fixture(scope="module")
def scalable_model(small_model_config, small_model):
  """A scalable_t5-style encoder-decoder (a relative position bias per layer), 3 layers
  per stack, with random parameters."""
  config = small_model_config("encoder_decoder", relpos_per_layer=True, num_encoder_layers=3,
                              num_decoder_layers=3)
  model = build(config)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) / np.sqrt(s.shape[0])
                                   ).astype(np.float32), model.param_shapes())
  return model, params


@pytest.fixture(scope="module")
def score(scalable_model, pack_rows):
  """Scores of two packed examples under given parameters (one compilation)."""
  model, _ = scalable_model
  batch, _ = pack_rows([[([5, 9, 14, 3], [[7, 8], [11]]), ([21, 4], [[6], [13, 2, 2]])]],
                       encoder_decoder=True)
  scorer = jax.jit(model.score)
  return lambda params: np.asarray(scorer(params, batch))


@pytest.mark.parametrize("scan,checkpoint_format", [(True, "legacy"), (True, "orbax"),
                                                    (False, "legacy")])
def test_scalable_t5_checkpoint_reads_as_per_layer_tree(scalable_model, scan, checkpoint_format,
                                                        tmp_path, score):
  model, params = scalable_model
  stored = scalable_layout(params, model.config.num_heads, scan)
  if scan:
    kernel = stored["encoder"]["encoder"]["attention"]["query"]["kernel"]
    assert kernel.shape == (64, 3, 4, 16)  # [emb, layers, heads, head_dim]
    assert stored["decoder"]["decoder"]["relpos_bias"]["rel_embedding"].shape == (4, 3, 32)
  checkpoints.write_checkpoint(tmp_path / "scanned", stored, format=checkpoint_format)
  checkpoints.write_checkpoint(tmp_path / "per_layer", params)
  assert (checkpoints.count_params(tmp_path / "scanned") ==
          checkpoints.count_params(tmp_path / "per_layer") == model.num_params())

  read = checkpoints.read_checkpoint(tmp_path / "scanned", expected=model.param_shapes())
  assert jax.tree.structure(read) == jax.tree.structure(params)
  for got, want in zip(jax.tree.leaves(read), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)
  device = jax.devices()[0]
  sharded = checkpoints.read_checkpoint(
      tmp_path / "scanned", expected=model.param_shapes(),
      shardings=jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(device), params))
  for got, want in zip(jax.tree.leaves(sharded), jax.tree.leaves(params)):
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(np.asarray(got), want)

  per_layer = checkpoints.read_checkpoint(tmp_path / "per_layer", expected=model.param_shapes())
  np.testing.assert_array_equal(score(read), score(per_layer))
  assert np.isfinite(score(read)).all() and (score(read) < 0).any()


def test_scanned_checkpoint_with_other_layer_count_is_an_error(scalable_model, small_model_config,
                                                               tmp_path):
  model, params = scalable_model
  checkpoints.write_checkpoint(tmp_path, scalable_layout(params, model.config.num_heads, True))
  two_layers = build(small_model_config("encoder_decoder", relpos_per_layer=True))
  with pytest.raises(checkpoints.CheckpointError, match=r"checkpoint_0: parameter decoder/decoder/"
                     r"\S+ has shape \(.*\), which is not 2 layers of shape"):
    checkpoints.read_checkpoint(tmp_path, expected=two_layers.param_shapes())
  shared_bias = build(small_model_config("encoder_decoder", num_encoder_layers=3,
                                         num_decoder_layers=3))
  with pytest.raises(checkpoints.CheckpointError, match=r"missing parameter decoder/relpos_bias/"
                     r"rel_embedding .* \(and \d+ more\)"):
    checkpoints.read_checkpoint(tmp_path, expected=shared_bias.param_shapes())


def test_per_layer_position_bias_packs_exactly(scalable_model, text_examples, pack_rows):
  """Packed, branched rows score as each (prompt, class) row alone with per-layer biases."""
  model, params = scalable_model
  ids = lambda text: [b + 3 for b in text.encode("utf-8")]
  examples = [(ids(p), [ids(c) for c in classes]) for p, classes in text_examples[:2]]
  packed, packed_slots = pack_rows([examples], encoder_decoder=True)
  separate, separate_slots = pack_rows([[(p, [c])] for p, classes in examples for c in classes],
                                       encoder_decoder=True, branched=False)
  packed_scores = np.asarray(jax.jit(model.score)(params, packed))
  separate_scores = np.asarray(jax.jit(model.score)(params, separate))
  for (r, s, n), (r2, s2, _) in zip(packed_slots, separate_slots):
    np.testing.assert_allclose(packed_scores[r, s:s + n], separate_scores[r2, s2:s2 + n],
                               rtol=0, atol=1e-5)
