"""Top-level networks: the parameter trees T5X checkpoints hold, one per architecture.

Every network offers the same methods to `Model`:
  decode(tokens, positions, key_positions, mask, kv=None, index=0, **cross) -> (hidden, kv)
  logits(hidden) -> float32 logits
and the encoder-decoder also `encode(tokens, mask)` and `cross_kv(encoded)`; masks are
`masks.Mask`s.
`__call__` runs every parameter once and is only used to create them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from invscale_jax.models import decoder, layers, t5
from invscale_jax.models.config import DECODER_ARCHITECTURES, ModelConfig
from invscale_jax.models.masks import Mask

Array = jax.Array


def _causal_inputs(tokens: Array) -> tuple[Array, Mask]:
  """Positions and causal mask of unpacked rows without padding."""
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  segments = jnp.ones_like(tokens)
  return positions, Mask(segments, segments, causal=True)


class DecoderOnly(nn.Module):
  """A decoder stack under `decoder/` (T5X decoder_only layout): T5X's own, or one of
  models/decoder.py (gpt_neox, opt, llama, gpt2)."""

  config: ModelConfig

  def setup(self):
    stack = decoder.Decoder if self.config.architecture in DECODER_ARCHITECTURES else t5.Decoder
    self.decoder = stack(self.config)

  def decode(self, *args, **kwargs) -> tuple[Array, list[layers.KV]]:
    return self.decoder(*args, **kwargs)

  def logits(self, y: Array) -> Array:
    return self.decoder.logits(y)

  def __call__(self, tokens: Array) -> Array:
    positions, mask = _causal_inputs(tokens)
    hidden, _ = self.decode(tokens, positions, positions, mask)
    return self.logits(hidden)


class EncoderDecoder(nn.Module):
  """T5 (v1.1, Flan): `token_embedder` shared by `encoder/` and `decoder/`."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype)
    self.encoder = t5.Encoder(cfg, self.token_embedder)
    self.decoder = t5.Decoder(cfg, self.token_embedder, cross_attention=True)

  def encode(self, tokens: Array, mask: Mask) -> Array:
    return self.encoder(tokens, mask)

  def cross_kv(self, encoded: Array) -> list[layers.KV]:
    return self.decoder.cross_kv(encoded)

  def decode(self, *args, **kwargs) -> tuple[Array, list[layers.KV]]:
    return self.decoder(*args, **kwargs)

  def logits(self, y: Array) -> Array:
    return self.decoder.logits(y)

  def __call__(self, encoder_tokens: Array, tokens: Array) -> Array:
    encoder_segments = jnp.ones_like(encoder_tokens)
    encoded = self.encode(encoder_tokens, Mask(encoder_segments, encoder_segments))
    positions, mask = _causal_inputs(tokens)
    cross_mask = Mask(jnp.ones_like(tokens), encoder_segments)
    hidden, _ = self.decode(tokens, positions, positions, mask, cross_kv=self.cross_kv(encoded),
                            cross_mask=cross_mask)
    return self.logits(hidden)


def build(config: ModelConfig) -> nn.Module:
  """The network for `config.architecture`."""
  if config.architecture == "encoder_decoder":
    return EncoderDecoder(config)
  return DecoderOnly(config)
