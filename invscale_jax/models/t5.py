"""T5 encoder and decoder stacks (T5 v1.1 / Flan-T5 and T5X's decoder_only).

Parameter names under a stack, as in t5x/examples/t5 and t5x/examples/decoder_only::

  relpos_bias/rel_embedding                      [heads, buckets], shared by all layers
                                                 (relpos_per_layer: layers_{i}/relpos_bias/,
                                                 one per layer, as in t5x/examples/scalable_t5)
  layers_{i}/pre_attention_layer_norm/scale      encoder; decoder: pre_self_attention_layer_norm
  layers_{i}/attention/{query,key,value,out}/kernel   encoder; decoder: self_attention
  layers_{i}/pre_cross_attention_layer_norm/scale      decoder of encoder_decoder only
  layers_{i}/encoder_decoder_attention/{query,key,value,out}/kernel
  layers_{i}/pre_mlp_layer_norm/scale
  layers_{i}/mlp/{wi | wi_0, wi_1, ...; wo}/kernel
  encoder_norm/scale | decoder_norm/scale
  token_embedder/embedding  (decoder_only: inside the decoder; else shared, one level up)
  logits_dense/kernel       [emb, vocab] (decoder; absent with logits_via_embedding)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from invscale_jax.models import layers
from invscale_jax.models.config import ModelConfig
from invscale_jax.models.masks import Mask
from invscale_jax.models.position import RelativeBias, RelativePositionBias

Array = jax.Array


def _norm(config: ModelConfig, name: str | None = None) -> layers.RMSNorm:
  return layers.RMSNorm(config.norm_eps, config.activation_dtype, name=name)


def _attention(config: ModelConfig, name: str | None = None) -> layers.Attention:
  return layers.Attention(config.emb_dim, config.num_heads, config.head_dim,
                          config.activation_dtype, name=name)


def _mlp(config: ModelConfig, name: str | None = None) -> layers.MLP:
  return layers.MLP(config.mlp_dim, config.mlp_activations, dtype=config.activation_dtype,
                    name=name)


def _relpos_bias(config: ModelConfig, bidirectional: bool) -> RelativePositionBias:
  return RelativePositionBias(config.num_heads, bidirectional, config.relpos_buckets,
                              config.relpos_max_distance, name="relpos_bias")


class EncoderLayer(nn.Module):
  """Pre-norm bidirectional self-attention and MLP, each with a residual."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, mask: Mask, bias: RelativeBias | None, positions: Array) -> Array:
    """`bias` is the stack's shared position bias; None: this layer's own (relpos_per_layer)."""
    if bias is None:
      bias = _relpos_bias(self.config, bidirectional=True)(positions, positions)
    y = _norm(self.config, "pre_attention_layer_norm")(x)
    attention = _attention(self.config, "attention")
    x = x + attention(y, attention.kv(y), mask, bias)
    return x + _mlp(self.config, "mlp")(_norm(self.config, "pre_mlp_layer_norm")(x))


