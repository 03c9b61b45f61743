"""The whole chain for Hugging Face families: a model with its tokenizer -> `invscale convert`
(or `invscale family from-hf`, no conversion) -> manifest -> `invscale score` on real task
rows. Every class log-probability in the records equals transformers' own (float32,
1e-4), with transformers fed what its users (lm-eval-harness, the prize pipeline) feed
it: the raw prompt through the model's own tokenizer, with its own special tokens (OPT:
`</s>` first; Llama 3: `<|begin_of_text|>`; GPT-NeoX, Qwen2.5, GPT-2: nothing), then the
class tokens."""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Callable

import pytest
import torch
import transformers

import hf_tiny
from conftest import ScoreCli, run_dirs
from invscale_jax import results
from invscale_jax.data import datadir

ROWS = 8  # memo-trap examples scored (2 classes each)


@pytest.fixture(scope="module")
def small_memo_trap(tmp_path_factory, shared_data) -> pathlib.Path:
  """A data dir holding the first ROWS rows of the real memo-trap file."""
  root = tmp_path_factory.mktemp("data")
  name = "memo-trap_classification.jsonl"
  lines = (shared_data / name).read_text(encoding="utf-8").splitlines(keepends=True)[:ROWS]
  (root / name).write_text("".join(lines), encoding="utf-8")
  return root


@pytest.fixture(scope="module")
def hf_dir_of(tmp_path_factory, shared_data) -> Callable[[str], pathlib.Path]:
  """The directory of a random tiny model of a kind (hf_tiny.KINDS) with a BPE tokenizer
  trained on memo-trap, made on first use."""
  texts = [e.prompt + c for e in datadir.load_task(shared_data, "memo-trap") for c in e.classes]
  root = tmp_path_factory.mktemp("hf")
  return functools.cache(lambda kind: hf_tiny.make(kind, root / kind, texts))


def _score(run_cli, manifest: pathlib.Path, data_dir: pathlib.Path,
           out: pathlib.Path) -> dict[str, list]:
  """Scores memo-trap with every model of the manifest; records per model name."""
  result = run_cli("score", "--family", manifest, "--tasks", "memo-trap", "--data_dir",
                   data_dir, "--out", out)
  assert result.code == 0, result.err
  recs = [r for run_dir in run_dirs(out) for r in results.read_records(run_dir)]
  return {name: [r for r in recs if r.model == name] for name in {r.model for r in recs}}


def _worst_difference(recs: list, src: pathlib.Path, data_dir: pathlib.Path) -> float:
  """The largest |logprob - transformers' log p(class | prompt)| over the records."""
  tokenizer = transformers.AutoTokenizer.from_pretrained(src)
  model = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
  examples = datadir.load_task(data_dir, "memo-trap")
  assert len(recs) == 2 * ROWS
  worst = 0.0
  for r in recs:
    e = examples[r.example_id]
    prompt = tokenizer(e.prompt)["input_ids"]  # with the tokenizer's own special tokens
    target = tokenizer(e.classes[r.class_index], add_special_tokens=False)["input_ids"]
    ids = [*prompt, *target]
    with torch.no_grad():
      logits = model(torch.tensor([ids])).logits[0].double()
    log_probs = torch.log_softmax(logits, -1)[len(ids) - len(target) - 1:-1]
    expected = float(log_probs[torch.arange(len(target)), torch.tensor(target)].sum())
    assert r.n_tokens == len(target)
    worst = max(worst, abs(r.logprob - expected))
  return worst


@pytest.mark.parametrize("kind,command", [("gpt_neox", "hf-gpt-neox"), ("opt", "hf-opt"),
                                          ("llama", "hf-llama"), ("gpt2", "hf-gpt2")])
def test_converted_family_scores_like_transformers(kind, command, tmp_path, hf_dir_of,
                                                   small_memo_trap, run_cli):
  out = tmp_path / kind
  assert run_cli("convert", command, "--src", hf_dir_of(kind), "--out", out).code == 0
  [entry] = json.loads((out / "manifest.json").read_text())["models"]
  assert entry["vocabulary"]["path"] == "tokenizer.json"
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir_of(kind))
  bos = hf_tiny.BOS[kind]
  assert entry["bos_id"] == (None if bos is None else tokenizer.convert_tokens_to_ids(bos))
  recs = _score(run_cli, out / "manifest.json", small_memo_trap, tmp_path / "results")
  assert _worst_difference(recs[kind], hf_dir_of(kind), small_memo_trap) < 1e-4


