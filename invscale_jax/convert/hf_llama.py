"""Hugging Face Llama-style models (model_type llama, mistral, qwen2: Llama 2/3, Mistral,
Qwen2/2.5, SmolLM2) -> our `llama` network (names: models/decoder.py).

  convert("Qwen2.5-0.5B/", "~/checkpoints/qwen2.5-0.5b")

RMSNorm, SwiGLU MLP (gate_proj -> wi_0, up_proj -> wi_1, down_proj -> wo), rotary
embeddings on whole heads with the config's theta and scaling (none, linear or llama3:
see config.Rotary), grouped-query attention, biases on q/k/v (Qwen2) or on every
projection (Llama's attention_bias), tied or untied embeddings, Mistral's sliding window.
"""

from __future__ import annotations

import pathlib

from invscale_jax.convert import hf
from invscale_jax.models.config import ModelConfig

MODEL_TYPES = ("llama", "mistral", "qwen2")
_LAYER = r"model\.layers\.(\d+)\."
_OUT = "decoder/layers_{0}/"
_NAMES = {"q": "query", "k": "key", "v": "value", "o": "out", "gate": "wi_0", "up": "wi_1",
          "down": "wo"}
# rope_parameters keys that are not scaling parameters.
_ROPE_BASE_KEYS = ("rope_theta", "partial_rotary_factor")


def _rules(config: ModelConfig, src_dir: pathlib.Path) -> list[hf.Rule]:
  del src_dir  # the names do not depend on which tensors the files hold
  return [
      (r"model\.embed_tokens\.weight", "decoder/token_embedder/embedding", hf.keep),
      *hf.norm(r"model\.norm", "decoder/decoder_norm", bias=False),
      *hf.norm(_LAYER + r"input_layernorm", _OUT + "pre_self_attention_layer_norm", bias=False),
      *hf.norm(_LAYER + r"post_attention_layernorm", _OUT + "pre_mlp_layer_norm", bias=False),
      *hf.linear(_LAYER + r"self_attn\.([qkv])_proj", _OUT + "self_attention/{1}",
                 bias=config.value("qkv_bias")),
      *hf.linear(_LAYER + r"self_attn\.(o)_proj", _OUT + "self_attention/{1}",
                 bias=config.value("out_bias")),
      *hf.linear(_LAYER + r"mlp\.(gate|up|down)_proj", _OUT + "mlp/{1}",
                 bias=config.value("mlp_bias")),
      *hf.output_layer(config.logits_via_embedding),
      (_LAYER + r"self_attn\.rotary_emb\.inv_freq", None, None),  # a buffer old files hold
  ]


def _rotary(hf_config: dict) -> tuple[float, float, tuple[tuple[str, object], ...]]:
  """(rotary_pct, theta, scaling items) from transformers >= 5's rope_parameters or the
  older rope_theta / rope_scaling / partial_rotary_factor."""
  rope = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
  theta = rope.get("rope_theta", hf_config.get("rope_theta", 10000.0))
  pct = rope.get("partial_rotary_factor", hf_config.get("partial_rotary_factor", 1.0))
  kind = rope.get("rope_type", rope.get("type", "default"))
  scaling = () if kind == "default" else tuple(
      (k, v) for k, v in rope.items() if k not in _ROPE_BASE_KEYS)
  return pct, theta, scaling


def config_from_hf(hf_config: dict, dtype: str = "bfloat16") -> ModelConfig:
  """Our config of a HF LlamaConfig, MistralConfig or Qwen2Config (config.json as a dict)."""
  model_type = hf_config.get("model_type", "llama")
  if hf_config.get("use_sliding_window") and model_type == "qwen2":
    raise ValueError("Qwen2 with use_sliding_window (per-layer windows) is not supported")
  hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
  bias = hf_config.get("attention_bias", False)
  rotary_pct, theta, scaling = _rotary(hf_config)
  return ModelConfig(
      architecture="llama", vocab_size=hf_config["vocab_size"], emb_dim=hidden,
      num_heads=heads, head_dim=hf_config.get("head_dim") or hf.head_dim(
          hidden, heads, ("hidden_size", "num_attention_heads")),
      num_kv_heads=hf_config.get("num_key_value_heads") or heads,
      mlp_dim=hf_config["intermediate_size"], num_layers=hf_config["num_hidden_layers"],
      mlp_activations=hf.mlp_config(hf_config.get("hidden_act", "silu"), gated=True),
      logits_via_embedding=hf_config.get("tie_word_embeddings", False),
      norm_eps=hf_config.get("rms_norm_eps", 1e-6), rotary_pct=rotary_pct, rotary_base=theta,
      rotary_scaling=scaling, qkv_bias=model_type == "qwen2" or bias,
      out_bias=model_type != "qwen2" and bias, mlp_bias=hf_config.get("mlp_bias", False),
      sliding_window=(model_type == "mistral" and hf_config.get("sliding_window")) or 0,
      dtype=dtype)


CONVERTER = hf.Converter(MODEL_TYPES, config_from_hf, _rules, _NAMES)
