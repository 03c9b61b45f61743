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
                      assert_same_records, find_run, read_results, run_dirs, select)
from invscale_jax import checkpoints, records, results
from invscale_jax import family as family_lib
from invscale_jax.engine import loading, plan
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


def plan_one_run(tiny_family: pathlib.Path, data_dir: pathlib.Path, **options) -> plan.Run:
  [run] = plan.plan(family_lib.load(tiny_family), [ONE_RUN[1]], [ONE_RUN[3]], [ONE_RUN[5]],
                    data_dir, plan.ScoringOptions(**options))
  return run


def live_holder(expires_in: float, **changes) -> dict:
  """A lease as a live writer on another host writes it."""
  return dict({"host": "elsewhere", "pid": 4242, "id": "f" * 32, "since": "then",
               "pid_namespace": None, "expires": time.time() + expires_in}, **changes)


def test_a_held_run_is_waited_for_and_its_model_loaded_only_once_claimed(
    score_here, tiny_family, small_data_dir, tmp_path, monkeypatch):
  """A live writer elsewhere holds the run: the process neither stops nor loads the model;
  it waits, and takes the run over once the holder's lease expires."""
  out = tmp_path / "results"
  run_dir = pathlib.Path(plan_one_run(tiny_family, small_data_dir).dir(str(out)))
  run_dir.mkdir(parents=True)
  expires = time.time() + 3
  (run_dir / results.LEASE).write_text(json.dumps(live_holder(3.0, expires=expires)))
  loads = []
  real_load = loading.load_model
  monkeypatch.setattr(loading, "load_model",
                      lambda *a, **k: loads.append(time.time()) or real_load(*a, **k))
  monkeypatch.setenv("INVSCALE_POLL_SECONDS", "0.3")
  result = score_here(out, *ONE_RUN)
  assert result.code == 0, result.err
  assert "waiting for 1 run that other processes hold:" in result.err
  assert "being scored by pid 4242 on elsewhere since then" in result.err
  assert "took over the lease of pid 4242 on elsewhere" in result.err
  assert len(loads) == 1 and loads[0] >= expires
  assert_finished(out, 1)


def test_two_processes_on_one_results_dir_never_duplicate_or_lose_records(
    score_cli: ScoreCli, reference_results: pathlib.Path, tmp_path: pathlib.Path):
  """Started together with different chunk sizes, they share the runs: each scores what
  it claims and waits for what the other holds; the results are the uninterrupted ones,
  each record once."""
  out = tmp_path / "results"
  jobs = [score_cli.start(out, *SCORE_ARGS[:-4], "--chunk_size", size, "--tokens_per_batch",
                          "1024", INVSCALE_POLL_SECONDS="0.5") for size in ("3", "16")]
  outcomes = [job.finish(600) for job in jobs]
  for outcome in outcomes:
    assert outcome.code == 0, outcome.err
  assert_finished(out, N_RUNS)
  assert_same_records(read_results(out), read_results(reference_results), 1e-5)


def test_an_expired_or_orphaned_lease_is_taken_over(tmp_path):
  run_dir = str(tmp_path / "run")
  path = pathlib.Path(run_dir) / results.LEASE
  path.parent.mkdir()
  here = dict(host=socket.gethostname(), pid_namespace=results.Lease(run_dir, "").holder[
      "pid_namespace"])
  alive = live_holder(60.0, pid=1)
  for holder, takeable in ((alive, False),
                           (dict(alive, expires=time.time() - 1), True),
                           (dict(alive, **here, pid=2**22 + 12345), True),  # no such pid
                           (dict(alive, **here, pid=os.getpid()), False),
                           # The same host name in another PID namespace (a container with
                           # the host's network): its pids are not ours to look up.
                           (dict(alive, **here | {"pid_namespace": "pid:[1]"},
                                 pid=2**22 + 12345), False)):
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


@pytest.mark.parametrize("body", [
    "[]", '"x"', '{"expires": null}', '{"expires": 1e400}', "{",
    json.dumps(live_holder(60.0, pid=2**70)), json.dumps(live_holder(1e12)),
    json.dumps(live_holder(60.0, pid=-1))],
    ids=["list", "string", "null", "inf", "not-json", "huge-pid", "far-future", "pid-1"])
