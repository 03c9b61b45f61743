"""The results store never marks a run complete over wrong, missing or duplicated records.

Each test reproduces a way it used to (two writers on one results dir, a nonsensical
chunk size, a NaN checkpoint, COMPLETE over missing, truncated or foreign chunks, a stray
file) and checks what happens now, with the real CLI, real checkpoints and real rows.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import stat
import time

import numpy as np
import pytest

from conftest import (N_RUNS, SCORE_ARGS, RunCli, ScoreCli, assert_finished,
                      assert_same_records, find_run, read_results, run_dirs)
from invscale_jax import checkpoints, records, results
from invscale_jax.models import tiny

ONE_RUN = ("--model", "tiny-1", "--tasks", "memo-trap", "--variants", "zero_shot")


@pytest.fixture
def score_here(run_cli: RunCli, tiny_family: pathlib.Path, small_data_dir: pathlib.Path,
               clean_gin: None):
  """`invscale score` in this process on the tiny family; returns the CLI result."""
  del clean_gin
  return lambda out, *args, family=tiny_family: run_cli(
      "score", "--family", family, "--data_dir", small_data_dir, "--out", out, *args)


def one_line_error(result) -> str:
  """The one error line of a failed command (progress lines may precede it)."""
  assert result.code == 2, result.err
  lines = result.err.rstrip("\n").split("\n")
  assert lines[-1].startswith("invscale: error: "), result.err
  assert "Traceback" not in result.err and "invscale: error" not in "".join(lines[:-1])
  return lines[-1]


# ---------------------------------------------------------------------------- two writers


def test_a_held_run_is_refused_naming_its_holder(score_here, tmp_path):
  out = tmp_path / "results"
  first = score_here(out, *ONE_RUN, "--chunk_size", "10")
  assert first.code == 0, first.err
  run_dir = run_dirs(out)[0]
  (run_dir / "COMPLETE").unlink()  # make it a run to do again
  lease = results.Lease(str(run_dir), "test")
  lease.acquire()
  try:
    before = sorted(p.name for p in run_dir.iterdir())
    line = one_line_error(score_here(out, *ONE_RUN, "--chunk_size", "16"))
    assert f"being scored by pid {os.getpid()} on {socket.gethostname()}" in line
    assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written, nothing removed
  finally:
    lease.release()
  assert score_here(out, *ONE_RUN).code == 0
  assert_finished(out, 1)


def test_two_processes_on_one_results_dir_never_duplicate_or_lose_records(
    score_cli: ScoreCli, reference_results: pathlib.Path, tmp_path: pathlib.Path):
  """Started together with different chunk sizes: whichever meets a run the other holds
  stops with a clear message; the results are the uninterrupted ones, each record once."""
  out = tmp_path / "results"
  args = [a for a in SCORE_ARGS]
  jobs = [score_cli.start(out, *args[:-4], "--chunk_size", size, "--tokens_per_batch", "1024")
          for size in ("3", "16")]
  outcomes = [job.finish(600) for job in jobs]
  for outcome in outcomes:
    assert outcome.code == 0 or "being scored by pid" in outcome.err, outcome.err
  assert any(o.code == 0 for o in outcomes)
  rerun = score_cli.run(out, *SCORE_ARGS)  # finishes what a refused process left
  assert rerun.code == 0, rerun.err
  assert_finished(out, N_RUNS)
  assert_same_records(read_results(out), read_results(reference_results), 1e-5)


def test_an_expired_or_orphaned_lease_is_taken_over(tmp_path):
  run_dir = str(tmp_path / "run")
  path = pathlib.Path(run_dir) / results.LEASE
  path.parent.mkdir()
  host = socket.gethostname()
  alive = {"host": "elsewhere", "pid": 1, "since": "then", "expires": time.time() + 60}
  for holder, takeable in ((alive, False),
                           (dict(alive, expires=time.time() - 1), True),
                           (dict(alive, host=host, pid=2**22 + 12345), True),  # no such pid
                           (dict(alive, host=host, pid=os.getpid()), False)):
    path.write_text(json.dumps(holder))
    lease = results.Lease(run_dir, "run")
    if takeable:
      lease.acquire()
      assert json.loads(path.read_text())["pid"] == os.getpid()
      lease.release()
      assert not path.exists()
    else:
      with pytest.raises(results.RunBusy, match=f"pid {holder['pid']} on {holder['host']}"):
        lease.acquire()


def test_a_lease_taken_over_stops_the_writer(tmp_path):
  run_dir = str(tmp_path / "run")
  lease = results.Lease(run_dir, "run")
  lease.acquire()
  other = {"host": "elsewhere", "pid": 1, "since": "now", "expires": time.time() + 60}
  (tmp_path / "run" / results.LEASE).write_text(json.dumps(other))
  lease.renew()
  with pytest.raises(results.LeaseLost, match="another process took over"):
    lease.check()


# ---------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("flag,value", [
    ("--chunk_size", "-3"), ("--chunk_size", "0"), ("--dtype", "int8"),
    ("--dtype", "float8"), ("--temperature", "-1"), ("--temperature", "nan"),
    ("--generation_length", "0"), ("--seed", "-1"), ("--tokens_per_batch", "-1"),
    ("--max_length", "1"), ("--tokenization", "both"), ("--bos", "first")])
def test_bad_options_are_one_line_errors_and_write_nothing(score_here, tmp_path, flag, value):
  out = tmp_path / "results"
  line = one_line_error(score_here(out, *ONE_RUN, flag, value))
  assert f"{flag} (ScoringOptions.{flag[2:]}): must be" in line
  assert not out.exists()


def test_bad_options_bound_in_gin_are_one_line_errors(score_here, tmp_path):
  line = one_line_error(score_here(tmp_path / "r", *ONE_RUN, "--gin_bindings",
                                   "ScoringOptions.chunk_size = -3"))
  assert "--chunk_size (ScoringOptions.chunk_size): must be an integer >= 1, got -3" in line


# ---------------------------------------------------------------------------- NaN


def test_a_nan_checkpoint_fails_loudly_and_writes_no_records(score_here, tiny_family, tmp_path):
  manifest = json.loads(tiny_family.read_text())
  entry = dict(manifest["models"][0])
  params = checkpoints.read_checkpoint(tiny_family.parent / entry["checkpoint"])
  params["decoder"]["decoder_norm"]["scale"] = np.full_like(
      params["decoder"]["decoder_norm"]["scale"], np.nan)
  checkpoints.write_checkpoint(tmp_path / "nan", params, dtype="float32")
  entry.update(checkpoint=str(tmp_path / "nan" / "checkpoint_0"),
               gin=tiny.gin_file(entry["name"]))
  family = tmp_path / "nan.json"
  family.write_text(json.dumps({"family": "nan", "models": [entry]}))
  out = tmp_path / "results"
  line = one_line_error(score_here(out, *ONE_RUN, family=family))
  assert "tiny-1 memo-trap.zero_shot" in line and "not a finite number" in line
  [run_dir] = run_dirs(out)
  assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"]  # no chunk, no lease


def test_records_with_nan_are_rejected_naming_the_line(tmp_path):
  good = records.Record(run_key="k", model="m", task="memo-trap", variant="zero_shot",
                        example_id=0, kind=records.CLASS, class_index=0, n_classes=2,
                        answer_index=0, logprob=-1.0, n_tokens=1, n_bytes=2, is_correct=True)
  text = records.format_chunk([good]).decode() + good.to_json().replace("-1.0", "NaN") + "\n"
  with pytest.raises(ValueError, match=r"chunk:2: record: logprob: must be a finite number"):
    records.parse_chunk("chunk", text.encode())
  with pytest.raises(ValueError, match="not a finite number"):
    records.check_finite([records.Record(**dict(good.__dict__, logprob=float("nan")))], "run")


# ---------------------------------------------------------------------------- tampered runs


def tamper_missing(run_dir: pathlib.Path) -> None:
  sorted(run_dir.glob("chunk-*.jsonl"))[1].unlink()


def tamper_truncated(run_dir: pathlib.Path) -> None:
  chunk = sorted(run_dir.glob("chunk-*.jsonl"))[0]
  chunk.write_bytes(chunk.read_bytes()[:-40])


def tamper_foreign(run_dir: pathlib.Path) -> None:
  other = next(d for d in run_dir.parent.iterdir() if d != run_dir)
  shutil.copy(sorted(other.glob("chunk-*.jsonl"))[0], run_dir / "chunk-000900.jsonl")


def tamper_duplicate(run_dir: pathlib.Path) -> None:
  first = sorted(run_dir.glob("chunk-*.jsonl"))[0]
  shutil.copy(first, run_dir / "chunk-000901.jsonl")


@pytest.mark.parametrize("tamper,problem", [
    (tamper_missing, "COMPLETE lists chunks"), (tamper_truncated, "changed after"),
    (tamper_foreign, "COMPLETE lists chunks"), (tamper_duplicate, "COMPLETE lists chunks")],
    ids=["missing", "truncated", "foreign", "duplicate"])
def test_complete_is_verified_and_a_tampered_run_is_repaired(
    tamper, problem, score_here, reference_results, tmp_path):
  out = shutil.copytree(reference_results, tmp_path / "results")
  run_dir = find_run(out, "tiny-1", "memo-trap", "zero_shot")
  tamper(run_dir)
  assert problem in results.verify_complete(str(run_dir))
  result = score_here(out, *SCORE_ARGS)
  assert result.code == 0, result.err
  assert "marked complete, but" in result.err
  assert_finished(out, N_RUNS)
  assert_same_records(read_results(out), read_results(reference_results), 1e-5)
  rejected = list((run_dir / results.REJECTED).glob("*")) if tamper is not tamper_missing else []
  assert len(rejected) == (tamper is not tamper_missing)


def test_a_stray_file_is_ignored_with_a_warning(score_here, reference_results, tmp_path):
  out = shutil.copytree(reference_results, tmp_path / "results")
  run_dir = find_run(out, "tiny-1", "memo-trap", "zero_shot")
  (run_dir / "COMPLETE").unlink()
  (run_dir / "chunk-copy.jsonl").write_text("not records")
  result = score_here(out, *SCORE_ARGS)
  assert result.code == 0, result.err
  assert "chunk-copy.jsonl: ignored (not a chunk name" in result.err
  assert_finished(out, N_RUNS)


# ---------------------------------------------------------------------------- permissions


def test_result_files_follow_the_umask(score_here, tmp_path):
  old = os.umask(0o002)
  try:
    assert score_here(tmp_path / "results", *ONE_RUN).code == 0
  finally:
    os.umask(old)
  files = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
  assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o664 for p in files), [
      (p.name, oct(p.stat().st_mode)) for p in files]


def test_a_write_cut_by_kill_leaves_no_bytes_in_the_next_chunk(tmp_path):
  """tensorstore's file driver writes through `<file>.__lock` and reuses a stale one (left
  by a process killed mid-write) without truncating it: opening the run drops them."""
  run = tmp_path / "run"
  run.mkdir()
  (run / f"{results.chunk_name(0)}.__lock").write_bytes(b"x" * 10_000)  # a longer, cut write
  info = {"run_key": "k", "n_examples": 1, "n_records": 1, "record_kinds": ["sequence"]}
  with results.LeaseKeeper() as keeper:
    writer = results.open_run(str(run), info, "test run", keeper)
    rec = records.Record(run_key="k", model="m", task="t", variant="v", example_id=0,
                         n_classes=1, answer_index=None, n_truncated=0, n_demos_dropped=0,
                         kind=records.SEQUENCE, class_index=None, logprob=-1.0, n_tokens=1,
                         n_bytes=1, is_correct=None)
    writer.write_chunk([rec])
  assert (run / results.chunk_name(0)).read_bytes() == records.format_chunk([rec])
  assert not list(run.glob("*.__lock"))
