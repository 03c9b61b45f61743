"""Hugging Face OPT -> our `opt` network (names: models/decoder.py).

  convert("opt-125m/", "~/checkpoints/opt-125m")

The source directory holds config.json, the weights (model.safetensors or
pytorch_model.bin, or their sharded index; Hub files name tensors `decoder.*`, those
transformers writes `model.decoder.*`) and the tokenizer (vocab.json + merges.txt).
OPT-350m has LayerNorms after each residual and no final one, and 512-wide token
embeddings projected in and out of the 1024-wide layers.
"""

from __future__ import annotations

import pathlib

from invscale_jax.convert import hf
from invscale_jax.models.config import ModelConfig

_DECODER = r"(?:model\.)?decoder\."
_LAYER = _DECODER + r"layers\.(\d+)\."
_OUT = "decoder/layers_{0}/"
_ATTENTION = {"q": "query", "k": "key", "v": "value", "out": "out"}


def _rules(config: ModelConfig, src_dir: pathlib.Path) -> list[hf.Rule]:
  del src_dir  # the names do not depend on which tensors the files hold
  where = "post" if config.post_norm else "pre"
  return [
      (_DECODER + r"embed_tokens\.weight", "decoder/token_embedder/embedding", hf.keep),
      (_DECODER + r"embed_positions\.weight", "decoder/position_embedder/embedding", hf.keep),
      *hf.linear(_DECODER + r"project_in", "decoder/project_in", bias=False),
      *hf.linear(_DECODER + r"project_out", "decoder/project_out", bias=False),
      *hf.norm(_DECODER + r"final_layer_norm", "decoder/decoder_norm"),
      *hf.norm(_LAYER + r"self_attn_layer_norm", _OUT + f"{where}_self_attention_layer_norm"),
      *hf.linear(_LAYER + r"self_attn\.(q|k|v|out)_proj", _OUT + "self_attention/{1}"),
      *hf.norm(_LAYER + r"final_layer_norm", _OUT + f"{where}_mlp_layer_norm"),
      *hf.linear(_LAYER + r"fc1", _OUT + "mlp/wi"),
      *hf.linear(_LAYER + r"fc2", _OUT + "mlp/wo"),
      *hf.output_layer(config.logits_via_embedding),
  ]


def config_from_hf(hf_config: dict, dtype: str = "bfloat16") -> ModelConfig:
  """Our config of a HF OPTConfig (config.json as a dict)."""
  if not hf_config.get("layer_norm_elementwise_affine", True) or hf_config.get(
      "_remove_final_layer_norm", False) or not hf_config.get("enable_bias", True):
    raise ValueError("only OPT models with LayerNorm weights, biases and a final LayerNorm "
                     "(as facebook/opt-*) are supported")
  hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
  embed_dim = hf_config.get("word_embed_proj_dim") or hidden
  return ModelConfig(
      architecture="opt", vocab_size=hf_config["vocab_size"], emb_dim=hidden, num_heads=heads,
      head_dim=hf.head_dim(hidden, heads, ("hidden_size", "num_attention_heads")),
      mlp_dim=hf_config["ffn_dim"],
      num_layers=hf_config["num_hidden_layers"],
      mlp_activations=hf.mlp_config(hf_config["activation_function"], gated=False),
      logits_via_embedding=hf_config.get("tie_word_embeddings", True),
      norm_eps=1e-5,  # torch.nn.LayerNorm's default, which OPT uses
      max_positions=hf_config["max_position_embeddings"],
      embed_proj_dim=0 if embed_dim == hidden else embed_dim,
      post_norm=not hf_config.get("do_layer_norm_before", True), dtype=dtype)


CONVERTER = hf.Converter(("opt",), config_from_hf, _rules, _ATTENTION)