def test_a_malformed_lease_is_taken_over_with_one_warning(tmp_path, capsys, body):
  path = tmp_path / "run" / results.LEASE
  path.parent.mkdir()
  path.write_text(body)
  lease = results.Lease(str(path.parent), "run")
  lease.acquire()
  err = capsys.readouterr().err
  assert err == (f"invscale: warning: run: {path} was not a lease this version writes "
                 f"({len(body.encode())} bytes); took it over\n")
  assert json.loads(path.read_text())["id"] == lease.holder["id"]
  lease.release()
  assert not path.exists()


def test_a_writer_whose_lease_was_taken_over_writes_nothing_more(tmp_path):
  """Checked in the stored lease before every chunk and before COMPLETE, not only when
  the lease is renewed (minutes apart)."""
  run_dir = tmp_path / "run"
  info = {"run_key": "k", "model": {"name": "m"}, "task": "memo-trap", "variant": "zero_shot",
          "n_examples": 2, "n_records": 2, "record_kinds": [records.CLASS]}
  recs = [records.Record(run_key="k", model="m", task="memo-trap", variant="zero_shot",
                         example_id=i, kind=records.CLASS, class_index=0, n_classes=1,
                         answer_index=0, logprob=-1.0, n_tokens=1, n_bytes=1, is_correct=True)
          for i in range(2)]
  with results.LeaseKeeper() as keeper:
    writer = results.open_run(str(run_dir), info, "run", keeper)
    writer.write_chunk(recs[:1])
    (run_dir / results.LEASE).write_text(json.dumps(live_holder(60.0)))  # taken over
    with pytest.raises(results.LeaseLost, match="another process took over"):
      writer.write_chunk(recs[1:])
    with pytest.raises(results.LeaseLost, match="another process took over"):
      writer.finish()
  assert sorted(p.name for p in run_dir.iterdir()) == ["LEASE", "chunk-000000.jsonl", "run.json"]
  assert json.loads((run_dir / results.LEASE).read_text())["id"] == "f" * 32  # theirs, kept


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


def edit_first_record(chunk: pathlib.Path, **changes) -> None:
  """Rewrites the chunk's first record with `changes`, the rest as they were."""
  first, rest = chunk.read_text().split("\n", 1)
  chunk.write_text(json.dumps(dict(json.loads(first), **changes)) + "\n" + rest)


def tamper_edited(run_dir: pathlib.Path) -> None:
  """A forged score: a valid record, a likelier class than the model gave."""
  edit_first_record(sorted(run_dir.glob("chunk-*.jsonl"))[1], logprob=-0.001)


@pytest.mark.parametrize("tamper,problem", [
    (tamper_missing, "COMPLETE lists chunks"), (tamper_truncated, "changed after"),
    (tamper_foreign, "COMPLETE lists chunks"), (tamper_duplicate, "COMPLETE lists chunks"),
    (tamper_edited, "chunk-000001.jsonl changed after the run was completed")],
    ids=["missing", "truncated", "foreign", "duplicate", "edited"])
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


def blank_line(chunk: pathlib.Path) -> None:
  lines = chunk.read_text().splitlines(keepends=True)
  chunk.write_text("".join(lines[:2] + ["\n", " \n"] + lines[2:]))


def renumbered(chunk: pathlib.Path) -> None:
  """The run's first chunk as chunk 999999, its last gone: the next is chunk 1000000."""
  sorted(chunk.parent.glob("chunk-*.jsonl"))[-1].unlink()
  chunk.rename(chunk.parent / "chunk-999999.jsonl")


@pytest.mark.parametrize("tamper,rejected", [
    (blank_line, None), (renumbered, None),
    (lambda c: edit_first_record(c, logprob=3.5), "logprob: must be a finite number <= 0"),
    (lambda c: c.write_text(c.read_text().replace('"token_logprobs": null',
                                                  '"token_logprobs": [NaN]', 1)),
     "token_logprobs: must be a list of finite numbers <= 0 (log-probabilities), got [nan]"),
    (lambda c: edit_first_record(c, token_logprobs="-1"), "token_logprobs: must be a list"),
    (lambda c: edit_first_record(c, token_logprobs=[-1, "x"]), "token_logprobs: must be a list"),
    (lambda c: edit_first_record(c, is_correct="yes"), "is_correct: must be true, false or null")],
    ids=["blank-line", "chunk-999999", "logprob>0", "token-nan", "token-string",
         "token-text", "is-correct-text"])
