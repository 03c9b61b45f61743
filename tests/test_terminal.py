"""What a user sees at the terminal: no library noise, a results table when scoring ends,
an index of the results directory, a dry run that writes nothing, and `--version`."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import (SCORE_ARGS, TINY_MODELS, RunCli, ScoreCli, file_states, find_run,
                      run_dirs)
from invscale_jax import overview, results

# Lines the libraries print at start-up when nothing silences them.
NOISE = ("absl::InitializeLog", "cudart_stub", "oneDNN", "cpu_feature_guard")


def run_module(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "invscale_jax.cli", *args], env=env,
                        capture_output=True, text=True, timeout=600, check=False)


def plain_env(score_cli: ScoreCli) -> dict[str, str]:
  """The environment of a user who set nothing (no TF_CPP_MIN_LOG_LEVEL)."""
  env = score_cli.env()
  for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
    env.pop(name, None)
  return env


def test_score_is_quiet_and_ends_with_the_results_table(score_cli, reference_results, tmp_path):
  out = shutil.copytree(reference_results, tmp_path / "results")
  for run_dir in run_dirs(out):
    if results.read_run_info(run_dir)["model"]["name"] == "tiny-2":
      shutil.rmtree(run_dir)  # something to do: tiny-2's runs
  done = run_module(score_cli.argv(out, *SCORE_ARGS), plain_env(score_cli))
  assert done.returncode == 0, done.stderr
  assert not [n for n in NOISE if n in done.stderr], done.stderr
  table = done.stdout.splitlines()
  assert table[0] == f"results in {out}"
  assert table[1].split() == ["model", "task.variant", "status", "examples", "result",
                              "95%-interval", "unparseable", "setup", "caveats", "records"]
  rows = [line.split() for line in table[2:]]
  assert len(rows) == 8 and {r[0] for r in rows} == set(TINY_MODELS)
  memo = next(r for r in rows if r[:2] == ["tiny-1", "memo-trap.zero_shot"])
  assert memo[2:4] == ["complete", "24"] and memo[4] == "acc" and memo[5].endswith("%")
  assert memo[6].endswith("%") and memo[8:12] == ["fp32,", "BOS", "0", "untrained"]
  assert memo[-1] == f"runs/{find_run(out, 'tiny-1', 'memo-trap', 'zero_shot').name}"
  index = (out / overview.INDEX).read_text()
  assert f"| tiny-1 | memo-trap.zero_shot | complete | 24 |" in index
  assert index.count("\n| tiny-") == 8


def test_verbose_shows_the_libraries_messages(score_cli, tmp_path):
  shown = run_module(["-v", "data", "status", "--data_dir", str(score_cli.data_dir)],
                     plain_env(score_cli))
  assert shown.returncode == 0, shown.stderr
  quiet = run_module(["data", "status", "--data_dir", str(score_cli.data_dir)],
                     plain_env(score_cli))
  assert quiet.returncode == 0 and not [n for n in NOISE if n in quiet.stderr], quiet.stderr
  assert "--version" not in shown.stderr


def test_quiet_flag_and_results_command(run_cli: RunCli, reference_results, tmp_path):
  out = shutil.copytree(reference_results, tmp_path / "results")
  shown = run_cli("results", out)
  assert shown.code == 0, shown.err
  assert shown.out.splitlines()[0] == f"results in {out}"
  assert len(shown.out.splitlines()) == 2 + 8
  assert (out / overview.INDEX).is_file()


def test_partial_and_damaged_runs_are_shown_as_such(run_cli: RunCli, reference_results,
                                                    tmp_path):
  out = shutil.copytree(reference_results, tmp_path / "results")
  partial = find_run(out, "tiny-1", "neqa", "1_shot")
  (partial / "COMPLETE").unlink()
  sorted(partial.glob("chunk-*.jsonl"))[-1].unlink()
  damaged = find_run(out, "tiny-2", "neqa", "1_shot")
  chunk = sorted(damaged.glob("chunk-*.jsonl"))[0]
  chunk.write_bytes(chunk.read_bytes()[:-10])
  lines = {(l.model, l.task, l.variant): l for l in overview.lines(str(out))}
  assert lines[("tiny-1", "neqa", "1_shot")].status == overview.PARTIAL
  assert lines[("tiny-1", "neqa", "1_shot")].n_done == 8
  bad = lines[("tiny-2", "neqa", "1_shot")]
  assert bad.status == overview.PARTIAL and "changed after the run was completed" in bad.note
  shown = run_cli("results", out).out
  assert "tiny-1  neqa.1_shot" in shown and "8/16" in shown


def test_dry_run_lists_runs_and_writes_nothing(run_cli: RunCli, tiny_family, small_data_dir,
                                               reference_results, tmp_path):
  out = shutil.copytree(reference_results, tmp_path / "results")
  partial = find_run(out, "tiny-1", "neqa", "1_shot")
  (partial / "COMPLETE").unlink()
  sorted(partial.glob("chunk-*.jsonl"))[-1].unlink()
  shutil.rmtree(find_run(out, "tiny-2", "memo-trap", "zero_shot"))
  before = file_states(out)
  shown = run_cli("score", "--family", tiny_family, "--data_dir", small_data_dir, "--out", out,
                  *SCORE_ARGS, "--dry_run")
  assert shown.code == 0, shown.err
  assert file_states(out) == before
  rows = {tuple(line.split()[:2]): line for line in shown.out.splitlines()[2:-1]}
  assert len(rows) == 8
  assert " complete " in rows[("tiny-1", "memo-trap.zero_shot")]
  assert "partial (8 of 16)" in rows[("tiny-1", "neqa.1_shot")]
  assert " to do " in rows[("tiny-2", "memo-trap.zero_shot")]
  # Timed from the reference run's own throughput, recorded in COMPLETE.
  assert "unknown" not in rows[("tiny-1", "neqa.1_shot")]
  assert shown.out.splitlines()[-1].startswith("6 complete, 1 partial, 1 to do; ")


def test_version(run_cli: RunCli):
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as exit_info:
    run_cli("--version")
  assert exit_info.value.code == 0
  assert importlib.metadata.version("invscale-jax")
