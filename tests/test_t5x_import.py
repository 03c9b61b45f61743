"""`invscale import t5x-infer`: T5X infer's score outputs of a family, into the results
store and the report, against `invscale score` on the same checkpoints.

The outputs are written as T5X's infer.py writes them (`t5x_outputs`), from the SeqIO
tasks as T5X reads them with gin/t5x/score_invscale.gin (its `input_fields_to_include`),
each row scored alone as T5X's score mode does (no prefix sharing, no packing) by this
project's network on the family's checkpoints.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import pathlib
import re
import shutil

import pytest

import t5x_outputs
from conftest import REPO, file_states, read_results
from invscale_jax import records

TASKS = ("memo-trap", "neqa")
VARIANT = "zero_shot"
ROWS = 10  # examples of each task


def gin_fields() -> list[str]:
  """`input_fields_to_include` as gin/t5x/score_invscale.gin binds it."""
  import ast  # pylint: disable=g-import-not-at-top

  text = (REPO / "gin" / "t5x" / "score_invscale.gin").read_text()
  match = re.search(r"input_fields_to_include = (\[.*?\])", text, re.S)
  return ast.literal_eval(match.group(1))


def row_scores(entry):
  """A T5X-style score function of `entry`'s model: each row alone, BOS 0 shifted in."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from invscale_jax.engine import loading, partitioning  # pylint: disable=g-import-not-at-top
  from invscale_jax.engine.requests import Branch, Request  # pylint: disable=g-import-not-at-top
  from invscale_jax.engine.scorer import Scorer  # pylint: disable=g-import-not-at-top

  loaded = loading.load_model(entry, "float32", partitioning.make_mesh(1))
  scorer = Scorer(loaded.model, loaded.params, loaded.mesh, 4096, pack=False)

  def score(rows):
    reqs = [Request(i, records.CLASS, "", np.concatenate([[entry.bos_id], r["inputs"]]).astype(
        np.int32), (Branch(np.zeros(0, np.int32), r["targets"].astype(np.int32), ""),), 0)
            for i, r in enumerate(rows)]
    return [float(np.sum(s[0], dtype=np.float64)) for s in scorer.score(reqs)]

  return score


@pytest.fixture(scope="module")
def family4(tmp_path_factory):
  from invscale_jax import family  # pylint: disable=g-import-not-at-top
  from invscale_jax.models import tiny  # pylint: disable=g-import-not-at-top

  return family.load(tiny.init_tiny(tmp_path_factory.mktemp("fam4") / "tiny"))


@pytest.fixture(scope="module")
def data_dir(small_data_dir, tmp_path_factory) -> pathlib.Path:
  """The first ROWS rows of each task of the small data dir."""
  root = tmp_path_factory.mktemp("data")
  for path in small_data_dir.iterdir():
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    (root / path.name).write_text("".join(lines[:ROWS]), encoding="utf-8")
  return root


@pytest.fixture(scope="module")
def infer_dirs(family4, data_dir, tmp_path_factory) -> list[pathlib.Path]:
  """T5X infer output dirs, one per model (named after it), each with both tasks."""
  import seqio  # pylint: disable=g-import-not-at-top

  import seqio_tasks  # pylint: disable=g-import-not-at-top
  from seqio_tasks import lengths  # pylint: disable=g-import-not-at-top
  from t5x_outputs import write_inferences_to_file  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("t5x_infer")
  write = lambda *a: write_inferences_to_file(*a, input_fields_to_include=gin_fields())
  tasks = [seqio_tasks.build_task(t, VARIANT, seqio.ByteVocabulary(), data_dir=str(data_dir))
           for t in TASKS]
  for entry in family4.models:
    score = row_scores(entry)
    for task in tasks:
      t5x_outputs.infer_task(task, str(root / entry.name), lengths.max_lengths(task), score, write)
    (root / entry.name / "config.gin").write_text("# written by T5X\n")
  return [root / m.name for m in family4.models]


@pytest.fixture(scope="module")
def scored(family4, data_dir, tmp_path_factory) -> pathlib.Path:
  """`invscale score` of the same family, tasks and variant."""
  from invscale_jax import cli  # pylint: disable=g-import-not-at-top

  out = tmp_path_factory.mktemp("scored") / "results"
  assert cli.main(["score", "--family", family4.path, "--data_dir", str(data_dir),
                   "--out", str(out), "--tasks", ",".join(TASKS), "--variants", VARIANT,
                   "--quiet"]) == 0
  return out


def report_rows(run_cli, results: pathlib.Path, out: pathlib.Path) -> list[dict[str, str]]:
  assert run_cli("report", results, "--out", out, "--resamples", "200").code == 0
  return list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))