def test_an_unfinished_run_resumes_whatever_its_chunks_hold(
    tamper, rejected, score_here, reference_results, tmp_path):
  """Kept when the records are good (blank lines, any chunk number), else moved aside by
  name and scored again; never a run that cannot be finished."""
  out = shutil.copytree(reference_results, tmp_path / "results")
  run_dir = find_run(out, "tiny-1", "memo-trap", "zero_shot")
  (run_dir / "COMPLETE").unlink()
  chunk = sorted(run_dir.glob("chunk-*.jsonl"))[0]
  tamper(chunk)
  result = score_here(out, *ONE_RUN)
  assert result.code == 0, result.err
  [moved] = run_dir.glob(f"{results.REJECTED}/*") if rejected else [None]
  if rejected:
    assert f"{chunk}:1: record: {rejected}" in result.err and moved.name.endswith(chunk.name)
  assert results.is_complete(run_dir) and not (run_dir / results.LEASE).exists()
  if tamper is renumbered:
    assert results.chunk_names(str(run_dir))[-2:] == ["chunk-999999.jsonl",
                                                      "chunk-1000000.jsonl"]
  assert_same_records(read_results(out, [run_dir]),
                      select(read_results(reference_results), ("tiny-1",), ("memo-trap",),
                             ("zero_shot",)), 1e-5)


def test_a_run_copied_under_another_key_is_not_taken_for_it(
    score_here, reference_results, tmp_path):
  """A complete run of another variant copied over this run's directory: its run.json and
  records are its own, so COMPLETE verifies, but it is not this run."""
  out = shutil.copytree(reference_results, tmp_path / "results")
  target = find_run(out, "tiny-1", "memo-trap", "zero_shot")
  shutil.rmtree(target)
  shutil.copytree(find_run(out, "tiny-1", "memo-trap", "1_shot"), target)
  result = score_here(out, *ONE_RUN)
  assert result.code == 0, result.err
  assert ("marked complete, but its run.json is not this run's (run_key, variant differ: a "
          "run copied under another key?); resuming it") in result.err
  assert_same_records(read_results(out, [target]),
                      select(read_results(reference_results), ("tiny-1",), ("memo-trap",),
                             ("zero_shot",)), 1e-5)


def test_a_run_completed_meanwhile_is_left_as_it_is(reference_results, tmp_path):
  """A second process that planned a run before the first finished it: claiming it finds
  it complete, takes nothing and deletes nothing (COMPLETE stays for readers)."""
  out = shutil.copytree(reference_results, tmp_path / "results")
  run_dir = find_run(out, "tiny-1", "memo-trap", "zero_shot")
  before = sorted(p.name for p in run_dir.iterdir())
  assert results.claim(str(run_dir), "run") is None
  assert sorted(p.name for p in run_dir.iterdir()) == before


def test_names_given_twice_are_planned_once(tiny_family, small_data_dir):
  runs = plan.plan(family_lib.load(tiny_family), ["tiny-1", "tiny-1"],
                   ["memo-trap", "memo_trap", "memo-trap"], ["zero_shot", "zero_shot"],
                   small_data_dir, plan.ScoringOptions())
  assert [r.label for r in runs] == [plan_one_run(tiny_family, small_data_dir).label]


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


def test_a_lease_release_cut_by_kill_leaves_no_lock_file(score_here, reference_results,
                                                          tmp_path):
  """kill -9 while a finished run's LEASE was being deleted leaves only `LEASE.__lock`
  (what CI once caught): the next run, finding the run complete, drops it."""
  out = shutil.copytree(reference_results, tmp_path / "results")
  run_dir = find_run(out, "tiny-1", "memo-trap", "zero_shot")
  (run_dir / f"{results.LEASE}.__lock").write_bytes(b"")
  result = score_here(out, *ONE_RUN)
  assert result.code == 0, result.err
  assert not list(run_dir.glob("*.__lock")) and results.is_complete(run_dir)

