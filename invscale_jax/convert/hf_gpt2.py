"""Hugging Face GPT-2 -> our `gpt2` network (names: models/decoder.py).

  convert("gpt2-medium/", "~/checkpoints/gpt2-medium")

GPT-2 stores its projections as Conv1D weights, [in, out] as T5X kernels are, so they are
not transposed; the fused `c_attn` [emb, 3 * emb] is split into query, key and value
(contiguous thirds). Hub files name tensors `h.*`, `wte`, ...; files transformers writes
`transformer.h.*`; old ones also hold the causal-mask buffers `attn.bias`/`masked_bias`.
"""

from __future__ import annotations

import pathlib

import numpy as np

from invscale_jax.convert import hf
from invscale_jax.models.config import ModelConfig

_STACK = r"(?:transformer\.)?"
_LAYER = _STACK + r"h\.(\d+)\."
_OUT = "decoder/layers_{0}/"


def _third(index: int) -> hf.Transform:
  """Query (0), key (1) or value (2) of the fused c_attn weight or bias (last axis)."""
  def transform(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.split(x, 3, axis=-1)[index])
  return transform


def _rules(config: ModelConfig, src_dir: pathlib.Path) -> list[hf.Rule]:
  del src_dir  # the names do not depend on which tensors the files hold
  fused = [rule for i, name in enumerate(("query", "key", "value"))
           for rule in hf.linear(_LAYER + r"attn\.c_attn", _OUT + f"self_attention/{name}",
                                 transform=_third(i), bias_transform=_third(i))]
  return [
      (_STACK + r"wte\.weight", "decoder/token_embedder/embedding", hf.keep),
      (_STACK + r"wpe\.weight", "decoder/position_embedder/embedding", hf.keep),
      *hf.norm(_STACK + r"ln_f", "decoder/decoder_norm"),
      *hf.norm(_LAYER + r"ln_1", _OUT + "pre_self_attention_layer_norm"),
      *hf.norm(_LAYER + r"ln_2", _OUT + "pre_mlp_layer_norm"),
      *fused,
      *hf.linear(_LAYER + r"attn\.c_proj", _OUT + "self_attention/out", transform=hf.keep),
      *hf.linear(_LAYER + r"mlp\.c_fc", _OUT + "mlp/wi", transform=hf.keep),
      *hf.linear(_LAYER + r"mlp\.c_proj", _OUT + "mlp/wo", transform=hf.keep),
      *hf.output_layer(config.logits_via_embedding),
      (_LAYER + r"attn\.(?:bias|masked_bias)", None, None),
  ]


def config_from_hf(hf_config: dict, dtype: str = "bfloat16") -> ModelConfig:
  """Our config of a HF GPT2Config (config.json as a dict)."""
  if (hf_config.get("scale_attn_by_inverse_layer_idx") or hf_config.get("reorder_and_upcast_attn")
      or not hf_config.get("scale_attn_weights", True)):
    raise ValueError("only GPT-2's own attention scaling (scale_attn_weights, no per-layer "
                     "scaling or reordering) is supported")
  hidden, heads = hf_config["n_embd"], hf_config["n_head"]
  return ModelConfig(
      architecture="gpt2", vocab_size=hf_config["vocab_size"], emb_dim=hidden, num_heads=heads,
      head_dim=hf.head_dim(hidden, heads, ("n_embd", "n_head")),
      mlp_dim=hf_config.get("n_inner") or 4 * hidden,
      num_layers=hf_config["n_layer"],
      mlp_activations=hf.mlp_config(hf_config.get("activation_function", "gelu_new"),
                                    gated=False),
      logits_via_embedding=hf_config.get("tie_word_embeddings", True),
      norm_eps=hf_config.get("layer_norm_epsilon", 1e-5),
      max_positions=hf_config["n_positions"], dtype=dtype)


CONVERTER = hf.Converter(("gpt2",), config_from_hf, _rules)
