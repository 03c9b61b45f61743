"""Tiny random Hugging Face models of every supported decoder-only family and of T5, each
saved with a byte-level BPE tokenizer set up as the real family's is (the files and the
special-token convention), for parity tests against transformers. Nothing is downloaded."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Sequence

import torch
import transformers

VOCAB = 512  # the models' vocabulary; the tokenizers use ~480 ids of it

# kind -> (what transformers builds, what the tokenizer puts first: a special token or None).
KINDS = {
    "gpt_neox": "Pythia: partial rotary, parallel residual, untied; nothing prepended",
    "opt": "OPT-125m and larger: pre-LN, tied; the tokenizer prepends </s>",
    "opt_350m": "OPT-350m: post-LN, 32-wide embeddings projected in and out",
    "llama": "Llama 3: grouped-query attention, llama3 rotary scaling, untied; BOS prepended",
    "qwen2": "Qwen2.5: q/k/v biases, tied, grouped-query attention; nothing prepended",
    "mistral": "Mistral: sliding window, linear rotary scaling; <s> prepended",
    "gpt2": "GPT-2: learned positions, Conv1D weights, tied; nothing prepended",
    "t5": "Flan-T5: gated-gelu, untied; the tokenizer appends </s> (ids: <pad> 0, </s> 1)",
}
BOS = {"gpt_neox": None, "opt": "</s>", "opt_350m": "</s>", "llama": "<|begin_of_text|>", "qwen2": None,
       "mistral": "<s>", "gpt2": None, "t5": None}


def randomize(model: torch.nn.Module) -> None:
  """Weights large enough for peaked, position-dependent predictions (HF's init is ~0.02)."""
  torch.manual_seed(0)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.dim() > 1:
        p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]))
      elif "norm" in name and name.endswith("weight"):
        p.normal_(1.0, 0.2)
      else:
        p.normal_(0.0, 0.2)


def _config(kind: str) -> transformers.PretrainedConfig:
  if kind == "t5":
    return transformers.T5Config(
        vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
        num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  small = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
  if kind in ("opt", "opt_350m"):
    return transformers.OPTConfig(
        **small, ffn_dim=128, max_position_embeddings=512, do_layer_norm_before=kind == "opt",
        word_embed_proj_dim=32 if kind == "opt_350m" else 64, pad_token_id=1, bos_token_id=2,
        eos_token_id=2, dropout=0.0)
  if kind == "gpt_neox":
    return transformers.GPTNeoXConfig(**small, intermediate_size=256, rotary_pct=0.25,
                                      max_position_embeddings=2048, use_parallel_residual=True,
                                      tie_word_embeddings=False)
  if kind == "gpt2":
    return transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4,
                                   n_positions=512, bos_token_id=0, eos_token_id=0)
  llama = dict(small, intermediate_size=96, num_key_value_heads=2)
  if kind == "qwen2":
    return transformers.Qwen2Config(**llama, tie_word_embeddings=True, rope_parameters=dict(
        rope_type="default", rope_theta=1e6))
  if kind == "mistral":
    return transformers.MistralConfig(**llama, sliding_window=16, rope_parameters=dict(
        rope_type="linear", factor=2.0, rope_theta=1000.0))
  return transformers.LlamaConfig(**llama, tie_word_embeddings=False, rope_parameters=dict(
      rope_type="llama3", rope_theta=500.0, factor=4.0, low_freq_factor=1.0,
      high_freq_factor=4.0, original_max_position_embeddings=64))


def _tokenizer(kind: str, texts: Sequence[str], out: pathlib.Path) -> None:
  """A BPE trained on `texts`, saved with the files and conventions of the family's own."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, pre_tokenizers, processors  # pylint: disable=g-import-not-at-top

  specials = {"opt": ["<s>", "<pad>", "</s>", "<unk>"], "llama": ["<|begin_of_text|>",
              "<|end_of_text|>"], "mistral": ["<unk>", "<s>", "</s>"],
              "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
              "gpt2": ["<|endoftext|>"], "gpt_neox": ["<|endoftext|>"],
              "t5": ["<pad>", "</s>", "<unk>"]}[kind.removesuffix("_350m")]
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
      vocab_size=480, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
  bos = BOS[kind]
  if kind in ("llama", "mistral"):  # the BOS comes from tokenizer.json's post-processor
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tokenizer.token_to_id(bos))])])
  if kind == "t5":  # Flan-T5's tokenizer.json post-processor: `$A </s>`
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
  tokenizer.model.save(str(out))  # vocab.json and merges.txt
  if not kind.startswith("opt"):  # OPT ships no tokenizer.json
    tokenizer.save(str(out / "tokenizer.json"))
  config = {
      # OPT's tokenizer_config.json: GPT-2's tokenizer told to add </s> first.
      "opt": dict(tokenizer_class="GPT2Tokenizer", add_bos_token=True, bos_token="</s>",
                  eos_token="</s>", unk_token="</s>", pad_token="<pad>", add_prefix_space=False),
      "llama": dict(tokenizer_class="PreTrainedTokenizerFast", bos_token="<|begin_of_text|>",
                    eos_token="<|end_of_text|>"),
      "mistral": dict(tokenizer_class="PreTrainedTokenizerFast", add_bos_token=True,
                      bos_token="<s>", eos_token="</s>", unk_token="<unk>"),
      "qwen2": dict(tokenizer_class="Qwen2Tokenizer", bos_token=None, eos_token="<|endoftext|>",
                    pad_token="<|endoftext|>", add_prefix_space=False),
      "gpt2": dict(model_max_length=1024),
      # Pythia's: <|endoftext|> is BOS and EOS, and encoding adds neither.
      "gpt_neox": dict(tokenizer_class="PreTrainedTokenizerFast", bos_token="<|endoftext|>",
                       eos_token="<|endoftext|>", unk_token="<|endoftext|>"),
      "t5": dict(tokenizer_class="PreTrainedTokenizerFast", eos_token="</s>", pad_token="<pad>",
                 unk_token="<unk>"),
  }[kind.removesuffix("_350m")]
  (out / "tokenizer_config.json").write_text(json.dumps(config))


def make(kind: str, out: pathlib.Path, texts: Sequence[str]) -> pathlib.Path:
  """Saves a random tiny model of `kind` with its tokenizer into `out`; returns `out`."""
  model = (transformers.T5ForConditionalGeneration(_config(kind)) if kind == "t5" else
           transformers.AutoModelForCausalLM.from_config(_config(kind)))
  randomize(model)
  model.eval().save_pretrained(out)
  _tokenizer(kind, texts, out)
  return out