def test_import_gives_the_records_and_report_of_score(infer_dirs, scored, family4, run_cli,
                                                      tmp_path):
  out = tmp_path / "imported"
  result = run_cli("import", "t5x-infer", "--family", family4.path, "--out", out, *infer_dirs)
  assert result.code == 0, result.err
  imported, expected = read_results(out), read_results(scored)
  assert len(imported) == len(expected) >= 4 * 2 * 2 * ROWS
  worst = 0.0
  for key, want in expected.items():
    have = imported[key]
    worst = max(worst, abs(have.logprob - want.logprob))
    assert dataclasses.replace(have, run_key="", logprob=0.0) == dataclasses.replace(
        want, run_key="", logprob=0.0), key
  assert worst < 1e-4
  got, want = (report_rows(run_cli, r, tmp_path / f"report-{i}")
               for i, r in enumerate((out, scored)))
  assert [{k: v for k, v in r.items() if k not in ("value", "ci_low", "ci_high")} for r in got] \
      == [{k: v for k, v in r.items() if k not in ("value", "ci_low", "ci_high")} for r in want]
  assert {(r["model"], r["task"]) for r in got} >= {
      (m.name, t) for m in family4.models for t in TASKS}
  for g, w in zip(got, want):
    assert float(g["value"]) == pytest.approx(float(w["value"]), abs=1e-5), g
  # Importing the same files again writes nothing.
  before = file_states(out)
  assert run_cli("import", "t5x-infer", "--family", family4.path, "--out", out,
                 *infer_dirs).code == 0
  assert file_states(out) == before


def broken(infer_dirs, tmp_path, edit) -> pathlib.Path:
  """A copy of the first model's infer dir with its memo-trap file's lines edited."""
  copy = tmp_path / infer_dirs[0].name
  shutil.copytree(infer_dirs[0], copy)
  [path] = copy.glob("invscale:memo_trap.*-score.jsonl-00000-of-00001")
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(edit(lines)))
  return copy


def set_field(line: str, **fields) -> str:
  row = json.loads(line)
  for k, v in fields.items():
    if k == "score":
      row["score"] = v
    else:
      row["inputs"][k] = v
  return json.dumps(row) + "\n"


@pytest.mark.parametrize("edit, message", [
    (lambda ls: ls[:3] + ls[4:], r"invscale:memo_trap\.zero_shot-score\.jsonl-00000-of-00001: "
     r"memo-trap\.zero_shot: example 1: class 1 of 2 missing"),
    (lambda ls: ls + ls[5:6], r"-00000-of-00001:21: example 2 class 1: duplicated row \(also "
     r"at .*-00000-of-00001:6\)"),
    (lambda ls: ls[:2] + [set_field(ls[2], score=float("nan"))] + ls[3:],
     r"-00000-of-00001:3: score: must be a finite number, got nan"),
    (lambda ls: [set_field(ls[0], task="neqa")] + ls[1:],
     r"-00000-of-00001:1: a row of neqa\.zero_shot in the output of memo-trap\.zero_shot"),
    (lambda ls: [set_field(ls[0], example_id=None)] + ls[1:],
     r"-00000-of-00001:1: example_id: must be an integer, got None"),
])
def test_bad_input_is_one_line_and_imports_nothing(infer_dirs, family4, run_cli, tmp_path,
                                                   edit, message):
  out = tmp_path / "results"
  bad = broken(infer_dirs, tmp_path, edit)
  result = run_cli("import", "t5x-infer", "--family", family4.path, "--out", out,
                   infer_dirs[1], bad)
  assert result.code == 2
  [line] = result.err.strip().splitlines()
  assert re.search(message, line), line
  assert not out.exists()  # tiny-2's good files were not imported either


def test_unfinished_or_unasked_outputs(infer_dirs, family4, run_cli, tmp_path):
  out = tmp_path / "results"
  unfinished = tmp_path / "tiny-1"
  shutil.copytree(infer_dirs[0], unfinished)
  [marker] = unfinished.glob("invscale:neqa.*.COMPLETED")
  marker.unlink()
  result = run_cli("import", "t5x-infer", "--family", family4.path, "--out", out, unfinished)
  assert result.code == 2 and "no .COMPLETED marker beside it: T5X infer has not finished" \
      in result.err
  plain = broken(infer_dirs, tmp_path / "plain", lambda ls: [json.dumps(
      {"inputs": {k: v for k, v in json.loads(line)["inputs"].items()
                  if k.endswith("_pretokenized")}, "score": -1.0}) + "\n" for line in ls])
  result = run_cli("import", "t5x-infer", "--family", family4.path, "--out", out, plain)
  assert result.code == 2 and "T5X was not asked to write the task's pass-through fields" \
      in result.err
  result = run_cli("import", "t5x-infer", "--family", family4.path, "--out", out,
                   infer_dirs[0], "--model", "tiny-9")
  assert result.code == 2 and "no model named 'tiny-9'" in result.err
  assert not out.exists()


def test_outputs_still_being_written_are_named_and_left_out(infer_dirs, family4, run_cli,
                                                           tmp_path):
  copy = tmp_path / "tiny-1"
  shutil.copytree(infer_dirs[0], copy)
  chunks = copy / "tmp-invscale:memo_trap.1_shot-00000-of-00001"
  chunks.mkdir()
  (chunks / "invscale:memo_trap.1_shot-score.jsonl-00000-of-00001-chunk00000").write_text("{}\n")
  result = run_cli("import", "t5x-infer", "--family", family4.path, "--out", tmp_path / "out",
                   copy)
  assert result.code == 0, result.err
  assert (f"{chunks}: invscale:memo_trap.1_shot is still being written by T5X infer (chunks "
          f"not merged yet); not imported") in result.err
  assert {(r.task, r.variant) for r in read_results(tmp_path / "out").values()} == {
      ("memo-trap", "zero_shot"), ("neqa", "zero_shot")}
