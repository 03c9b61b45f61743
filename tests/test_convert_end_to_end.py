"""The whole chain for a converted family: a Hugging Face GPT-NeoX model with its
tokenizer -> `invscale convert` -> manifest -> `invscale score` on real task rows.
Every class log-probability in the records equals transformers' own (float32, 1e-4), with
transformers fed what its users feed it: the raw prompt through the model's own tokenizer
(which, for GPT-NeoX, adds no BOS token), then the class tokens."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
import transformers

from conftest import run_dirs
from invscale_jax import records, results
from invscale_jax.data import datadir


@pytest.fixture(scope="module")
def small_memo_trap(tmp_path_factory, shared_data) -> pathlib.Path:
  """A data dir holding the first 12 rows of the real memo-trap file."""
  root = tmp_path_factory.mktemp("data")
  name = "memo-trap_classification.jsonl"
  lines = (shared_data / name).read_text(encoding="utf-8").splitlines(keepends=True)[:12]
  (root / name).write_text("".join(lines), encoding="utf-8")
  return root


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory, shared_data) -> pathlib.Path:
  """A random GPT-NeoX with a BPE tokenizer.json trained on memo-trap (<|endoftext|> = 0)."""
  import tokenizers  # pylint: disable=g-import-not-at-top

  src = tmp_path_factory.mktemp("hf")
  texts = [e.prompt + c for e in datadir.load_task(shared_data, "memo-trap") for c in e.classes]
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  tokenizer.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
      vocab_size=500, special_tokens=["<|endoftext|>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  # As Pythia's tokenizer: <|endoftext|> is BOS and EOS, and encoding adds neither.
  transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
      unk_token="<|endoftext|>").save_pretrained(src)
  config = transformers.GPTNeoXConfig(
      vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=256, rotary_pct=0.25, max_position_embeddings=2048,
      use_parallel_residual=True, tie_word_embeddings=False)
  torch.manual_seed(0)
  model = transformers.GPTNeoXForCausalLM(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      if p.dim() > 1:
        p.normal_(0.0, 1.0 / np.sqrt(p.shape[-1]))
  model.save_pretrained(src)
  return src


def test_converted_family_scores_like_transformers(tmp_path, hf_model_dir, small_memo_trap,
                                                   run_cli):
  out = tmp_path / "pythia-tiny"
  assert run_cli("convert", "hf-gpt-neox", "--src", hf_model_dir, "--out", out).code == 0
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["models"][0]["vocabulary"] == {"type": "hf_tokenizer", "path": "tokenizer.json"}
  result = run_cli("score", "--family", out / "manifest.json", "--tasks", "memo-trap",
                   "--data_dir", small_memo_trap, "--out", tmp_path / "results")
  assert result.code == 0, result.err
  [run_dir] = run_dirs(tmp_path / "results")
  recs = results.read_records(run_dir)
  assert len(recs) == 24

  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_model_dir)
  model = transformers.GPTNeoXForCausalLM.from_pretrained(hf_model_dir).eval()
  examples = datadir.load_task(small_memo_trap, "memo-trap")
  worst = 0.0
  for r in recs:
    e = examples[r.example_id]
    prompt = tokenizer(e.prompt)["input_ids"]  # the tokenizer's own special tokens: none
    target = tokenizer(e.classes[r.class_index], add_special_tokens=False)["input_ids"]
    ids = [*prompt, *target]
    with torch.no_grad():
      logits = model(torch.tensor([ids])).logits[0].double()
    log_probs = torch.log_softmax(logits, -1)[len(ids) - len(target) - 1:-1]
    expected = float(log_probs[torch.arange(len(target)), torch.tensor(target)].sum())
    assert r.n_tokens == len(target)
    worst = max(worst, abs(r.logprob - expected))
  assert worst < 1e-4, worst