class Encoder(nn.Module):
  """T5 encoder stack over packed rows (segment ids; 0 is padding)."""

  config: ModelConfig
  embedding: layers.Embed

  @nn.compact
  def __call__(self, tokens: Array, mask: Mask) -> Array:
    """Encoded tokens [B, L]; `mask` is the bidirectional mask of their segment ids."""
    # Within a segment, key - query offsets equal index differences: no positions needed.
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    bias = None if self.config.relpos_per_layer else _relpos_bias(
        self.config, bidirectional=True)(positions, positions)
    x = self.embedding(tokens)
    for i in range(self.config.num_encoder_layers):
      x = EncoderLayer(self.config, name=f"layers_{i}")(x, mask, bias, positions)
    return _norm(self.config, "encoder_norm")(x)


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention, optional cross-attention, and MLP."""

  config: ModelConfig
  cross_attention: bool = False

  def setup(self):
    if self.config.relpos_per_layer:
      self.relpos_bias = _relpos_bias(self.config, bidirectional=False)
    self.pre_self_attention_layer_norm = _norm(self.config)
    self.self_attention = _attention(self.config)
    if self.cross_attention:
      self.pre_cross_attention_layer_norm = _norm(self.config)
      self.encoder_decoder_attention = _attention(self.config)
    self.pre_mlp_layer_norm = _norm(self.config)
    self.mlp = _mlp(self.config)

  def cross_kv(self, encoded: Array) -> layers.KV:
    """Keys and values of the encoder output for this layer's cross-attention."""
    return self.encoder_decoder_attention.kv(encoded)

  def __call__(self, x: Array, mask: Mask, bias: RelativeBias | None, kv: layers.KV | None,
               index: Array | int, cross: tuple[layers.KV, Mask] | None,
               positions: Array, key_positions: Array) -> tuple[Array, layers.KV]:
    """One layer; `kv` is this layer's cache (written at `index`), `cross` = (kv, mask);
    `bias` is the stack's shared position bias, None: this layer's own (relpos_per_layer)."""
    if bias is None:
      bias = self.relpos_bias(positions, key_positions)
    y = self.pre_self_attention_layer_norm(x)
    kv = layers.write_kv(kv, self.self_attention.kv(y), index)
    x = x + self.self_attention(y, kv, mask, bias)
    if cross is not None:
      x = x + self.encoder_decoder_attention(self.pre_cross_attention_layer_norm(x), *cross)
    return x + self.mlp(self.pre_mlp_layer_norm(x)), kv


class Decoder(nn.Module):
  """T5 decoder stack; owns `token_embedder` unless given a shared embedding."""

  config: ModelConfig
  shared_embedding: layers.Embed | None = None
  cross_attention: bool = False

  def setup(self):
    cfg = self.config
    if self.shared_embedding is None:
      self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype)
    if not cfg.relpos_per_layer:
      self.relpos_bias = _relpos_bias(cfg, bidirectional=False)
    self.layers = [DecoderLayer(cfg, self.cross_attention) for _ in range(cfg.decoder_layers)]
    self.decoder_norm = _norm(cfg)
    if not cfg.logits_via_embedding:
      self.logits_dense = layers.Dense(cfg.vocab_size, ("embed", "vocab"), dtype=jnp.float32)

  def _embedding(self) -> layers.Embed:
    return self.token_embedder if self.shared_embedding is None else self.shared_embedding

  def cross_kv(self, encoded: Array) -> list[layers.KV]:
    """Per-layer cross-attention keys and values of the encoder output."""
    return [layer.cross_kv(encoded) for layer in self.layers]

  def __call__(self, tokens: Array, positions: Array, key_positions: Array, mask: Mask,
               kv: list[layers.KV] | None = None, index: Array | int = 0,
               cross_kv: list[layers.KV] | None = None,
               cross_mask: Mask | None = None) -> tuple[Array, list[layers.KV]]:
    """Final hidden states [B, Q, emb] of tokens [B, Q] and the per-layer keys/values.

    With a cache `kv` (per layer, [B, T, H, D]) the new keys are written at slot `index`
    and attention runs over all T slots; `key_positions` [B, K] are the positions of the
    keys attended to (K = T with a cache, else Q).
    """
    bias = None if self.config.relpos_per_layer else self.relpos_bias(positions, key_positions)
    x = self._embedding()(tokens)
    new_kv = []
    for i, layer in enumerate(self.layers):
      cross = None if cross_kv is None else (cross_kv[i], cross_mask)
      x, layer_kv = layer(x, mask, bias, None if kv is None else kv[i], index, cross,
                          positions, key_positions)
      new_kv.append(layer_kv)
    return self.decoder_norm(x), new_kv

  def logits(self, y: Array) -> Array:
    """float32 logits [..., vocab] of final hidden states."""
    if self.config.logits_via_embedding:
      return self._embedding().attend(y) / jnp.sqrt(jnp.float32(y.shape[-1]))
    return self.logits_dense(y.astype(jnp.float32))

