"""Hostile report inputs (issue 21 M14-M16 and the low findings): every one gives one line
naming the flag, file or field and a non-zero exit; names from files are shown as text,
never as Markdown links, images or terminal escape sequences."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import RunCli
from invscale_jax import checks
from invscale_jax.report import analysis
from test_report_end_to_end import class_records, small_results, write_run


def _report(run_cli: RunCli, *args) -> object:
  return run_cli("report", *args, "--resamples", "200")


@pytest.mark.parametrize("flag, value, message", [
    ("--margin", "inf", "must be a number from 0 to 1, got 'inf'"),
    ("--margin", "nan", "must be a number from 0 to 1, got 'nan'"),
    ("--margin", "-0.1", "must be a number from 0 to 1, got '-0.1'"),
    ("--alpha", "nan", "must be a number from 1e-06 to 0.49, got 'nan'"),
    ("--resamples", "1000000000", "must be an integer from 10 to 1000000, got 1000000000"),
    ("--resamples", "\u0661\u0660\u0660", "must be an integer from 10 to 1000000, got '١٠٠'"),
    ("--seed", "1_0", "must be an integer from 0 to 4294967295, got '1_0'"),
    ("--out", "", "must be a path, got an empty string"),
])
def test_report_flags_out_of_range(flag, value, message, tmp_path, run_cli: RunCli,
                                   capsys) -> None:
  args = ["report", str(tmp_path), "--out", str(tmp_path / "r"), flag, value]
  with pytest.raises(SystemExit) as exit_info:
    run_cli(*args)
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.splitlines()[-1] == (
      f"invscale report: error: argument {flag}: {message}")


def test_options_checked_by_the_library_too(tmp_path) -> None:
  for options in (analysis.Options(margin=float("nan")), analysis.Options(margin=float("inf")),
                  analysis.Options(resamples=10**9)):
    with pytest.raises(ValueError, match="0 <= margin <= 1"):
      analysis.analyse([], options=options)


def test_resamples_that_would_not_fit_in_memory(tmp_path, run_cli: RunCli,
                                                monkeypatch) -> None:
  monkeypatch.setattr(analysis, "DRAWS_BYTES", 64 << 20)
  result = run_cli("report", small_results(tmp_path / "results"), "--out", tmp_path / "r",
                   "--resamples", "1000000")
  assert result.code == 2 and result.err.startswith(
      "invscale: error: --resamples 1000000: the bootstrap draws of these runs would take "
      "about ") and "(at most 0.0625 GiB); use at most " in result.err
  assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("row, message", [
    ("m,1e20,memo-trap,accuracy,5", "e.csv:2: value: 5 is outside the range of accuracy (0 to 1)"),
    ("m,1e20,memo-trap,loss,-1", "e.csv:2: value: -1 is outside the range of loss (0 to inf)"),
    ("m,-1e20,memo-trap,loss,1", "e.csv:2: compute: must be positive, got -1e+20"),
    ("m,1e20,memo-trap,accuracy,0.5,0.6,0.7", "e.csv:2: value: 0.5 is outside [ci_low, ci_high]"),
    ("m,1e20,memo-trap,accuracy,0.5" + "x" * 131073,
     "e.csv:2: not valid CSV: field larger than field limit (131072)"),
])
def test_external_values_out_of_range(row, message, tmp_path, run_cli: RunCli) -> None:
  ext = tmp_path / "e.csv"
  ext.write_text(f"model,compute,task,metric,value,ci_low,ci_high\n{row}\n")
  result = _report(run_cli, "--external", ext, "--out", tmp_path / "r")
  assert (result.code, result.err) == (2, f"invscale: error: {tmp_path}/{message}\n")


def test_external_points_alone_make_a_report(tmp_path, run_cli: RunCli) -> None:
  ext = tmp_path / "palm.csv"
  ext.write_text("model,compute,task,metric,value\npalm-8b,3.7e22,memo-trap,accuracy,0.7\n"
                 "palm-62b,2.9e23,memo-trap,accuracy,0.6\n")
  result = _report(run_cli, "--external", ext, "--out", tmp_path / "r")
  assert result.code == 0, result.err
  assert "palm,palm-62b,2.9e+23" in (tmp_path / "r" / "metrics.csv").read_text()


@pytest.mark.parametrize("change, message", [
    ({"model": {"name": "tiny-1", "train_tokens": "x"}},
     "model.train_tokens: must be a finite positive number or null, got 'x'"),
    ({"model": "m"}, "model: must be an object with a name, got 'm'"),
    ({"record_kinds": 5}, "record_kinds: must be a list of class, sequence, generation, got 5"),
    ({"n_examples": 1e400}, "n_examples: must be an integer >= 0, got inf"),
    ({"variant": ["x"]}, "variant: must be a non-empty string, got ['x']"),
])
def test_hostile_run_json_fields(change, message, tmp_path, run_cli: RunCli) -> None:
  results = small_results(tmp_path / "results")
  info_path = results / "runs" / "tiny-1.memo-trap.zero_shot" / "run.json"
  info_path.write_text(json.dumps({**json.loads(info_path.read_text()), **change}))
  expected = f"invscale: error: {info_path}: {message}\n"
  for args in (("report", results, "--out", tmp_path / "r"), ("results", results)):
    result = run_cli(*args)
    assert (result.code, result.err) == (2, expected)


LINK = "[click](http://example.invalid)"
IMAGE = "![x](http://example.invalid/track.png)"
TITLE = "\x1b]0;pwned\x07tiny"  # sets the terminal's title


def test_names_are_text_in_markdown_and_on_the_terminal(tmp_path, run_cli: RunCli) -> None:
  results = tmp_path / "results"
  rng = np.random.default_rng(3)
  for i, model in enumerate((LINK, IMAGE + "\n| forged | row |", TITLE)):
    write_run(results, model, "memo-trap", "zero_shot",
              class_records(model, "memo-trap", "zero_shot", 0.6, rng, n=10),
              run_key=f"run{i}", n_params=10.0 ** (6 + i))
  result = run_cli("results", results)
  assert result.code == 0 and "\x1b" not in result.out and "\x07" not in result.out
  assert "\\x1b]0;pwned\\x07tiny" in result.out
  index = (results / "INDEX.md").read_text()
  assert _rows(index) == 3 + 2  # header and rule
  assert _rows(index, "forged") == 1  # the newline did not start a row
  assert _report(run_cli, results, "--out", tmp_path / "r").code == 0
  for text in (index, (tmp_path / "r" / "summary.md").read_text()):
    assert not re.search(r"(?<!\\)\]\(http", text)  # no link: every `]` escaped
    assert "\\[click\\](http://example.invalid)" in text
    assert "!\\[x\\](http://example.invalid/track.png)" in text


def _rows(markdown: str, containing: str = "") -> int:
  return sum(line.startswith("|") and containing in line for line in markdown.splitlines())


def test_printable() -> None:
  assert checks.printable("a\x1b[31mb\x07\u202ec\nd\te") == "a\\x1b[31mb\\x07\\u202ec\nd\te"
  assert checks.printable("tiny-1 accuracy 60.0%") == "tiny-1 accuracy 60.0%"


def test_manifest_names_must_be_printable(tmp_path, run_cli: RunCli) -> None:
  manifest = tmp_path / "m.json"
  manifest.write_text(json.dumps({"family": "f", "models": [
      {"name": TITLE, "architecture": "decoder_only", "gin": "models/tiny/tiny_1.gin",
       "checkpoint": "ckpt", "vocabulary": {"type": "byte"}}]}))
  result = run_cli("family", "show", manifest)
  assert (result.code, result.err) == (2, (
      f"invscale: error: {manifest}: models[0]: name: must not hold control or line-break "
      "characters, got '\\x1b]0;pwned\\x07tiny'\n"))
