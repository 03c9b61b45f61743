"""OPT, Llama-style and GPT-2 models converted from Hugging Face score like transformers:
per-token log-probabilities within 1e-4 (float32) on the ids transformers' own tokenizer
gives for raw text; the exported tokenizer.json encodes as that tokenizer does; the
manifest carries its BOS. Weight-file layouts (Hub names, shards, pytorch_model.bin)
convert alike; what cannot be reproduced exactly is refused."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
import transformers

import hf_tiny
from invscale_jax import checkpoints, family
from invscale_jax import vocab as vocab_lib
from invscale_jax.convert import hf, hf_dir, hf_llama, hf_weights
from invscale_jax.models.model import build
from invscale_jax.models.config import load_config


@pytest.fixture(scope="module")
def texts(text_examples) -> list[str]:
  return [prompt + classes[0] for prompt, classes in text_examples]


@pytest.mark.parametrize("kind", [k for k in hf_tiny.KINDS if k not in ("gpt_neox", "t5")])
def test_converted_model_matches_transformers(kind, tmp_path, texts, pack_rows):
  src = hf_tiny.make(kind, tmp_path / "hf", texts)
  path = hf_weights.convert(hf_dir.converter(src), src, tmp_path / "ours", step=3)
  [entry] = json.loads((tmp_path / "ours" / "manifest.json").read_text())["models"]
  tokenizer = transformers.AutoTokenizer.from_pretrained(src)
  bos = hf_tiny.BOS[kind]
  bos_id = None if bos is None else tokenizer.convert_tokens_to_ids(bos)
  assert entry["bos_id"] == bos_id
  vocabulary = vocab_lib.from_spec({**entry["vocabulary"],
                                    "path": str(tmp_path / "ours" / "tokenizer.json")})
  assert vocabulary.eos_id == tokenizer.eos_token_id

  model = build(load_config(tmp_path / "ours" / "model.gin", ["ModelConfig.dtype = 'float32'"]))
  assert model.config == hf_dir.model_config(src, dtype="float32")
  params = checkpoints.read_checkpoint(path, expected=model.param_shapes())
  torch_model = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
  examples, reference = [], []
  for text in texts:
    ids = tokenizer(text)["input_ids"]
    assert ids == [bos_id] * (bos_id is not None) + list(vocabulary.encode(text))
    with torch.no_grad():
      logits = torch_model(torch.tensor([ids])).logits[0, :-1].double()
    reference.append(torch.log_softmax(logits, -1).numpy()[np.arange(len(ids) - 1), ids[1:]])
    examples.append([(ids[:1], [ids[1:]])])  # a plain causal row scoring ids[1:]
  batch, slots = pack_rows(examples, False, branched=False)
  scores = np.asarray(jax.jit(model.score)(params, batch))
  worst = max(float(np.abs(scores[row, start:start + n] - expected).max())
              for (row, start, n), expected in zip(slots, reference))
  assert worst < 1e-4, worst


def _save_hub_style(model: torch.nn.Module, kind: str, out) -> None:
  """pytorch_model.bin as the Hub's original OPT and GPT-2 files are: tensor names without
  `model.` / `transformer.`, OPT's tied lm_head stored, GPT-2's attention mask buffers."""
  prefix = {"opt": "model.", "gpt2": "transformer."}[kind]
  state = {k.removeprefix(prefix): v.clone().contiguous() for k, v in model.state_dict().items()}
  if kind == "opt":
    state["lm_head.weight"] = state["decoder.embed_tokens.weight"].clone()
  else:
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 8, 8))
    state["h.0.attn.masked_bias"] = torch.tensor(-1e4)
  out.mkdir()
  torch.save(state, out / "pytorch_model.bin")
  model.config.to_json_file(out / "config.json")


@pytest.mark.parametrize("kind", ["opt", "gpt2", "llama"])
def test_weight_file_layouts_convert_alike(kind, tmp_path, texts):
  """Files transformers writes, the Hub's original pytorch_model.bin layouts (OPT, GPT-2)
  and sharded safetensors with their index (llama) give the same parameters."""
  src = hf_tiny.make(kind, tmp_path / kind, texts)
  expected = dict(hf_weights.convert_params(hf_dir.converter(src), src))
  model = transformers.AutoModelForCausalLM.from_pretrained(src)
  other = tmp_path / "other"
  if kind == "llama":
    model.save_pretrained(other, max_shard_size="40KB")
    assert (other / "model.safetensors.index.json").is_file()
  else:
    _save_hub_style(model, kind, other)
  converted = dict(hf_weights.convert_params(hf_dir.converter(other), other))
  assert converted.keys() == expected.keys()
  for path, x in converted.items():
    np.testing.assert_array_equal(x, expected[path], err_msg="/".join(path))


SMALL = dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=1)
REFUSED = [
    (transformers.LlamaConfig, dict(SMALL, intermediate_size=64, rope_parameters=dict(
        rope_type="yarn", rope_theta=1e4, factor=4.0)), "rotary scaling 'yarn' is not supported"),
    (transformers.Qwen2Config, dict(SMALL, intermediate_size=64, use_sliding_window=True),
     "use_sliding_window"),
    (transformers.GPT2Config, dict(n_embd=64, n_head=4, n_layer=1,
                                   scale_attn_by_inverse_layer_idx=True), "attention scaling"),
    (transformers.OPTConfig, dict(SMALL, ffn_dim=64, enable_bias=False), "biases"),
]


@pytest.mark.parametrize("config_class,fields,message", REFUSED)
def test_configurations_that_cannot_be_reproduced_are_refused(config_class, fields, message,
                                                              tmp_path):
  (tmp_path / "config.json").write_text(config_class(**fields).to_json_string())
  with pytest.raises(ValueError, match=message):
    hf_dir.model_config(tmp_path)


def test_wrong_directories_and_tensors_are_refused(tmp_path):
  (tmp_path / "config.json").write_text(transformers.OPTConfig(**SMALL).to_json_string())
  with pytest.raises(ValueError, match="model_type 'opt' is not llama or mistral or qwen2"):
    hf_llama.CONVERTER.config(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(ValueError, match="model_type 'bert' is not supported"):
    hf_dir.converter(tmp_path)
  llama = hf_llama.config_from_hf(transformers.LlamaConfig(**SMALL).to_dict())
  rules = hf_llama._rules(llama, tmp_path)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="unexpected tensor 'model.layers.0.self_attn.rope'"):
    hf.rename("model.layers.0.self_attn.rope", rules, hf_llama._NAMES)  # pylint: disable=protected-access


def test_hf_dir_manifest_entries(tmp_path):
  """An hf_dir entry takes the directory's config.json and tokenizer.json unless told
  otherwise; it names no `checkpoint` of its own; llama entries say their BOS."""
  entry = {"name": "m", "architecture": "llama", "hf_dir": "hf/m", "bos_id": None}

  def load(*entries):
    (tmp_path / "manifest.json").write_text(json.dumps({"models": list(entries)}))
    return family.load(tmp_path / "manifest.json")

  [m] = load(entry).models
  assert (m.checkpoint, m.checkpoint_format) == (str(tmp_path / "hf" / "m"), "hf")
  assert m.gin == str(tmp_path / "hf" / "m" / "config.json")
  assert m.vocabulary["path"] == str(tmp_path / "hf" / "m" / "tokenizer.json")
  assert load({**entry, "gin": "models/qwen2_5/0.5b.gin"}).models[0].gin.endswith("0.5b.gin")
  with pytest.raises(family.ManifestError, match=r"models\[0\]: hf_dir: names the weights"):
    load({**entry, "checkpoint": "c"})
  with pytest.raises(family.ManifestError, match=r"models\[0\]: bos_id: missing; llama"):
    load({k: v for k, v in entry.items() if k != "bos_id"})
