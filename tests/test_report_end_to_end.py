"""`invscale report` end to end on a synthetic RESULTS directory written through the results
store, as `invscale score` writes it."""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import re

import matplotlib.image
import numpy as np
import pytest

from invscale_jax import records
from invscale_jax import results as results_lib
from invscale_jax.report import analysis
from invscale_jax.report import commands
from invscale_jax.report import load
from invscale_jax.report import plots
from invscale_jax.report.errors import ReportError

N = 200  # examples per task
TOKENS = 2e10
# name -> n_params; compute = 6 N D
MODELS = {"tiny-1": 1e6, "tiny-2": 1e7, "tiny-3": 1e8, "tiny-4": 1e9}
ACCURACY = {  # (task, variant) -> true accuracy of each model, smallest first
    ("memo-trap", "zero_shot"): (0.9, 0.75, 0.55, 0.35),  # inverse
    ("memo-trap", "1_shot"): (0.4, 0.55, 0.7, 0.9),  # positive
    ("neqa", "zero_shot"): (0.8, 0.45, 0.8),  # U-shaped; tiny-4 has no neqa runs
    ("neqa", "1_shot"): (0.5, 0.5, 0.5),
}


def entry(name, n_params=None):
  return {"name": name, "architecture": "decoder_only", "gin": "tiny.gin",
          "checkpoint": f"{name}/checkpoint_0", "vocabulary": {"type": "byte"},
          "n_params": int(n_params or MODELS[name]), "train_tokens": TOKENS, "train_flops": None}


def write_run(results_dir, model, task, variant, recs, complete=True, run_key=None,
              family="tiny", n_params=None, trained=None, **more_info):
  """Writes a run through the results store, as `invscale score` does. A complete run has
  as many examples as `recs` hold; an incomplete one is a part of N examples. `trained`:
  the manifest's field; `more_info`: run.json fields to add or replace."""
  run_key = run_key or f"{model}.{task}.{variant}"
  n_examples = len({r.example_id for r in recs}) if complete else N
  run_dir = results_lib.run_dir(str(results_dir), run_key)
  info = {"run_key": run_key, "engine_version": "test", "family": family,
          "model": dict(entry(model, n_params), **(
              {} if trained is None else {"trained": trained})),
          "task": task, "variant": variant, "data_sha256": "0" * 64, "vocabulary": "byte",
          "options": {}, "n_examples": n_examples, "n_rows": len(recs), "n_records": len(recs),
          "record_kinds": sorted({r.kind for r in recs}), **more_info}
  recs = [dataclasses.replace(r, run_key=run_key) for r in recs]
  with results_lib.LeaseKeeper() as keeper:
    writer = results_lib.open_run(run_dir, info, run_key, keeper)
    if recs:
      writer.write_chunk(recs)
    if complete:
      writer.finish()
  return pathlib.Path(run_dir)


def class_records(model, task, variant, p, rng, n=N):
  out = []
  for i in range(n):
    answer, correct = i % 2, rng.random() < p
    for c in range(2):
      lp = -1.0 if (c == answer) == correct else -1.0 - rng.uniform(0.1, 2.0)
      out.append(records.Record(
          run_key="", model=model, task=task, variant=variant, example_id=i,
          kind=records.CLASS, class_index=c, n_classes=2, answer_index=answer, logprob=lp,
          n_tokens=1, n_bytes=4, is_correct=c == answer))
  return out


