"""Hugging Face GPT-NeoX / Pythia -> our `gpt_neox` network (names: models/decoder.py).

  convert("pythia-70m/", "~/checkpoints/pythia-70m", step=143000)

The source directory holds config.json, model.safetensors or pytorch_model.bin (or their
sharded index) and tokenizer.json.
"""

from __future__ import annotations

import pathlib

import numpy as np

from invscale_jax.convert import hf
from invscale_jax.models.config import ModelConfig

_LAYER = r"gpt_neox\.layers\.(\d+)\."
_OUT = "decoder/layers_{0}/"


def _qkv_part(index: int, num_heads: int, weight: bool) -> hf.Transform:
  """Extracts q (0), k (1) or v (2) from HF's fused projection, whose output rows are
  ordered [heads, 3, head_dim]."""
  def transform(x: np.ndarray) -> np.ndarray:
    part = x.reshape(num_heads, 3, -1, *x.shape[1:])[:, index].reshape(-1, *x.shape[1:])
    return hf.transpose(part) if weight else part
  return transform


def _qkv(num_heads: int) -> list[hf.Rule]:
  """Rules splitting HF's fused `query_key_value` into query, key and value."""
  fused = _LAYER + r"attention\.query_key_value\."
  rules = []
  for i, name in enumerate(("query", "key", "value")):
    out = _OUT + f"self_attention/{name}/"
    rules.append((fused + "weight", out + "kernel", _qkv_part(i, num_heads, weight=True)))
    rules.append((fused + "bias", out + "bias", _qkv_part(i, num_heads, weight=False)))
  return rules


def _rules(config: ModelConfig, src_dir: pathlib.Path) -> list[hf.Rule]:
  del src_dir  # the names do not depend on which tensors the files hold
  return [
      (r"gpt_neox\.embed_in\.weight", "decoder/token_embedder/embedding", hf.keep),
      # transformers >= 5 calls the output layer lm_head in memory, embed_out in files.
      (r"(?:embed_out|lm_head)\.weight", "decoder/logits_dense/kernel", hf.transpose),
      *hf.norm(r"gpt_neox\.final_layer_norm", "decoder/decoder_norm"),
      *hf.norm(_LAYER + r"input_layernorm", _OUT + "pre_self_attention_layer_norm"),
      *hf.norm(_LAYER + r"post_attention_layernorm", _OUT + "pre_mlp_layer_norm"),
      *_qkv(config.num_heads),
      *hf.linear(_LAYER + r"attention\.dense", _OUT + "self_attention/out"),
      *hf.linear(_LAYER + r"mlp\.dense_h_to_4h", _OUT + "mlp/wi"),
      *hf.linear(_LAYER + r"mlp\.dense_4h_to_h", _OUT + "mlp/wo"),
      # Buffers some checkpoints store: the causal mask and the rotary frequencies.
      (_LAYER + r"attention\.(?:bias|masked_bias|rotary_emb\.inv_freq)", None, None),
  ]


def config_from_hf(hf_config: dict, dtype: str = "bfloat16") -> ModelConfig:
  """Our config of a HF GPTNeoXConfig (config.json as a dict)."""
  if hf_config.get("tie_word_embeddings", False) or not hf_config.get("attention_bias", True):
    raise ValueError("only untied GPT-NeoX models with attention biases (as Pythia) are supported")
  # transformers >= 5 writes rope_parameters; older config.json files rotary_pct,
  # rotary_emb_base and rope_scaling (null for Pythia).
  rope = hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise ValueError(f"unsupported rotary embedding type {rope_type!r}")
  heads, hidden = hf_config["num_attention_heads"], hf_config["hidden_size"]
  return ModelConfig(
      architecture="gpt_neox", vocab_size=hf_config["vocab_size"], emb_dim=hidden,
      num_heads=heads,
      head_dim=hf.head_dim(hidden, heads, ("hidden_size", "num_attention_heads")),
      mlp_dim=hf_config["intermediate_size"],
      num_layers=hf_config["num_hidden_layers"],
      mlp_activations=hf.mlp_config(hf_config["hidden_act"], gated=False),
      norm_eps=hf_config["layer_norm_eps"],
      rotary_pct=rope.get("partial_rotary_factor", hf_config.get("rotary_pct", 0.25)),
      rotary_base=rope.get("rope_theta", hf_config.get("rotary_emb_base", 10000.0)),
      parallel_residual=hf_config.get("use_parallel_residual", True), dtype=dtype)


CONVERTER = hf.Converter(("gpt_neox",), config_from_hf, _rules)
