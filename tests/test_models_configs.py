"""Shipped gin configs and manifests: published parameter counts (by jax.eval_shape, no
allocation), the tiny family's span, logical axes, and gin round trips."""

from __future__ import annotations

import functools
import pathlib

import jax
import numpy as np
import pytest

from invscale_jax import family
from invscale_jax.models.config import ModelConfig, load_config, to_gin
from invscale_jax.models.model import build

GIN = family.GIN_DIR / "models"
FAMILIES = pathlib.Path(family.__file__).parent / "families"

# Pythia paper, Table 1 (exact); T5 v1.1 as usually quoted (rounded).
PYTHIA = {"70m": 70_426_624, "160m": 162_322_944, "410m": 405_334_016, "1b": 1_011_781_632,
          "1.4b": 1_414_647_808, "2.8b": 2_775_208_960, "6.9b": 6_857_302_016,
          "12b": 11_846_072_320}
T5_1_1 = {"small": 77e6, "base": 248e6, "large": 783e6, "xl": 2.85e9, "xxl": 11.1e9}


@functools.cache
def _num_params(config: ModelConfig) -> int:
  return build(config).num_params()


@pytest.mark.parametrize("size", PYTHIA)
def test_pythia_parameter_counts_are_exact(size):
  assert _num_params(load_config(GIN / "pythia" / f"{size}.gin")) == PYTHIA[size]


@pytest.mark.parametrize("size", T5_1_1)
def test_t5_1_1_parameter_counts(size):
  count = _num_params(load_config(GIN / "t5_1_1" / f"{size}.gin"))
  assert count == pytest.approx(T5_1_1[size], rel=0.01)


@pytest.mark.parametrize("size", T5_1_1)
def test_flan_t5_has_the_t5_1_1_architecture(size):
  assert load_config(GIN / "flan_t5" / f"{size}.gin") == load_config(GIN / "t5_1_1" / f"{size}.gin")


def test_tiny_family_spans_30x_and_stays_small():
  configs = [load_config(GIN / "tiny" / f"tiny_{i}.gin") for i in range(1, 5)]
  assert {(c.architecture, c.vocab_size) for c in configs} == {("decoder_only", 384)}
  counts = [build(c).num_params() for c in configs]
  assert counts == sorted(counts)
  assert counts[-1] / counts[0] >= 30 and counts[-1] < 2_000_000


def test_init_gives_the_declared_float32_params():
  config = load_config(GIN / "tiny" / "tiny_1.gin")
  model = build(config)
  params = model.init(jax.random.key(0))
  describe = lambda tree: jax.tree.map(lambda p: (p.shape, p.dtype), tree)
  assert describe(params) == describe(model.param_shapes())
  attention = params["decoder"]["layers_0"]["self_attention"]
  # T5X folds the 1/sqrt(head_dim) attention scale into the query initialiser.
  ratio = np.std(attention["key"]["kernel"]) / np.std(attention["query"]["kernel"])
  assert ratio == pytest.approx(np.sqrt(config.head_dim), rel=0.2)


@pytest.mark.parametrize("name", ["t5_1_1", "flan_t5", "pythia"])
def test_manifests_match_their_configs(name):
  fam = family.load(FAMILIES / f"{name}.json")
  assert len(fam.models) == (8 if name == "pythia" else 5)
  for entry in fam.models:
    config = load_config(entry.gin)
    assert config.architecture == entry.architecture
    assert entry.n_params == _num_params(config)
    assert entry.compute is not None
    assert entry.checkpoint.startswith(str(pathlib.Path.home()))


@pytest.mark.parametrize("architecture", ["decoder_only", "gpt_neox", "opt", "llama", "gpt2",
                                          "encoder_decoder"])
def test_param_axes_name_every_dimension(architecture, small_model_config):
  model = build(small_model_config(architecture, logits_via_embedding=False))
  shapes, axes = model.param_shapes(), model.param_axes()
  assert jax.tree.structure(shapes) == jax.tree.structure(
      axes, is_leaf=lambda x: isinstance(x, tuple))
  for shape, names in zip(jax.tree.leaves(shapes),
                          jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))):
    assert len(shape.shape) == len(names)
  decoder = axes["decoder"]
  attention = decoder["layers_0"]["self_attention"]
  assert attention["query"]["kernel"] == attention["key"]["kernel"] == ("embed", "joined_kv")
  assert decoder["logits_dense"]["kernel"] == ("embed", "vocab")
  if architecture in ("decoder_only", "encoder_decoder"):
    assert decoder["relpos_bias"]["rel_embedding"] == ("heads", "relpos_buckets")
  if architecture in ("gpt_neox", "opt", "gpt2"):
    assert attention["query"]["bias"] == ("joined_kv",)
  if architecture in ("opt", "gpt2"):
    assert decoder["position_embedder"]["embedding"] == ("abspos_buckets", "embed")
  if architecture == "llama":  # grouped-query attention: 2 key/value heads for 4 query heads
    assert shapes["decoder"]["layers_0"]["self_attention"]["key"]["kernel"].shape == (64, 32)


def test_gin_round_trip_and_errors(tmp_path):
  config = load_config(GIN / "pythia" / "70m.gin", ["ModelConfig.dtype = 'float32'"])
  assert config.dtype == "float32" and config.mlp_activations == ("gelu_exact",)
  (tmp_path / "model.gin").write_text(to_gin(config, "converted"))
  assert load_config(tmp_path / "model.gin") == config
  with pytest.raises(ValueError, match="no field emb_size"):
    load_config(tmp_path / "model.gin", ["ModelConfig.emb_size = 3"])
  with pytest.raises(ValueError, match="may only `include` files"):
    load_config(tmp_path / "model.gin", ["Other.x = 3"])
