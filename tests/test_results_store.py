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
  assert "waiting for 1 runs that other processes hold:" in result.err
  assert "being scored by pid 4242 on elsewhere since then" in result.err
  assert "took over the lease of pid 4242 on elsewhere" in result.err
  assert len(loads) == 1 and loads[0] >= expires
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
