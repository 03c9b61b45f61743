"""The pieces of benchmarks/vs_lm_eval.py that need neither lm-eval nor the network: the
task YAML, the row copy, the tokenizer, reading both tools' scores, comparing them, and
the skip when lm-eval is absent."""

from __future__ import annotations

import ast
import json
import pathlib
import os
import subprocess
import sys
import time

import jinja2
import pytest
import yaml

from conftest import REPO, load_script, task_file
from invscale_jax.data import datadir

BENCHMARKS = REPO / "benchmarks"


vs = load_script("vs_lm_eval")
child = load_script("lm_eval_scores")


def test_task_yaml_gives_prompt_and_classes_as_written(tmp_path):
  data = tmp_path / "memo-trap_classification.jsonl"
  n_rows = vs.write_rows(task_file(data.name), 0, data)
  examples = datadir.load_task(tmp_path, "memo-trap")
  assert n_rows == len(examples)
  config = yaml.safe_load(vs.task_yaml("invscale_memo_trap", data))
  assert config["task"] == "invscale_memo_trap"
  assert config["dataset_path"] == "json"
  assert config["dataset_kwargs"] == {"data_files": {"test": str(data)}}
  assert config["output_type"] == "multiple_choice"
  assert config["target_delimiter"] == ""  # the continuation is the class, as written
  assert config["metric_list"] == [{"metric": "acc"}]  # no length normalisation
  # lm-eval reads a field name as the field, and literal_evals a rendered template.
  rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
  for row, example in zip(rows, examples, strict=True):
    assert row[config["doc_to_text"]] == example.prompt
    choices = ast.literal_eval(jinja2.Template(config["doc_to_choice"]).render(**row))
    assert choices == list(example.classes)
    assert row[config["doc_to_target"]] == example.answer_index


def test_write_rows_keeps_the_first_rows_byte_for_byte(tmp_path):
  source = task_file("hindsight-neglect_classification.jsonl")
  out = tmp_path / "h.jsonl"
  assert vs.write_rows(source, 3, out) == 3
  assert out.read_bytes() == b"".join(source.read_bytes().splitlines(keepends=True)[:3])


def test_parse_rows():
  assert vs.parse_rows("hindsight-neglect=64,memo-trap=0") == {"hindsight-neglect": 64,
                                                               "memo-trap": 0}
  with pytest.raises(ValueError, match="TASK=N"):
    vs.parse_rows("memo-trap")


def test_tokenizer_is_padded_and_adds_no_special_tokens(tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top

  texts = ["Absence makes the heart grow fonder.", "Long absent, soon forgotten."] * 5
  vs.train_tokenizer(texts, 400, tmp_path)
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert len(tokenizer) == 400
  assert tokenizer.convert_tokens_to_ids(vs.EOS) == 0 == tokenizer.bos_token_id
  ids = tokenizer("Absence makes the heart grow")["input_ids"]
  assert tokenizer.decode(ids) == "Absence makes the heart grow"
  trained = json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]
  padding = {i for t, i in trained.items() if t.startswith("<|unused_")}
  assert max(padding) == 399 and not padding & set(ids)


def test_lm_eval_samples_become_class_scores():
  samples = [{"doc_id": 1, "filtered_resps": [[-2.5, False], [-1.0, True]]},
             {"doc_id": 0, "filtered_resps": [[-0.5, True], [-3.0, False], [-4.0, False]]}]
  output = json.loads(json.dumps({"scores": child.choice_scores(samples)}))  # as written
  assert vs.lm_eval_scores(output) == {(1, 0): -2.5, (1, 1): -1.0, (0, 0): -0.5,
                                       (0, 1): -3.0, (0, 2): -4.0}


def test_max_difference():
  a = {(0, 0): -1.0, (0, 1): -2.0}
  assert vs.max_difference(a, {(0, 0): -1.00002, (0, 1): -2.0}) == pytest.approx(2e-5)
  with pytest.raises(ValueError, match="1 only in the first, 0 only in the second"):
    vs.max_difference(a, {(0, 0): -1.0})


def test_timed_method_times_each_call_and_passes_results_through():
  class Model:
    def loglikelihood(self, requests):
      return [len(r) for r in requests]

  model, seconds = Model(), []
  child.timed_method(model, "loglikelihood", seconds)
  assert model.loglikelihood(["ab", "c"]) == [2, 1]
  assert len(seconds) == 1 and seconds[0] >= 0


def test_verdict():
  assert vs.verdict(2.6, 2.5) == "2.60x (target >= 2.5x: met)"
  assert vs.verdict(1.5, 2.0) == "1.50x (target >= 2x: NOT met)"
  assert vs.verdict(1.5, None) == "1.50x"


def test_skips_in_one_line_without_lm_eval():
  if vs.lm_eval_missing() is None:
    pytest.skip("lm-eval is installed here: the skip path cannot run")
  result = subprocess.run([sys.executable, str(BENCHMARKS / "vs_lm_eval.py")],
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("skipped: lm-eval is not installed")
  assert len(result.stdout.splitlines()) == 1


def test_other_processes_cpu_is_measured_around_a_run(tmp_path):
  cores = vs.other_cores(0.2)
  assert 0 <= cores <= os.cpu_count() + 0.5
  burn = [sys.executable, "-c", "import time\nt = time.process_time()\n"
                                "while time.process_time() - t < 0.5: pass"]
  measured = vs.run_measured(burn, dict(os.environ), tmp_path / "burn.log")
  assert measured.wall_s >= 0.5 and measured.peak_bytes > 0
  assert 0 <= measured.other_cores <= os.cpu_count() + 0.5  # the child's own CPU is not counted
  start = time.monotonic()
  vs.wait_quiet(max_cores=-1, max_wait=0)  # never quiet enough: gives up at once
  assert time.monotonic() - start < 30


def run_of(wall: float, peak_gib: float, scoring: float, others: float) -> object:
  return vs.ToolRun(vs.Measured(wall, int(peak_gib * 2**30), others), scoring, {(0, 0): -1.0})


def test_only_quiet_pairs_give_medians_and_ratios(capsys):
  quiet = {"invscale": run_of(10, 1, 5, 0.1), "lm-eval": run_of(30, 2, 20, 0.0)}
  busy = {"lm-eval": run_of(90, 2, 80, 1.5), "invscale": run_of(20, 1, 9, 0.2)}
  assert vs.is_quiet(quiet, 0.25) and not vs.is_quiet(busy, 0.25)
  warm = vs.report("memo-trap", "warm", [quiet, busy, quiet], 0.25)
  out = capsys.readouterr().out
  assert "pair 2 (lm-eval then invscale): CONTENDED (left out)" in out
  assert "medians of 2 quiet pairs" in out
  assert "wall 3.00x (target >= 2.5x: met)" in out  # 30 / 10: the contended pair left out
  assert "peak memory 2.00x (target >= 1x: met)" in out
  assert vs.report("memo-trap", "cold", [busy], 0.25) is None
  assert "no quiet pair" in capsys.readouterr().out
  cold = {"invscale": run_of(11.5, 1, 6, 0.1)}
  assert "wall 1.15x (target <= 1.1x: NOT met)" in vs.cold_line(cold["invscale"], warm["invscale"],
                                                                 "memo-trap")
