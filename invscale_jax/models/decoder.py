"""Decoder-only stacks of GPT-NeoX (Pythia), OPT, Llama-style (Llama, Qwen2, Mistral,
SmolLM2) and GPT-2 models: one configurable block, T5X-flavoured parameter names.

Parameter names under the stack (the network puts it under `decoder/`)::

  token_embedder/embedding [vocab, emb]            ([vocab, embed_proj_dim] with a projection)
  position_embedder/embedding [max_positions + offset, emb]   learned positions (opt, gpt2)
  project_in/kernel, project_out/kernel            embed_proj_dim <-> emb (opt 350m)
  layers_{i}/pre_self_attention_layer_norm/scale (,bias)      post_... with post_norm
  layers_{i}/self_attention/{query,key,value,out}/kernel (,bias)
  layers_{i}/pre_mlp_layer_norm/scale (,bias)                 post_... with post_norm
  layers_{i}/mlp/{wi | wi_0, wi_1; wo}/kernel (,bias)
  decoder_norm/scale (,bias)                       absent with post_norm
  logits_dense/kernel [emb, vocab]                 absent with logits_via_embedding

What differs by architecture (config.py holds each one's values): RMSNorm (llama) or
LayerNorm with bias; rotary embeddings (gpt_neox: part of each head; llama: all of it,
with theta and scaling) or a learned position table read at `positions` + offset (opt:
2, gpt2: 0); grouped-query attention and a sliding window (llama); biases; the parallel
residual x + attn(ln1(x)) + mlp(ln2(x)) (gpt_neox); norms after each residual (opt
350m). Attention logits are scaled by 1/sqrt(head_dim) at run time. The converters in
convert/hf_*.py give each Hugging Face tensor's name here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from invscale_jax.models import layers
from invscale_jax.models.config import ModelConfig
from invscale_jax.models.masks import Mask

Array = jax.Array


def _norm(config: ModelConfig, name: str | None = None) -> nn.Module:
  norm = layers.RMSNorm if config.architecture == "llama" else layers.LayerNorm
  return norm(config.norm_eps, config.activation_dtype, name=name)


class DecoderLayer(nn.Module):
  """One block; `kv` is this layer's cache, written at slot `index`."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, mask: Mask, positions: Array, key_positions: Array,
               kv: layers.KV | None, index: Array | int) -> tuple[Array, layers.KV]:
    cfg = self.config
    dtype = cfg.activation_dtype
    attention = layers.Attention(
        cfg.emb_dim, cfg.num_heads, cfg.head_dim, dtype, num_kv_heads=cfg.kv_heads,
        qkv_bias=cfg.value("qkv_bias"), out_bias=cfg.value("out_bias"), runtime_scaling=True,
        rotary=cfg.rotary, name="self_attention")
    mlp = layers.MLP(cfg.mlp_dim, cfg.mlp_activations, use_bias=cfg.value("mlp_bias"),
                     dtype=dtype, name="mlp")
    where = "post" if cfg.post_norm else "pre"
    attention_norm = _norm(cfg, f"{where}_self_attention_layer_norm")
    mlp_norm = _norm(cfg, f"{where}_mlp_layer_norm")

    def attend(y: Array) -> tuple[Array, layers.KV]:
      new_kv = layers.write_kv(kv, attention.kv(y), index)
      return attention(y, new_kv, mask, positions=positions, key_positions=key_positions), new_kv

    if cfg.post_norm:
      attended, kv = attend(x)
      x = attention_norm(x + attended)
      return mlp_norm(x + mlp(x)), kv
    attended, kv = attend(attention_norm(x))
    if cfg.value("parallel_residual"):
      return x + attended + mlp(mlp_norm(x)), kv
    x = x + attended
    return x + mlp(mlp_norm(x)), kv


class Decoder(nn.Module):
  """Embeddings, layers, final norm and output layer (tied or not)."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    dtype = cfg.activation_dtype
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.embed_proj_dim or cfg.emb_dim, dtype)
    if cfg.position_offset is not None:
      self.position_embedder = layers.Embed(cfg.max_positions + cfg.position_offset,
                                            cfg.emb_dim, dtype, axes=("abspos_buckets", "embed"))
    if cfg.embed_proj_dim:
      self.project_in = layers.Dense(cfg.emb_dim, ("embed_proj", "embed"), dtype=dtype)
      self.project_out = layers.Dense(cfg.embed_proj_dim, ("embed", "embed_proj"), dtype=dtype)
    self.layers = [DecoderLayer(cfg) for _ in range(cfg.num_layers)]
    if not cfg.post_norm:
      self.decoder_norm = _norm(cfg)
    if not cfg.logits_via_embedding:
      self.logits_dense = layers.Dense(cfg.vocab_size, ("embed", "vocab"), dtype=jnp.float32)

  def __call__(self, tokens: Array, positions: Array, key_positions: Array, mask: Mask,
               kv: list[layers.KV] | None = None,
               index: Array | int = 0) -> tuple[Array, list[layers.KV]]:
    """Final hidden states [B, Q, emb] and per-layer keys/values (see t5.Decoder)."""
    cfg = self.config
    x = self.token_embedder(tokens)
    if cfg.embed_proj_dim:
      x = self.project_in(x)
    if cfg.position_offset is not None:
      x = x + self.position_embedder(positions + cfg.position_offset)
    mask = mask.with_window(cfg.sliding_window, positions, key_positions)
    new_kv = []
    for i, layer in enumerate(self.layers):
      x, layer_kv = layer(x, mask, positions, key_positions, None if kv is None else kv[i], index)
      new_kv.append(layer_kv)
    if not cfg.post_norm:
      x = self.decoder_norm(x)
    return self.project_out(x) if cfg.embed_proj_dim else x, new_kv

  def logits(self, y: Array) -> Array:
    """float32 logits [..., vocab] of final hidden states."""
    if self.config.logits_via_embedding:
      return self.token_embedder.attend(y)
    return self.logits_dense(y.astype(jnp.float32))
