"""Batched autoregressive decoding with a key/value cache (T5X's predict mode).

Prompts are bucketed by length (powers of two) into fixed-shape batches, sharded over the
mesh's data axis like scoring. One jitted call per batch runs the prefill and a `lax.scan`
of cached decode steps. Greedy by default; with `temperature > 0` each example samples
with its own key `fold_in(seed, example_id)`, so generations do not depend on batching.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from invscale_jax.engine import partitioning
from invscale_jax.engine.packing import DECODER_START, batch_rows, bucket
from invscale_jax.engine.requests import Request


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  max_new_tokens: int = 128
  temperature: float = 0.0  # 0: greedy
  seed: int = 0


def _decode_fn(model: Any, max_new: int, temperature: float) -> Callable:
  """(params, batch, keys [B, 2]) -> generated tokens [B, max_new]."""

  def pick(logits: jax.Array, keys: jax.Array, step: int) -> jax.Array:
    if temperature == 0.0:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
    sample = lambda k, l: jax.random.categorical(k, l / temperature)
    return jax.vmap(sample)(step_keys, logits.astype(jnp.float32)).astype(jnp.int32)

  def run(params: Any, batch: dict[str, jax.Array], keys: jax.Array) -> jax.Array:
    length = batch["tokens"].shape[1]
    logits, cache = model.prefill(params, batch, cache_length=length + max_new - 1)
    first = pick(logits, keys, 0)

    def step(carry, t):
      cache, token = carry
      logits, cache = model.decode_step(params, cache, token)
      token = pick(logits, keys, t)
      return (cache, token), token

    _, rest = jax.lax.scan(step, (cache, first), jnp.arange(1, max_new))
    return jnp.concatenate([first[:, None], rest.T], axis=1)

  return run


def _prompt_arrays(requests: Sequence[Request], encoder_decoder: bool, rows: int,
                   length: int) -> dict[str, np.ndarray]:
  """Right-padded prompts (each prefix as it is, BOS included); padding rows hold one
  token so every row has a last token."""
  tokens = np.zeros((rows, length), np.int32)
  lengths = np.ones(rows, np.int32)
  arrays = {"tokens": tokens, "lengths": lengths}
  if encoder_decoder:  # encoder reads the prompt; the decoder starts from DECODER_START
    arrays["encoder_tokens"] = np.zeros((rows, length), np.int32)
    arrays["encoder_lengths"] = np.ones(rows, np.int32)
    for i, r in enumerate(requests):
      arrays["encoder_tokens"][i, :len(r.prefix)] = r.prefix
      arrays["encoder_lengths"][i] = max(1, len(r.prefix))
    arrays["tokens"] = np.full((rows, 1), DECODER_START, np.int32)
    return arrays
  for i, r in enumerate(requests):
    tokens[i, :len(r.prefix)] = r.prefix
    lengths[i] = len(r.prefix)
  return arrays


@functools.lru_cache(maxsize=None)
def _decoding_step(model_type: type, config: Any, attention: Any, max_new: int,
                   temperature: float, sharding: Any) -> Callable:
  """The jitted decoding of a network configuration, shared by every model of it."""
  return jax.jit(_decode_fn(model_type(config, attention), max_new, temperature),
                 out_shardings=sharding)


class Generator:
  """Decodes continuations of requests' prompts with one model on a mesh."""

  def __init__(self, model: Any, params: Any, mesh: Mesh, options: DecodeOptions,
               tokens_per_batch: int = 8192):
    self.model, self.params, self.mesh, self.options = model, params, mesh, options
    self.tokens_per_batch = tokens_per_batch
    self._sharding = partitioning.batch_sharding(mesh)
    self._run = _decoding_step(type(model), model.config, model.attention,
                               options.max_new_tokens, options.temperature, self._sharding)
    self.generated_tokens = 0

  @functools.cached_property
  def _base_key(self) -> jax.Array:
    return jax.random.PRNGKey(self.options.seed)

  def _keys(self, requests: Sequence[Request], rows: int) -> np.ndarray:
    ids = np.zeros(rows, np.uint32)
    ids[:len(requests)] = [r.example_id for r in requests]
    return np.asarray(jax.vmap(lambda i: jax.random.fold_in(self._base_key, i))(ids))

  def generate(self, requests: Sequence[Request],
               progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Generated token ids (max_new_tokens each, EOS not yet cut) per request."""
    encoder_decoder = self.model.architecture == "encoder_decoder"
    data_parallel = self.mesh.shape[partitioning.DATA]
    groups: dict[int, list[int]] = {}
    for i in sorted(range(len(requests)), key=lambda i: -len(requests[i].prefix)):
      groups.setdefault(bucket(len(requests[i].prefix)), []).append(i)
    result: list[np.ndarray] = [None] * len(requests)
    for length, members in groups.items():
      per_batch = max(data_parallel, self.tokens_per_batch // (length + self.options.max_new_tokens)
                      // data_parallel * data_parallel)
      for start in range(0, len(members), per_batch):
        chunk = [requests[i] for i in members[start:start + per_batch]]
        rows = batch_rows(len(chunk), per_batch, data_parallel)
        arrays = _prompt_arrays(chunk, encoder_decoder, rows, length)
        batch = {k: partitioning.to_global(v, self._sharding) for k, v in arrays.items()}
        keys = partitioning.to_global(self._keys(chunk, rows), self._sharding)
        out = partitioning.to_host(self._run(self.params, batch, keys))
        for i, row in zip(members[start:start + per_batch], out):
          result[i] = row
        self.generated_tokens += len(chunk) * self.options.max_new_tokens
        if progress:
          progress(len(chunk))
    return result
