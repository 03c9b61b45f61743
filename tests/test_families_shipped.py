"""The shipped OPT, Qwen2.5, SmolLM2 and GPT-2 manifests: each gin config is what the
converter derives from the model's published config.json (its dimensions are written out
below), and each manifest's N is transformers' own parameter count of that config
(counted on the meta device: nothing is allocated). Our network's count equals it for the
first model of each family (the parity tests show every tensor maps shape for shape)."""

from __future__ import annotations

import pytest
import torch
import transformers

from invscale_jax import family
from invscale_jax.convert import hf_dir
from invscale_jax.models.model import build
from invscale_jax.models.config import load_config

OPT = dict(model_type="opt", vocab_size=50272, max_position_embeddings=2048,
           activation_function="relu", do_layer_norm_before=True)
QWEN = dict(model_type="qwen2", hidden_act="silu", rope_theta=1e6, use_sliding_window=False)
SMOL = dict(model_type="llama", vocab_size=49152, hidden_act="silu", rms_norm_eps=1e-5,
            tie_word_embeddings=True, head_dim=64)
GPT2 = dict(model_type="gpt2", vocab_size=50257, n_positions=1024,
            activation_function="gelu_new", layer_norm_epsilon=1e-5)


def _opt(hidden, heads, ffn, layers, **extra):
  return {**OPT, "hidden_size": hidden, "num_attention_heads": heads, "ffn_dim": ffn,
          "num_hidden_layers": layers, "word_embed_proj_dim": hidden, **extra}


def _qwen(vocab, hidden, heads, kv, ffn, layers, tied, eps):
  return dict(QWEN, vocab_size=vocab, hidden_size=hidden, num_attention_heads=heads,
              num_key_value_heads=kv, intermediate_size=ffn, num_hidden_layers=layers,
              tie_word_embeddings=tied, rms_norm_eps=eps)


def _smol(hidden, heads, kv, ffn, layers, theta):
  return dict(SMOL, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
              intermediate_size=ffn, num_hidden_layers=layers, rope_theta=theta)


def _gpt2(hidden, heads, layers):
  return dict(GPT2, n_embd=hidden, n_head=heads, n_layer=layers)


# The dimensions of each model's config.json on the Hugging Face Hub (facebook/opt-*,
# Qwen/Qwen2.5-*, HuggingFaceTB/SmolLM2-*, openai-community/gpt2*).
CONFIGS = {
    "opt-125m": _opt(768, 12, 3072, 12), "opt-350m": _opt(
        1024, 16, 4096, 24, word_embed_proj_dim=512, do_layer_norm_before=False),
    "opt-1.3b": _opt(2048, 32, 8192, 24), "opt-2.7b": _opt(2560, 32, 10240, 32),
    "opt-6.7b": _opt(4096, 32, 16384, 32), "opt-13b": _opt(5120, 40, 20480, 40),
    "opt-30b": _opt(7168, 56, 28672, 48), "opt-66b": _opt(9216, 72, 36864, 64),
    "qwen2.5-0.5b": _qwen(151936, 896, 14, 2, 4864, 24, True, 1e-6),
    "qwen2.5-1.5b": _qwen(151936, 1536, 12, 2, 8960, 28, True, 1e-6),
    "qwen2.5-3b": _qwen(151936, 2048, 16, 2, 11008, 36, True, 1e-6),
    "qwen2.5-7b": _qwen(152064, 3584, 28, 4, 18944, 28, False, 1e-6),
    "qwen2.5-14b": _qwen(152064, 5120, 40, 8, 13824, 48, False, 1e-5),
    "qwen2.5-32b": _qwen(152064, 5120, 40, 8, 27648, 64, False, 1e-5),
    "qwen2.5-72b": _qwen(152064, 8192, 64, 8, 29568, 80, False, 1e-5),
    "smollm2-135m": _smol(576, 9, 3, 1536, 30, 100000.0),
    "smollm2-360m": _smol(960, 15, 5, 2560, 32, 100000.0),
    "smollm2-1.7b": _smol(2048, 32, 32, 8192, 24, 130000.0),
    "gpt2-124m": _gpt2(768, 12, 12), "gpt2-355m": _gpt2(1024, 16, 24),
    "gpt2-774m": _gpt2(1280, 20, 36), "gpt2-1.5b": _gpt2(1600, 25, 48),
}
# Published (rounded) parameter counts, where they are stated as counts.
# (The Qwen2.5 32B model card's 32.5B is 0.8% below its config's count.)
PUBLISHED = {"qwen2.5-0.5b": 0.49e9, "qwen2.5-1.5b": 1.54e9, "qwen2.5-3b": 3.09e9,
             "qwen2.5-7b": 7.61e9, "qwen2.5-14b": 14.7e9, "qwen2.5-32b": 32.5e9,
             "qwen2.5-72b": 72.7e9}
FAMILIES = {"opt": 8, "qwen2_5": 7, "smollm2": 3, "gpt2": 4}


def _transformers_count(hf_config: dict) -> int:
  config = transformers.AutoConfig.for_model(**hf_config)
  with torch.device("meta"):
    model = transformers.AutoModelForCausalLM.from_config(config)
  return sum(p.numel() for p in model.parameters())  # a tied output layer once


@pytest.mark.parametrize("name", FAMILIES)
def test_shipped_manifest_matches_the_published_configs(name, tmp_path):
  fam = family.load(family.FAMILIES_DIR / f"{name}.json")
  assert len(fam.models) == FAMILIES[name]
  for entry in fam.models:
    hf_config = CONFIGS[entry.name]
    (tmp_path / "config.json").write_text(transformers.AutoConfig.for_model(
        **hf_config).to_json_string())
    config = load_config(entry.gin)
    assert config == hf_dir.model_config(tmp_path), entry.name
    assert entry.architecture == config.architecture
    assert entry.n_params == _transformers_count(hf_config), entry.name
    if entry == fam.models[0]:
      assert build(config).num_params() == entry.n_params
    if entry.name in PUBLISHED:  # rounded, sometimes down
      assert entry.n_params == pytest.approx(PUBLISHED[entry.name], rel=0.01), entry.name
    assert entry.bos_id == (2 if name == "opt" else None)  # only OPT's tokenizer adds one
    assert entry.compute == (None if entry.train_tokens is None
                             else 6 * entry.n_params * entry.train_tokens)


def test_family_show_lists_the_shipped_manifests(run_cli):
  result = run_cli("family", "show")
  assert result.code == 0, result.err
  for name in ("opt", "qwen2_5", "smollm2", "gpt2", "pythia"):
    assert f"family {name} " in result.out
  assert "opt-66b" in result.out and "65,719,701,504" in result.out
