"""From a manifest entry to what the engine runs: network, sharded parameters, vocabulary."""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import traverse_util
from jax.sharding import Mesh

from invscale_jax import checkpoints
from invscale_jax.convert import configs, hf_dir, hf_weights
from invscale_jax import tokenizer as tokenizer_lib
from invscale_jax.engine import partitioning
from invscale_jax.models import attention
from invscale_jax.models.model import Model, build
from invscale_jax.family import ModelEntry


@dataclasses.dataclass
class LoadedModel:
  entry: ModelEntry
  model: Model
  params: dict
  vocabulary: tokenizer_lib.Tokenizer  # the manifest's vocabulary, without TensorFlow
  mesh: Mesh


def _hf_params(entry: ModelEntry, model: Model, shardings: dict) -> dict:
  """The parameters of the entry's Hugging Face directory, mapped as its converter maps
  them, one tensor at a time, each put on its devices as it comes (every host reads the
  tensors and builds its own shards)."""
  places = traverse_util.flatten_dict(shardings)
  converted = hf_weights.convert_params(hf_dir.converter(entry.checkpoint), entry.checkpoint,
                                         model.config)
  try:  # checked against the network of the entry's config as they come (hf_weights.checked)
    params = {path: partitioning.to_global(x, places[path]) for path, x in converted}
  except ValueError as e:
    raise ValueError(f"{entry.checkpoint}: {e} (network of {entry.gin})") from None
  return traverse_util.unflatten_dict(params)


def param_bytes(entry: ModelEntry) -> int:
  """Bytes of the entry's float32 parameters (from its config; nothing is read)."""
  return 4 * build(configs.load_config(entry.gin)).num_params()


def load_model(entry: ModelEntry, dtype: str, mesh: Mesh) -> LoadedModel:
  """Builds the entry's network (activations in `dtype`) and restores its checkpoint (a
  T5X checkpoint, or a Hugging Face directory mapped in memory), float32 params sharded
  over `mesh` by logical-axis rules, each device reading its part."""
  config = configs.load_config(entry.gin, [f"ModelConfig.dtype = {dtype!r}"])
  if config.architecture != entry.architecture:
    raise ValueError(f"{entry.gin}: architecture {config.architecture!r} differs from the "
                     f"manifest's {entry.architecture!r} for model {entry.name}")
  model = build(config, attention.for_platform(mesh.devices.flat[0].platform))
  vocabulary = tokenizer_lib.from_spec(entry.vocabulary)
  if vocabulary.vocab_size > config.vocab_size:
    raise ValueError(f"model {entry.name}: vocabulary has {vocabulary.vocab_size} ids but "
                     f"the network only {config.vocab_size}")
  shardings = partitioning.param_shardings(model.param_axes(), mesh)
  if entry.checkpoint_format == "hf":
    params = _hf_params(entry, model, shardings)
  else:
    params = checkpoints.read_checkpoint(entry.checkpoint, dtype=np.float32,
                                         expected=model.param_shapes(), shardings=shardings)
  return LoadedModel(entry, model, params, vocabulary, mesh)

