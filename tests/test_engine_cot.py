"""Chain of thought end to end on the tiny family: cached batched decoding, parsed answers,
generate-then-score records, and the report showing CoT beside zero-shot."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import seqio

from conftest import run_dirs
from invscale_jax import records, results
from invscale_jax.engine import chain_of_thought, partitioning
from invscale_jax.engine.generate import DecodeOptions, Generator
from test_engine_exact import task_requests


def test_generations_do_not_depend_on_batch_size(small_model, shared_data):
  reqs = task_requests(shared_data, "memo-trap", "cot_1_shot", 6)
  for architecture in ("decoder_only", "encoder_decoder"):
    model, params = small_model(architecture)
    outputs = [Generator(model, params, partitioning.make_mesh(), DecodeOptions(12),
                         tokens_per_batch=tpb).generate(reqs) for tpb in (64, 4096)]
    for a, b in zip(*outputs):
      np.testing.assert_array_equal(a, b)


def test_sampling_is_seeded_per_example(small_model, shared_data):
  reqs = task_requests(shared_data, "memo-trap", "cot_zero_shot", 4)
  model, params = small_model("decoder_only")
  sample = lambda seed, tpb: Generator(model, params, partitioning.make_mesh(),
                                       DecodeOptions(16, temperature=1.0, seed=seed),
                                       tokens_per_batch=tpb).generate(reqs)
  first, again, other = sample(0, 64), sample(0, 4096), sample(1, 64)
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_decode_text_cuts_at_eos_and_stop_strings():
  vocabulary = seqio.ByteVocabulary()
  ids = np.asarray(vocabulary.encode(" So the answer is Y.\n\n\nQuestion: next") + [1, 70, 71])
  text, n = chain_of_thought.decode_text(ids, vocabulary, ("\n\n\n",))
  assert text == " So the answer is Y." and n == len(text)


def test_cot_run_and_report_end_to_end(tmp_path: pathlib.Path, tiny_family, small_data_dir,
                                       run_cli):
  out = tmp_path / "results"
  for variants in ("zero_shot", "cot_1_shot"):
    result = run_cli("score", "--family", tiny_family, "--tasks", "memo-trap", "--variants",
                     variants, "--data_dir", small_data_dir, "--out", out,
                     "--generation_length", "24", "--max_length", "512")
    assert result.code == 0, result.err
  cot = [d for d in run_dirs(out) if results.read_run_info(d)["variant"] == "cot_1_shot"]
  assert len(cot) == 2 and all(results.is_complete(d) for d in cot)
  recs = results.read_records(cot[0])
  generations = [r for r in recs if r.kind == records.GENERATION]
  classes = [r for r in recs if r.kind == records.CLASS]
  n = results.read_run_info(cot[0])["n_examples"]
  assert len(generations) == n and len(classes) == 2 * n  # generate, then score both classes
  for g in generations:
    assert isinstance(g.generation, str) and g.parsed == (g.class_index is not None)
    assert g.is_correct == (g.class_index == g.answer_index)

  report = tmp_path / "report"
  result = run_cli("report", out, "--out", report)
  assert result.code == 0, result.err
  summary = (report / "summary.md").read_text()
  assert "cot_1_shot" in summary and "zero_shot" in summary and "unparseable" in summary.lower()
  rows = json.loads((report / "metrics.json").read_text())
  assert "cot_1_shot" in json.dumps(rows)


def test_generate_command_decodes_every_classification_run(tmp_path, tiny_family,
                                                           small_data_dir, run_cli):
  out = tmp_path / "results"
  result = run_cli("generate", "--family", tiny_family, "--model", "tiny-1", "--tasks", "neqa",
                   "--variants", "zero_shot", "--data_dir", small_data_dir, "--out", out,
                   "--generation_length", "8", "--max_length", "512")
  assert result.code == 0, result.err
  [run_dir] = run_dirs(out)
  recs = results.read_records(run_dir)
  assert recs and all(r.kind == records.GENERATION for r in recs)
  assert len(recs) == results.read_run_info(run_dir)["n_examples"]
