"""The report's files: names from user files shown as text, and the directory replaced so
that a kill at any point loses nothing for good and leaves nothing behind for good."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

from invscale_jax.report import analysis
from invscale_jax.report import commands
from invscale_jax.report import output
from conftest import RunCli
from test_report_end_to_end import class_records, small_results, write_run

OPTIONS = analysis.Options(resamples=200)
# Names a user controls (manifest family and model names, variant names in run.json).
FAMILY = r"fam$\undefined{x}$"  # mathtext would fail on it (and draw any other $...$)
SMALL = '=HYPERLINK("http://example.invalid","click")'  # a spreadsheet formula
LARGE = "<img src=x onerror=alert(1)>"  # raw HTML
VARIANT = "@zero$shot"


def hostile_results(root: pathlib.Path) -> pathlib.Path:
  rng = np.random.default_rng(3)
  for i, (model, n_params) in enumerate(((SMALL, 1e6), (LARGE, 1e7))):
    write_run(root, model, "memo-trap", VARIANT,
              class_records(model, "memo-trap", VARIANT, 0.6, rng, n=20), run_key=f"run{i}",
              family=FAMILY, n_params=n_params)
  return root


def test_names_are_shown_as_text(tmp_path) -> None:
  out = commands.make_report([str(hostile_results(tmp_path / "results"))],
                             str(tmp_path / "report"), options=OPTIONS)
  svg = (out / "curves.svg").read_text()
  assert FAMILY in svg and "@zero$shot" in svg  # drawn as written, not as mathtext

  summary = (out / "summary.md").read_text()
  assert "<img" not in summary and "&lt;img src=x onerror=alert(1)&gt;" in summary
  assert "| " + FAMILY.replace("\\", "\\\\") + " | memo-trap |" in summary  # \ escaped

  rows = list(csv.DictReader(open(out / "metrics.csv", encoding="utf-8")))
  assert {r["model"] for r in rows} == {"'" + SMALL, LARGE}
  assert {r["variant"] for r in rows} == {"'" + VARIANT} and {r["family"] for r in rows} == {
      FAMILY}
  # Numbers are numbers: a negative value is not quoted.
  logprob = [r["value"] for r in rows if r["metric"] == "total_logprob"]
  assert logprob and all(v.startswith("-") and float(v) < 0 for v in logprob)


def _leftovers(parent: pathlib.Path) -> list[str]:
  return sorted(p.name for p in parent.iterdir() if p.name.startswith(".report"))


def test_a_kill_between_the_two_renames_is_recovered_on_the_next_run(tmp_path) -> None:
  """Replacing DIR renames DIR to .DIR.old, then the new .DIR.<hex>.tmp to DIR: here the
  process died between the two. The earlier report is kept, and the next run puts it back
  before replacing it, leaving nothing else."""
  results = small_results(tmp_path / "results")
  out = tmp_path / "report"
  commands.make_report([str(results)], str(out), options=OPTIONS)
  before = (out / "metrics.json").read_bytes()
  new = tmp_path / ".report.0123456789abcdef.tmp"
  new.mkdir()
  (new / output.MARKER).write_bytes(output.MARKER_TEXT)  # a writer's first file
  (new / "metrics.json").write_text("{}")  # a new report, written whole or not
  out.rename(tmp_path / ".report.old")
  assert (tmp_path / ".report.old" / "metrics.json").read_bytes() == before  # not lost

  commands.make_report([str(results)], str(out), options=OPTIONS)
  assert (out / "metrics.json").read_bytes() == before  # same inputs, same report
  assert _leftovers(tmp_path) == []


def test_a_kill_after_the_swap_or_while_writing_is_cleaned_on_the_next_run(tmp_path) -> None:
  results = small_results(tmp_path / "results")
  out = tmp_path / "report"
  commands.make_report([str(results)], str(out), options=OPTIONS)
  (tmp_path / ".report.old").mkdir()  # killed after the second rename
  (tmp_path / ".report.old" / output.MARKER).write_bytes(output.MARKER_TEXT)
  (tmp_path / ".report.old" / "summary.md").write_text("earlier")
  (tmp_path / ".report.fedcba9876543210.tmp").mkdir()  # killed before writing anything
  (tmp_path / ".report.0123456789abcdef.tmp").mkdir()  # killed while writing
  (tmp_path / ".report.0123456789abcdef.tmp" / output.MARKER).write_bytes(output.MARKER_TEXT)
  (tmp_path / ".report.notes.tmp").mkdir()  # not a name the report uses: kept
  commands.make_report([str(results)], str(out), options=OPTIONS)
  assert _leftovers(tmp_path) == [".report.notes.tmp"]
  assert sorted(p.name for p in out.iterdir()) == sorted(
      ["metrics.csv", "metrics.json", "curves.png", "curves.svg", "report.html", "summary.md",
       output.MARKER])


def test_a_users_dot_old_or_tmp_directory_is_never_removed(tmp_path, run_cli: RunCli) -> None:
  """`.DIR.old` and `.DIR.<hex>.tmp` beside DIR are removed only when a report writer made
  them (they hold MARKER): a user's directory of those names stops the write or is kept."""
  results = small_results(tmp_path / "results")
  out = tmp_path / "report"
  commands.make_report([str(results)], str(out), options=OPTIONS)
  old, tmp = tmp_path / ".report.old", tmp_path / ".report.fedcba9876543210.tmp"
  for mine in (old, tmp):
    mine.mkdir()
    (mine / "metrics.json").write_text("mine")
  result = run_cli("report", results, "--out", out, "--resamples", "200")
  assert result.code == 2 and result.err == (
      f"invscale: error: {old}: exists and is not a report this program wrote (no "
      f"{output.MARKER}); move it away to write report\n")
  (old / "metrics.json").unlink()  # an empty one is not a report either
  assert run_cli("report", results, "--out", out, "--resamples", "200").code == 2
  old.rmdir()
  assert run_cli("report", results, "--out", out, "--resamples", "200").code == 0
  assert (tmp / "metrics.json").read_text() == "mine"
  assert _leftovers(tmp_path) == [tmp.name]


