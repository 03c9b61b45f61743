"""Converted Hugging Face models score like transformers does (float32, within 1e-4)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import safetensors.torch
import torch
import transformers

import hf_tiny
from invscale_jax import checkpoints
from invscale_jax.convert import hf, hf_gpt_neox, hf_t5, hf_weights
from invscale_jax.models.model import build
from invscale_jax.models.config import load_config

VOCAB = 512


def _ids(text: str) -> list[int]:
  return [(b + 3) % VOCAB for b in text.encode("utf-8")]


def _hf_log_probs(logits: torch.Tensor, targets: list[int]) -> np.ndarray:
  log_probs = torch.log_softmax(logits[0].double(), dim=-1).numpy()
  return log_probs[np.arange(len(targets)), targets]


def _assert_parity(model, params, examples, pack_rows, reference, encoder_decoder: bool):
  batch, slots = pack_rows(examples, encoder_decoder, branched=False)
  scores = np.asarray(jax.jit(model.score)(params, batch))
  worst = 0.0
  for (row, start, n), expected in zip(slots, reference):
    worst = max(worst, float(np.abs(scores[row, start:start + n] - expected).max()))
  assert worst < 1e-4, worst


def test_gpt_neox_matches_transformers(tmp_path, text_examples, pack_rows):
  config = transformers.GPTNeoXConfig(
      vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=256, rotary_pct=0.25, max_position_embeddings=1024, hidden_act="gelu",
      use_parallel_residual=True, tie_word_embeddings=False)
  torch_model = transformers.GPTNeoXForCausalLM(config).eval()
  hf_tiny.randomize(torch_model)
  torch_model.save_pretrained(tmp_path / "hf")
  path = hf_weights.convert(hf_gpt_neox.CONVERTER, tmp_path / "hf", tmp_path / "ours", step=7)

  model = build(load_config(tmp_path / "ours" / "model.gin", ["ModelConfig.dtype = 'float32'"]))
  assert model.config == hf_gpt_neox.config_from_hf(config.to_dict(), dtype="float32")
  assert model.config.rotary.dims == 4
  params = checkpoints.read_checkpoint(path, expected=model.param_shapes())
  texts = [_ids(prompt + classes[0]) for prompt, classes in text_examples]
  reference = []
  with torch.no_grad():
    for ids in texts:
      logits = torch_model(torch.tensor([ids])).logits
      reference.append(_hf_log_probs(logits[:, :-1], ids[1:]))
  # One token as "prompt", the rest as its "class": a plain causal row scoring ids[1:].
  _assert_parity(model, params, [[(ids[:1], [ids[1:]])] for ids in texts], pack_rows,
                 reference, encoder_decoder=False)


def _save_hub_style(torch_model: torch.nn.Module, path) -> None:
  """Files laid out as Flan-T5's on the Hub: a separate lm_head, tie_word_embeddings false."""
  state = {k: v.clone().contiguous() for k, v in torch_model.state_dict().items()}
  torch.manual_seed(1)
  state["lm_head.weight"] = torch.randn_like(state["shared.weight"]) * 0.2
  path.mkdir()
  safetensors.torch.save_file(state, path / "model.safetensors", metadata={"format": "pt"})
  config = torch_model.config.to_dict()
  config.pop("scale_decoder_outputs")
  (path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))


@pytest.mark.parametrize("layout", ["flan_t5_hub", "untied_transformers5", "original_t5"])
def test_t5_matches_transformers(tmp_path, text_examples, pack_rows, layout):
  config = transformers.T5Config(
      vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
      num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=layout == "original_t5",
      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0)
  torch_model = transformers.T5ForConditionalGeneration(config)
  hf_tiny.randomize(torch_model)
  src = tmp_path / "hf"
  if layout == "flan_t5_hub":
    _save_hub_style(torch_model, src)
  else:
    torch_model.save_pretrained(src)
  # The reference is what transformers computes from the same files.
  torch_model = transformers.T5ForConditionalGeneration.from_pretrained(src).eval()

  model_config = hf_t5.config_from_hf(hf.read_config(src), dtype="float32")
  assert model_config.logits_via_embedding == (layout == "original_t5")
  model = build(model_config)
  params = hf_weights.nest(hf_weights.convert_params(hf_t5.CONVERTER, src))
  # Long enough for relative distances beyond 64 (encoder) and 16 (decoder).
  examples = [(_ids(prompt), _ids((prompt + classes[0])[-40:]))
              for prompt, classes in text_examples]
  reference = []
  with torch.no_grad():
    for encoder, target in examples:
      logits = torch_model(input_ids=torch.tensor([encoder]),
                           decoder_input_ids=torch.tensor([[0] + target[:-1]])).logits
      reference.append(_hf_log_probs(logits, target))
  _assert_parity(model, params, [[(encoder, [target])] for encoder, target in examples],
                 pack_rows, reference, encoder_decoder=True)


def test_converter_rejects_unknown_tensors():
  with pytest.raises(ValueError, match="unexpected tensor 'encoder.block.0.extra'"):
    hf.rename("encoder.block.0.extra", hf_t5._rules(False, True), hf_t5._ATTENTION)


def test_gpt_neox_weight_file_layouts_convert_alike(tmp_path):
  """Single safetensors, sharded safetensors, and an old-style pytorch_model.bin (with the
  buffers Pythia's files carry) give the same parameters."""
  config = transformers.GPTNeoXConfig(
      vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, tie_word_embeddings=False)
  torch_model = transformers.GPTNeoXForCausalLM(config)
  torch_model.save_pretrained(tmp_path / "single")
  torch_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
  (tmp_path / "bin").mkdir()
  state = {k: v.clone() for k, v in torch_model.state_dict().items()}
  state["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = torch.ones(2)
  state["gpt_neox.layers.0.attention.masked_bias"] = torch.tensor(-1e9)
  torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
  (tmp_path / "bin" / "config.json").write_text(json.dumps(config.to_dict()))

  expected = dict(hf_weights.convert_params(hf_gpt_neox.CONVERTER, tmp_path / "single"))
  for layout in ("sharded", "bin"):
    converted = dict(hf_weights.convert_params(hf_gpt_neox.CONVERTER, tmp_path / layout))
    assert converted.keys() == expected.keys()
    for path, x in converted.items():
      np.testing.assert_array_equal(x, expected[path], err_msg="/".join(path))
