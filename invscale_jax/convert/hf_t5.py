"""Hugging Face T5 (T5ForConditionalGeneration: T5 v1.1, Flan-T5) -> our encoder_decoder.

  convert("flan-t5-small/", "~/checkpoints/flan_t5_small", step=1198000)

HF T5, like T5X, does not scale attention logits by 1/sqrt(head_dim) (the scale lives in
the trained query weights), so kernels are only transposed. For the output layer see
`_logits_rules`.
"""

from __future__ import annotations

import pathlib

from invscale_jax.convert import hf
from invscale_jax.models.config import ModelConfig

_ATTENTION = {"q": "query", "k": "key", "v": "value", "o": "out"}
_ENC = r"encoder\.block\.(\d+)\.layer\."
_DEC = r"decoder\.block\.(\d+)\.layer\."
_MLP = r"DenseReluDense\.(wi|wi_\d+|wo)\.weight"


def _logits_rules(logits_via_embedding: bool, has_lm_head: bool) -> list[hf.Rule]:
  """Where the output layer comes from.

  HF T5 scales the decoder output by 1/sqrt(d_model) exactly when the embedding is tied
  (original T5): that is our `logits_via_embedding`, and `lm_head` is a copy then.
  Otherwise (T5 v1.1, Flan-T5) `lm_head` is the output layer; transformers >= 5 leaves it
  out of the file when it equals `shared`.
  """
  if logits_via_embedding:
    return [(r"lm_head\.weight", None, None)]
  if has_lm_head:
    return [(r"lm_head\.weight", "decoder/logits_dense/kernel", hf.transpose)]
  return [(r"shared\.weight", "decoder/logits_dense/kernel", hf.transpose)]


def _rules(logits_via_embedding: bool, has_lm_head: bool) -> list[hf.Rule]:
  return [
      (r"shared\.weight", "token_embedder/embedding", hf.keep),
      (r"(encoder|decoder)\.embed_tokens\.weight", None, None),  # copies of shared.weight
      *_logits_rules(logits_via_embedding, has_lm_head),
      (r"(encoder|decoder)\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
       "{0}/relpos_bias/rel_embedding", hf.transpose),
      # Unused by HF too (old checkpoints store it).
      (_DEC + r"1\.EncDecAttention\.relative_attention_bias\.weight", None, None),
      (r"(encoder|decoder)\.final_layer_norm\.weight", "{0}/{0}_norm/scale", hf.keep),
      (_ENC + r"0\.layer_norm\.weight", "encoder/layers_{0}/pre_attention_layer_norm/scale",
       hf.keep),
      (_ENC + r"0\.SelfAttention\.([qkvo])\.weight", "encoder/layers_{0}/attention/{1}/kernel",
       hf.transpose),
      (_ENC + r"1\.layer_norm\.weight", "encoder/layers_{0}/pre_mlp_layer_norm/scale", hf.keep),
      (_ENC + r"1\." + _MLP, "encoder/layers_{0}/mlp/{1}/kernel", hf.transpose),
      (_DEC + r"0\.layer_norm\.weight", "decoder/layers_{0}/pre_self_attention_layer_norm/scale",
       hf.keep),
      (_DEC + r"0\.SelfAttention\.([qkvo])\.weight", "decoder/layers_{0}/self_attention/{1}/kernel",
       hf.transpose),
      (_DEC + r"1\.layer_norm\.weight", "decoder/layers_{0}/pre_cross_attention_layer_norm/scale",
       hf.keep),
      (_DEC + r"1\.EncDecAttention\.([qkvo])\.weight",
       "decoder/layers_{0}/encoder_decoder_attention/{1}/kernel", hf.transpose),
      (_DEC + r"2\.layer_norm\.weight", "decoder/layers_{0}/pre_mlp_layer_norm/scale", hf.keep),
      (_DEC + r"2\." + _MLP, "decoder/layers_{0}/mlp/{1}/kernel", hf.transpose),
  ]


def config_from_hf(hf_config: dict, dtype: str = "bfloat16") -> ModelConfig:
  """Our config of a HF T5Config (config.json as a dict)."""
  projection = hf_config.get("feed_forward_proj", "relu")
  gated = projection.startswith("gated-")
  act = hf.activation("gelu_new" if projection == "gated-gelu" else projection.split("-")[-1])
  return ModelConfig(
      architecture="encoder_decoder", vocab_size=hf_config["vocab_size"],
      emb_dim=hf_config["d_model"], num_heads=hf_config["num_heads"],
      head_dim=hf_config["d_kv"], mlp_dim=hf_config["d_ff"],
      num_encoder_layers=hf_config["num_layers"],
      num_decoder_layers=hf_config.get("num_decoder_layers") or hf_config["num_layers"],
      mlp_activations=(act, "linear") if gated else (act,),
      # transformers >= 5 writes scale_decoder_outputs; older files tie_word_embeddings.
      logits_via_embedding=hf_config.get("scale_decoder_outputs",
                                         hf_config.get("tie_word_embeddings", True)),
      norm_eps=hf_config.get("layer_norm_epsilon", 1e-6),
      relpos_buckets=hf_config.get("relative_attention_num_buckets", 32),
      relpos_max_distance=hf_config.get("relative_attention_max_distance", 128), dtype=dtype)


def _rules_of(config: ModelConfig, src_dir: pathlib.Path) -> list[hf.Rule]:
  return _rules(config.logits_via_embedding, "lm_head.weight" in hf.tensor_names(src_dir))


CONVERTER = hf.Converter(("t5",), config_from_hf, _rules_of, _ATTENTION)