def test_report_respects_the_umask(tmp_path) -> None:
  results = small_results(tmp_path / "results")
  old = os.umask(0o022)
  try:
    out = commands.make_report([str(results)], str(tmp_path / "report"), options=OPTIONS)
  finally:
    os.umask(old)
  assert out.stat().st_mode & 0o777 == 0o755
  assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o644}


TIED = (0, 2, 4, 6, 8, 1)  # examples whose classes tiny-2 scores equally: answers 0,0,0,0,0,1


def tied_results(root: pathlib.Path) -> pathlib.Path:
  """tiny-1 and tiny-2 on 20 memo-trap examples (answer_index = example_id % 2); tiny-2
  scores both classes of the TIED examples equally."""
  rng = np.random.default_rng(4)
  for model in ("tiny-1", "tiny-2"):
    recs = class_records(model, "memo-trap", "zero_shot", 0.5, rng, n=20)
    if model == "tiny-2":
      recs = [dataclasses.replace(r, logprob=-1.0) if r.example_id in TIED else r
              for r in recs]
    write_run(root, model, "memo-trap", "zero_shot", recs)
  return root


def test_ties_follow_the_chosen_rule_and_are_counted(tmp_path, run_cli: RunCli) -> None:
  results = tied_results(tmp_path / "results")
  accuracy, summaries = {}, {}
  for rule in ("default", "argmax", "fractional"):
    out = tmp_path / rule
    result = run_cli("report", results, "--out", out, "--resamples", "200",
                     *(() if rule == "default" else ("--ties", rule)))
    assert result.code == 0, result.err
    data = json.loads((out / "metrics.json").read_text())
    assert data["settings"]["ties"] == ("argmax" if rule == "default" else rule)
    assert data["ties"] == [
        {"family": "tiny", "model": m, "task": "memo-trap", "variant": "zero_shot",
         "tied": tied, "n_examples": 20} for m, tied in (("tiny-1", 0), ("tiny-2", 6))]
    accuracy[rule] = {p["model"]: p["value"] for c in data["curves"]
                      if (c["task"], c["metric"]) == ("memo-trap", "accuracy")
                      for p in c["points"]}
    summaries[rule] = (out / "summary.md").read_text()
  assert accuracy["default"] == accuracy["argmax"]  # the prize's rule by default
  assert accuracy["argmax"]["tiny-1"] == accuracy["fractional"]["tiny-1"]  # no ties
  # On the tied examples argmax predicts class 0: right on 5 of 6; fractional: 6 x 1/2.
  assert accuracy["argmax"]["tiny-2"] - accuracy["fractional"]["tiny-2"] == pytest.approx(
      (5 - 3) / 20)
  assert "| tiny | memo-trap | zero_shot | tiny-2 | 6 | 20 |" in summaries["argmax"]
  assert "Accuracy breaks a tie by **argmax**" in summaries["argmax"]
  assert "Accuracy breaks a tie by **fractional**" in summaries["fractional"]
  assert ("- Data: the memo-trap release changed after the prize's own evaluation; numbers "
          "may differ from the prize's published plots\n") in summaries["argmax"]


def test_metrics_csv_carries_each_points_notes(tmp_path, run_cli: RunCli) -> None:
  """tiny-1 truncated prompts and is untrained: its rows' `notes` say so, as its points'
  notes in metrics.json do; tiny-2's rows and an external point's have none."""
  rng = np.random.default_rng(5)
  results = tmp_path / "results"
  for model, info in (("tiny-1", dict(n_truncated=2, max_length=512, trained=False)),
                      ("tiny-2", {})):
    write_run(results, model, "memo-trap", "zero_shot",
              class_records(model, "memo-trap", "zero_shot", 0.6, rng, n=20), **info)
  ext = tmp_path / "ext.csv"
  ext.write_text("model,compute,task,metric,value\npalm-8b,3.7e22,memo-trap,accuracy,0.7\n")
  out = tmp_path / "report"
  result = run_cli("report", results, "--out", out, "--external", ext, "--resamples", "50")
  assert result.code == 0, result.err
  rows = list(csv.DictReader(open(out / "metrics.csv", encoding="utf-8")))
  assert list(rows[0])[-1] == "notes"
  data = json.loads((out / "metrics.json").read_text())
  points = {(p["model"], c["task"], c["metric"]): p["notes"] for c in data["curves"]
            for p in c["points"]}
  notes = {(r["model"], r["task"], r["metric"]): r["notes"] for r in rows}
  assert notes == {k: "; ".join(v) for k, v in points.items()} | {
      ("palm-8b", "memo-trap", "accuracy"): ""}
  assert notes[("tiny-1", "memo-trap", "accuracy")] == (
      "2 prompts truncated to fit 512 tokens; untrained model (manifest: trained false)")
  assert notes[("tiny-2", "memo-trap", "accuracy")] == ""