def test_hf_directories_score_like_transformers_without_conversion(tmp_path, hf_dir_of,
                                                                   small_memo_trap, run_cli):
  """`family from-hf` on OPT, Qwen2.5-style and GPT-2 directories: nothing but the manifest
  and the tokenizers is written, and the scores are transformers' own, also with the
  parameters sharded over 2 devices as they are read."""
  kinds = ("opt", "qwen2", "gpt2")
  manifest = tmp_path / "family" / "manifest.json"
  result = run_cli("family", "from-hf", *(hf_dir_of(k) for k in kinds), "--out", manifest)
  assert result.code == 0, result.err
  written = sorted(p.name for p in manifest.parent.iterdir())
  assert written == sorted(["manifest.json", *(f"{k}.tokenizer.json" for k in kinds)])
  entries = json.loads(manifest.read_text())["models"]
  assert [(e["name"], e["architecture"], e["hf_dir"], e["bos_id"]) for e in entries] == [
      ("opt", "opt", str(hf_dir_of("opt")), 2), ("qwen2", "llama", str(hf_dir_of("qwen2")), None),
      ("gpt2", "gpt2", str(hf_dir_of("gpt2")), None)]
  assert run_cli("family", "show", manifest).code == 0
  recs = _score(run_cli, manifest, small_memo_trap, tmp_path / "results")
  for kind in kinds:
    assert _worst_difference(recs[kind], hf_dir_of(kind), small_memo_trap) < 1e-4, kind

  cli = ScoreCli(manifest, small_memo_trap, tmp_path / "xla_cache", tmp_path)
  result = cli.run(tmp_path / "sharded", "--tasks", "memo-trap", "--model", "qwen2",
                   "--model_parallel", "2", devices=2)
  assert result.code == 0, result.out
  [run_dir] = run_dirs(tmp_path / "sharded")
  sharded = {(r.example_id, r.class_index): r.logprob for r in results.read_records(run_dir)}
  assert sharded.keys() == {(r.example_id, r.class_index) for r in recs["qwen2"]}
  assert max(abs(sharded[r.example_id, r.class_index] - r.logprob) for r in recs["qwen2"]) < 1e-5


def test_t5_scores_like_transformers_fed_its_tokenizer(tmp_path, hf_dir_of, small_memo_trap,
                                                      run_cli):
  """`convert hf-t5` of a Flan-T5-style directory (its tokenizer.json appends `</s>`), scored
  by default as transformers scores `tokenizer(prompt)`: EOS after the encoder input; with
  --no_encoder_eos as transformers without special tokens, under another run key."""
  src, out = hf_dir_of("t5"), tmp_path / "t5"
  result = run_cli("convert", "hf-t5", "--src", src, "--out", out)
  assert result.code == 0, result.err
  [entry] = json.loads((out / "manifest.json").read_text())["models"]
  assert entry["vocabulary"] == {"type": "hf_tokenizer", "path": "tokenizer.json", "eos": "</s>"}
  assert entry["encoder_eos"] is True and "bos_id" not in entry
  tokenizer = transformers.AutoTokenizer.from_pretrained(src)
  model = transformers.T5ForConditionalGeneration.from_pretrained(src).eval()
  examples = datadir.load_task(small_memo_trap, "memo-trap")
  keys = set()
  for flags, special in (((), True), (("--no_encoder_eos",), False)):
    results_dir = tmp_path / f"results-{special}"
    result = run_cli("score", "--family", out / "manifest.json", "--tasks", "memo-trap",
                     "--data_dir", small_memo_trap, "--out", results_dir, *flags)
    assert result.code == 0, result.err
    [run_dir] = run_dirs(results_dir)
    keys.add(results.read_run_info(run_dir)["run_key"])
    recs = results.read_records(run_dir)
    assert len(recs) == 2 * ROWS
    worst = 0.0
    for r in recs:
      e = examples[r.example_id]
      encoder = tokenizer(e.prompt, add_special_tokens=special)["input_ids"]
      assert (encoder[-1] == tokenizer.eos_token_id) == special
      target = tokenizer(e.classes[r.class_index], add_special_tokens=False)["input_ids"]
      with torch.no_grad():
        logits = model(input_ids=torch.tensor([encoder]),
                       decoder_input_ids=torch.tensor([[0, *target[:-1]]])).logits[0].double()
      log_probs = torch.log_softmax(logits, -1)[torch.arange(len(target)), torch.tensor(target)]
      worst = max(worst, abs(r.logprob - float(log_probs.sum())))
    assert worst < 1e-4, (special, worst)
  assert len(keys) == 2
