"""`Model`: one interface to initialise, score and decode, whatever the architecture.

Parameters are the content of T5X's `params` collection (no `target/` prefix): nested
dicts of float32 arrays. All methods are pure functions of their arguments; jit them.

Scoring batch (dict of int32 arrays; the B rows form G groups of B/G consecutive rows,
G dividing B; T = scored tokens per group):
  tokens [B, L]         model inputs (decoder inputs for encoder_decoder)
  positions [B, L]      position of each token within its example (branches may restart)
  segment_ids [B, L]    0 = padding, k > 0 = the k-th example packed in the row
  branch_ids [B, L]     0 = shared prompt, k > 0 = the k-th continuation (e.g. class)
  target_index [G, T]   index into the group's rows, flattened ([B/G * L]), of the hidden
                        state that predicts each target (G = B: an index into L per row)
  target_ids [G, T], target_mask [G, T]
  encoder_tokens [B, Le], encoder_segment_ids [B, Le]   (encoder_decoder only)
A token attends to a key iff same nonzero segment, key index <= its index, and the key
is in branch 0 or in its own branch (see masks.visible). Long rows attend block by block
(models/attention.py; `Model(config, attention=...)` sets when, default attention.AUTO).

Decoding batch (right-padded prompts): tokens [B, L], lengths [B]; encoder_decoder also
encoder_tokens [B, Le], encoder_lengths [B] (its decoder prompt is usually [0]).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from invscale_jax.models import layers, networks
from invscale_jax.models.attention import Policy
from invscale_jax.models.config import ModelConfig
from invscale_jax.models.masks import Mask

Array = jax.Array
Params = dict[str, Any]
Batch = dict[str, Array]


@flax.struct.dataclass
class Cache:
  """Decoding state. All rows write their next key at slot `index`; slots after a shorter
  prompt stay empty, so rows with different prompt lengths decode together."""

  index: Array  # int32 scalar: slot the next token is written to
  next_positions: Array  # [B] position of each row's next token
  key_positions: Array  # [B, T] position of the token in each slot
  key_segments: Array  # [B, T] 1 where the slot holds a token, else 0
  kv: list[layers.KV]  # per decoder layer: keys, values [B, T, kv heads, D]
  cross_kv: list[layers.KV] | None = None  # encoder_decoder: per layer, over the encoder
  encoder_segments: Array | None = None  # [B, Le] 1 for encoder tokens, 0 for padding


def _filled(lengths: Array, size: int) -> Array:
  """int32 [B, size]: 1 for the first lengths[b] slots of row b, else 0."""
  return (jnp.arange(size)[None, :] < lengths[:, None]).astype(jnp.int32)


class Model:
  """A network built from `config`, with T5X parameter names."""

  def __init__(self, config: ModelConfig, attention: Policy | None = None):
    self.config = config
    self.network = networks.build(config)
    self.attention = attention

  @property
  def architecture(self) -> str:
    return self.config.architecture

  # Parameters.

  def _init_boxed(self, rng: Array) -> Params:
    tokens = jnp.zeros((1, 1), jnp.int32)
    inputs = (tokens, tokens) if self.architecture == "encoder_decoder" else (tokens,)
    return self.network.init(rng, *inputs)["params"]

  def init(self, rng: Array) -> Params:
    """Randomly initialised parameters (T5X initialisers)."""
    return nn.meta.unbox(jax.jit(self._init_boxed)(rng))

  def param_shapes(self) -> Params:
    """jax.ShapeDtypeStruct of every parameter, without allocating any."""
    return jax.eval_shape(lambda: nn.meta.unbox(self._init_boxed(jax.random.key(0))))

  def param_axes(self) -> Params:
    """Logical axis names of every parameter, e.g. ('embed', 'joined_kv')."""
    boxed = jax.eval_shape(self._init_boxed, jax.random.key(0))
    return jax.tree.map(lambda p: tuple(p.names), boxed,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))

  def num_params(self) -> int:
    """Total number of parameters (from shapes only)."""
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(self.param_shapes()))

  # Scoring.

  def _apply(self, params: Params, method: str, *args, **kwargs) -> Any:
    return self.network.apply({"params": params}, *args, method=method, **kwargs)

  def _mask(self, segments: Array, key_segments: Array, **kwargs) -> Mask:
    return Mask(segments, key_segments, policy=self.attention, **kwargs)

  def _cross_kv(self, params: Params, encoder_tokens: Array,
                encoder_segments: Array) -> list[layers.KV]:
    encoded = self._apply(params, "encode", encoder_tokens,
                          self._mask(encoder_segments, encoder_segments))
    return self._apply(params, "cross_kv", encoded)

  def _cross_args(self, segments: Array, cross_kv: list[layers.KV] | None,
                  encoder_segments: Array | None) -> dict[str, Any]:
    """Keyword arguments of `decode` for cross-attention (none without an encoder)."""
    if cross_kv is None:
      return {}
    return {"cross_kv": cross_kv,
            "cross_mask": self._mask(segments, encoder_segments)}

  def score(self, params: Params, batch: Batch) -> Array:
    """log p(target_ids) per target, float32 [G, T]; masked targets are 0. Logits are
    computed only at the T target slots."""
    segments, branches, positions = batch["segment_ids"], batch["branch_ids"], batch["positions"]
    mask = self._mask(segments, segments, branches=branches, key_branches=branches, causal=True)
    cross_kv, encoder_segments = None, batch.get("encoder_segment_ids")
    if self.architecture == "encoder_decoder":
      cross_kv = self._cross_kv(params, batch["encoder_tokens"], encoder_segments)
    hidden, _ = self._apply(params, "decode", batch["tokens"], positions, positions, mask,
                            **self._cross_args(segments, cross_kv, encoder_segments))
    groups = batch["target_index"].shape[0]
    hidden = hidden.reshape(groups, -1, hidden.shape[-1])  # [G, B/G * L, E]
    hidden = jnp.take_along_axis(hidden, batch["target_index"][..., None], axis=1)
    logits = self._apply(params, "logits", hidden)  # [G, T, V]
    target = jnp.take_along_axis(logits, batch["target_ids"][..., None], axis=-1)[..., 0]
    log_probs = target - jax.nn.logsumexp(logits, axis=-1)
    return jnp.where(batch["target_mask"] > 0, log_probs, 0.0)

  # Incremental decoding.

  def prefill(self, params: Params, batch: Batch, cache_length: int) -> tuple[Array, Cache]:
    """Runs the prompts; returns logits after each row's last prompt token [B, V] and a
    cache with room for `cache_length` tokens.

    Every decode step takes the next slot after the padded prompt length L, so decoding
    n tokens needs cache_length >= L + n - 1 (a step past the end would overwrite the
    last slot).
    """
    tokens, lengths = batch["tokens"], batch["lengths"]
    (rows, length), cfg = tokens.shape, self.config
    if cache_length < length:
      raise ValueError(f"cache_length {cache_length} is shorter than the prompts ({length})")
    key_segments = _filled(lengths, cache_length)
    key_positions = jnp.broadcast_to(jnp.arange(cache_length), (rows, cache_length))
    shape = (rows, cache_length, cfg.kv_heads, cfg.head_dim)
    empty = [(jnp.zeros(shape, cfg.activation_dtype),) * 2 for _ in range(cfg.decoder_layers)]
    cache = Cache(index=jnp.int32(length), next_positions=lengths, key_positions=key_positions,
                  key_segments=key_segments, kv=empty)
    if self.architecture == "encoder_decoder":
      encoder_tokens = batch["encoder_tokens"]
      encoder_segments = _filled(batch["encoder_lengths"], encoder_tokens.shape[1])
      cache = cache.replace(cross_kv=self._cross_kv(params, encoder_tokens, encoder_segments),
                            encoder_segments=encoder_segments)
    segments = key_segments[:, :length]
    mask = self._mask(segments, key_segments, causal=True)
    hidden, kv = self._apply(params, "decode", tokens, key_positions[:, :length], key_positions,
                             mask, kv=empty, index=0,
                             **self._cross_args(segments, cache.cross_kv, cache.encoder_segments))
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
    return self._apply(params, "logits", last), cache.replace(kv=kv)

  def decode_step(self, params: Params, cache: Cache, tokens: Array) -> tuple[Array, Cache]:
    """Feeds one token per row, tokens [B]; returns the next logits [B, V] and the cache."""
    index, positions = cache.index, cache.next_positions
    key_segments = cache.key_segments.at[:, index].set(1)
    key_positions = cache.key_positions.at[:, index].set(positions)
    segments = jnp.ones((tokens.shape[0], 1), jnp.int32)
    # The cache holds only each row's past and current tokens: no causal mask needed.
    mask = self._mask(segments, key_segments)
    hidden, kv = self._apply(params, "decode", tokens[:, None], positions[:, None], key_positions,
                             mask, kv=cache.kv, index=index,
                             **self._cross_args(segments, cache.cross_kv, cache.encoder_segments))
    cache = cache.replace(index=index + 1, next_positions=positions + 1,
                          key_positions=key_positions, key_segments=key_segments, kv=kv)
    return self._apply(params, "logits", hidden[:, 0]), cache


def build(config: ModelConfig, attention: Policy | None = None) -> Model:
  """The `Model` of `config` (attention: when to go blockwise; None: attention.AUTO)."""
  return Model(config, attention)