def sequence_records(model, variant, mean_loss, rng):
  return [records.Record(run_key="", model=model, task="prompt-injection", variant=variant,
                         example_id=i, kind=records.SEQUENCE, class_index=None, n_classes=1,
                         answer_index=None, logprob=-rng.normal(mean_loss, 1.0), n_tokens=5,
                         n_bytes=20, is_correct=None) for i in range(N)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  root = tmp_path_factory.mktemp("results")
  rng = np.random.default_rng(0)
  names = list(MODELS)
  for (task, variant), accs in ACCURACY.items():
    for model, p in zip(names, accs):
      incomplete = (task, variant, model) == ("neqa", "1_shot", "tiny-3")
      write_run(root, model, task, variant, class_records(model, task, variant, p, rng,
                                                          n=N // 2 if incomplete else N),
                complete=not incomplete)
  for variant in ("zero_shot", "1_shot"):
    for model, loss in zip(names, (5.0, 6.0, 7.0, 8.0)):
      write_run(root, model, "prompt-injection", variant,
                sequence_records(model, variant, loss, rng))
  return root


def test_report_end_to_end(results, tmp_path, run_cli):
  ext = tmp_path / "palm.csv"
  ext.write_text("model,compute,task,metric,value,ci_low,ci_high,variant,family\n"
                 "palm-8b,3.7e22,memo-trap,accuracy,0.7,0.65,0.75,zero_shot,PaLM\n"
                 "palm-62b,2.9e23,memo-trap,accuracy,0.6,,,zero_shot,PaLM\n")
  out = tmp_path / "report"
  result = run_cli("report", results, "--out", out, "--external", ext, "--resamples", "400")
  assert result.code == 0, result.err
  assert sorted(p.name for p in out.iterdir()) == sorted(
      ["metrics.csv", "metrics.json", "curves.png", "curves.svg", "report.html", "summary.md",
       ".invscale-report"])
  assert not list(tmp_path.glob(".report.*"))  # no temporary directory left behind

  rows = list(csv.DictReader(open(out / "metrics.csv")))
  assert list(rows[0]) == ["family", "model", "compute", "n_params", "task", "variant",
                           "metric", "value", "ci_low", "ci_high", "n_examples", "chance",
                           "notes"]
  # classification runs: 4 metrics (accuracy, loss, total_logprob, tie_rate) x 14 runs;
  # prompt-injection: loss x 8 runs; averages (accuracy, loss) x 2 variants x 4 models;
  # external: 2 rows.
  assert len(rows) == 4 * 14 + 8 + 16 + 2
  acc = {r["model"]: r for r in rows if (r["task"], r["variant"], r["metric"]) ==
         ("memo-trap", "zero_shot", "accuracy")}
  assert set(acc) == {"tiny-1", "tiny-2", "tiny-3", "tiny-4", "palm-8b", "palm-62b"}
  assert float(acc["tiny-1"]["compute"]) == 6 * 1e6 * TOKENS
  assert float(acc["tiny-1"]["ci_low"]) < float(acc["tiny-1"]["value"]) < float(
      acc["tiny-1"]["ci_high"])
  assert float(acc["tiny-1"]["chance"]) == 0.5 and acc["tiny-1"]["n_examples"] == str(N)

  data = json.loads((out / "metrics.json").read_text())
  labels = {(c["task"], c["variant"], c["metric"]): c.get("label") for c in data["curves"]}
  assert labels[("memo-trap", "zero_shot", "accuracy")] == "inverse"
  assert labels[("memo-trap", "1_shot", "accuracy")] == "positive"
  assert labels[("neqa", "zero_shot", "accuracy")] == "U-shaped"
  assert labels[("prompt-injection", "zero_shot", "loss")] == "inverse"  # loss rises
  curve = next(c for c in data["curves"] if (c["task"], c["variant"], c["metric"]) ==
               ("memo-trap", "zero_shot", "accuracy"))
  assert len(curve["steps"]) == 3 and all(s["diff"] < 0 and s["significant"]
                                          for s in curve["steps"])
  average = next(a for a in data["averages"] if (a["variant"], a["metric"]) ==
                 ("zero_shot", "accuracy"))
  assert average["tasks"] == ["memo-trap"] and "neqa" in average["left_out"]

  png = (out / "curves.png").read_bytes()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
  height, width, _ = matplotlib.image.imread(out / "curves.png").shape
  assert 0.8 * height < width < 1.6 * height  # four panels in a 2 x 2 grid
  svg = (out / "curves.svg").read_text()
  for title in ("memo-trap", "neqa", "prompt-injection", "Average"):
    assert title in svg
  page = (out / "report.html").read_text()
  assert "data:image/png;base64," in page and "<table>" in page
  assert "http://" not in page and "https://" not in page and "<script" not in page
  summary = (out / "summary.md").read_text()
  assert "| family | task | zero_shot | 1_shot |" in summary
  assert "| tiny | memo-trap | inverse | positive |" in summary
  assert "| tiny | neqa | U-shaped |" in summary
  assert "yes: inverse → positive" in summary  # the variant comparison
  assert "tiny zero_shot neqa: no run for tiny-4" in summary
  assert "tiny/tiny-3 1_shot neqa: incomplete (no COMPLETE marker), 100 of 200" in summary
  assert "Class balance" in summary and "0: 50.0%, 1: 50.0%" in summary
  assert "How shape labels are decided" in summary


def test_figure_has_one_panel_per_task_plus_average(results):
  a = analysis.analyse(load.load_runs([results]), options=analysis.Options(resamples=200))
  assert len(plots.figure(a, "accuracy").axes) == 4  # memo-trap, neqa, prompt-injection, avg
  assert len(plots.figure(a, "loss").axes) == 4
  with pytest.raises(ReportError, match="use at least 120"):  # 3 steps: 2/(B+1) <= 0.05/3
    analysis.analyse(load.load_runs([results]), options=analysis.Options(resamples=100))


def test_rerun_replaces_report_but_never_other_directories(tmp_path):
  results = small_results(tmp_path / "results")
  out = tmp_path / "report"
  for _ in range(2):
    commands.make_report([str(results)], str(out), options=analysis.Options(resamples=200))
  assert (out / "summary.md").is_file()
  other = tmp_path / "notes"
  other.mkdir()
  (other / "keep.txt").write_text("mine")
  with pytest.raises(ReportError, match="not a report directory"):
    commands.make_report([str(results)], str(other), options=analysis.Options(resamples=200))
  assert (other / "keep.txt").read_text() == "mine"


def small_results(root):
  rng = np.random.default_rng(1)
  for model in ("tiny-1", "tiny-2"):
    write_run(root, model, "memo-trap", "zero_shot",
              class_records(model, "memo-trap", "zero_shot", 0.6, rng, n=10))
  return root


def _mixed(root):
  rng = np.random.default_rng(2)
  write_run(root, "tiny-1", "memo-trap", "zero_shot",
            class_records("tiny-1", "memo-trap", "zero_shot", 0.6, rng, n=10), run_key="other")
  return [], "mixed runs for tiny/tiny-1 memo-trap zero_shot"


def _unknown_task(root):
  info_path = root / "runs" / "tiny-2.memo-trap.zero_shot" / "run.json"
  info = json.loads(info_path.read_text())
  info_path.write_text(json.dumps(dict(info, task="no-such-task")))
  return [], "unknown task 'no-such-task'"


def _not_in_manifest(root):
  manifest = root / "tiny.json"
  manifest.write_text(json.dumps({"family": "tiny", "models": [
      dict(entry("tiny-1"), gin="tiny.gin")]}))
  return [str(manifest)], "no model named 'tiny-2'"


def _bad_line(root):
  with open(root / "runs" / "tiny-1.memo-trap.zero_shot" / "chunk-000000.jsonl", "a") as f:
    f.write("{not json\n")
  return [], r"chunk-000000.jsonl:21: record"


@pytest.mark.parametrize("break_it", [_mixed, _unknown_task, _not_in_manifest, _bad_line])
def test_bad_input_fails_in_one_line_and_writes_nothing(tmp_path, break_it, run_cli):
  results = small_results(tmp_path / "results")
  manifests, message = break_it(results)
  out = tmp_path / "report"
  result = run_cli("report", results, "--out", out, "--resamples", "200",
                   *(a for m in manifests for a in ("--family", m)))
  assert result.code == 2 and result.out == ""
  assert re.fullmatch(f"invscale: error: .*{message}.*\n", result.err), result.err
  assert not out.exists() and not list(tmp_path.glob(".report*"))


def test_manifest_overrides_compute(tmp_path):
  results = small_results(tmp_path / "results")
  manifest = tmp_path / "tiny.json"
  manifest.write_text(json.dumps({"family": "tiny", "models": [
      dict(entry(m), train_tokens=None, train_flops=f) for m, f in
      (("tiny-1", 1e20), ("tiny-2", 1e21))]}))
  out = commands.make_report([str(results)], str(tmp_path / "r"), [str(manifest)],
                             options=analysis.Options(resamples=200))
  rows = list(csv.DictReader(open(out / "metrics.csv")))
  assert {r["model"]: float(r["compute"]) for r in rows} == {"tiny-1": 1e20, "tiny-2": 1e21}


def test_chain_of_thought_on_a_parameter_axis(tmp_path):
  results_dir = small_results(tmp_path / "results")
  for k, model in enumerate(("tiny-1", "tiny-2")):
    gens = [records.Record(
        run_key="", model=model, task="memo-trap", variant="cot_1_shot", example_id=i,
        kind=records.GENERATION, class_index=None if i < 2 + 2 * k else i % 2, n_classes=2,
        answer_index=i % 2, logprob=None, n_tokens=30, n_bytes=120,
        is_correct=None if i < 2 + 2 * k else True, generation="...", parsed=i >= 2 + 2 * k)
        for i in range(10)]
    write_run(results_dir, model, "memo-trap", "cot_1_shot", gens)
  manifest = tmp_path / "tiny.json"  # training tokens unknown: plot against parameters
  manifest.write_text(json.dumps({"family": "tiny", "models": [
      dict(entry(m), train_tokens=None) for m in ("tiny-1", "tiny-2")]}))
  out = commands.make_report([str(results_dir)], str(tmp_path / "r"), [str(manifest)],
                             options=analysis.Options(resamples=200))
  summary = (out / "summary.md").read_text()
  assert "x axis: parameters" in summary
  assert ("- Chain of thought: accuracy parses the generated answer; loss re-scores the "
          "classes after the generation\n") in summary
  assert "| tiny | memo-trap | cot_1_shot | tiny-1 | 20.0% |" in summary
  assert "| tiny | memo-trap | cot_1_shot | tiny-2 | 40.0% |" in summary
  rows = list(csv.DictReader(open(out / "metrics.csv")))
  cot = {r["model"]: r for r in rows if (r["variant"], r["metric"]) == ("cot_1_shot",
                                                                        "accuracy")}
  assert float(cot["tiny-1"]["value"]) == 0.8 and float(cot["tiny-2"]["value"]) == 0.6
  assert not any(r["variant"] == "cot_1_shot" and r["metric"] == "loss" for r in rows)


def test_run_with_nothing_written_yet_is_listed_as_missing(tmp_path):
  results_dir = small_results(tmp_path / "results")
  write_run(results_dir, "tiny-3", "memo-trap", "zero_shot", [], complete=False)
  out = commands.make_report([str(results_dir)], str(tmp_path / "r"),
                             options=analysis.Options(resamples=200))
  assert ("tiny/tiny-3 zero_shot memo-trap: incomplete (no COMPLETE marker), 0 of 200 "
          "examples scored") in (out / "summary.md").read_text()


def test_two_families_share_one_axis(results, tmp_path):
  other = tmp_path / "other"
  rng = np.random.default_rng(3)
  for model, p in (("tiny-3", 0.3), ("tiny-4", 0.9)):  # reuse sizes under another family
    write_run(other, model, "memo-trap", "zero_shot",
              class_records(model, "memo-trap", "zero_shot", p, rng), family="big")
  out = commands.make_report([str(results), str(other)], str(tmp_path / "r"),
                             options=analysis.Options(resamples=200))
  summary = (out / "summary.md").read_text()
  assert "| big | memo-trap | positive |" in summary
  assert "| tiny | memo-trap | inverse | positive |" in summary
  assert "big zero_shot neqa: no runs" in summary
