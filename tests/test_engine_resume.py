"""Resumable scoring, end to end with the real CLI, real T5X checkpoints and real task rows.

A `kill -9` at any moment loses nothing and duplicates nothing; run keys keep apart runs
whose numbers differ (options, data, checkpoint), while options that only change speed keep
the key, so a run resumes safely with another batch or chunk size; a complete run is not
redone.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import signal
import time

import pytest

from conftest import (CHUNK_SIZE, N_CHUNKS, N_RUNS, SCORE_ARGS, TINY_MODELS, CliResult, RunCli,
                      ScoreCli, assert_finished, assert_same_records, chunk_states, file_states,
                      find_run, read_results, record_key, run_dirs, select, temporary_files)
from invscale_jax import family as family_lib
from invscale_jax import records, results
from invscale_jax.engine import loading, plan
from invscale_jax.models import tiny

# Float noise allowed between runs: none expected on the same device and options and the
# same examples scored together; 1e-5 where batching or packing change the summation order
# (also a resumed run: its remaining chunks are batched together, not as in one go).
SAME_RUN_ATOL, OTHER_BATCHING_ATOL = 1e-6, 1e-5
# One model and task (24 examples) for the in-process runs.
ONE_TASK_ARGS = ("--model", "tiny-1", "--tasks", "memo-trap")


def chunk_files(out: pathlib.Path) -> list[pathlib.Path]:
  return sorted(out.glob("runs/*/chunk-*.jsonl"))


def copy_results(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  shutil.copytree(src, dst)
  return dst


@pytest.fixture
def score_here(run_cli: RunCli, tiny_family: pathlib.Path, small_data_dir: pathlib.Path,
               clean_gin: None):
  """Runs `invscale score` in this process on the tiny family and the small data."""
  del clean_gin

  def run(out: pathlib.Path, *args: str) -> CliResult:
    result = run_cli("score", "--family", tiny_family, "--data_dir", small_data_dir,
                     "--out", out, *args)
    assert result.code == 0, result.err
    return result

  return run


# ---------------------------------------------------------------------------- kill -9


def kill_after_chunks(score_cli: ScoreCli, out: pathlib.Path, n: int) -> None:
  """Starts the reference command and SIGKILLs it as soon as `n` chunk files exist."""
  job = score_cli.start(out, *SCORE_ARGS)
  deadline = time.monotonic() + 240
  while len(chunk_files(out)) < n:
    assert job.proc.poll() is None, f"exited before {n} chunks:\n{job.output()}"
    assert time.monotonic() < deadline, f"no {n} chunks after 240 s:\n{job.output()}"
    time.sleep(0.01)
  job.proc.send_signal(signal.SIGKILL)
  assert job.finish(60).code == -signal.SIGKILL, "finished before it could be killed"


# After 1 chunk: inside tiny-1's first run; after 12: inside tiny-2's runs, tiny-1's 4 done.
@pytest.mark.parametrize("wait_chunks,min_complete", [(1, 0), (12, 4)])
def test_kill_9_then_rerun_gives_the_uninterrupted_records(
    wait_chunks: int, min_complete: int, score_cli: ScoreCli, reference_results: pathlib.Path,
    tmp_path: pathlib.Path) -> None:
  reference = read_results(reference_results)
  out = tmp_path / "results"
  kill_after_chunks(score_cli, out, wait_chunks)

  dirs = run_dirs(out)
  assert min_complete <= sum(results.is_complete(d) for d in dirs) < N_RUNS
  survivors = chunk_files(out)
  assert wait_chunks <= len(survivors) < N_CHUNKS
  for chunk in survivors:  # written atomically: every chunk that exists is whole and right
    got = {record_key(r): r for r in records.parse_chunk(str(chunk), chunk.read_bytes())}
    first = CHUNK_SIZE * int(chunk.stem.split("-")[1])
    expected = {k: r for k, r in reference.items()
                if r.run_key == chunk.parent.name and first <= r.example_id < first + CHUNK_SIZE}
    assert_same_records(got, expected, SAME_RUN_ATOL)
  kept = chunk_states(out)
  # The killed process still holds its lease; on this host, with that process gone, the
  # re-run takes it over at once.
  unfinished = next(d for d in dirs if not results.is_complete(d))
  assert (unfinished / "LEASE").is_file()

  result = score_cli.run(out, *SCORE_ARGS)
  assert result.code == 0, result.err
  assert_finished(out, N_RUNS)
  assert len(chunk_files(out)) == N_CHUNKS
  assert_same_records(read_results(out), reference, OTHER_BATCHING_ATOL)
  now = chunk_states(out)
  assert {p: now[p] for p in kept} == kept  # finished chunks were kept, not redone


# ---------------------------------------------------------------------------- run keys


def plan_keys(manifest: pathlib.Path, data_dir: pathlib.Path,
              options: plan.ScoringOptions = plan.ScoringOptions(),
              variant: str = "1_shot") -> dict[tuple[str, str], str]:
  """Run key per (model, task) for memo-trap and neqa."""
  runs = plan.plan(family_lib.load(manifest), None, ["memo-trap", "neqa"], [variant],
                     data_dir, options)
  return {(r.entry.name, r.task.name): r.key for r in runs}


def test_run_keys_follow_what_determines_the_numbers(
    tiny_family: pathlib.Path, small_data_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
  base = plan_keys(tiny_family, small_data_dir)
  assert len(set(base.values())) == len(base)
  speed_only = dict(chunk_size=3, tokens_per_batch=77, pack=False, model_parallel=2,
                    prefetch="off")
  cot_only = dict(generation_length=5, temperature=0.7, cot_score=False)
  for changes in (speed_only, cot_only):
    options = dataclasses.replace(plan.ScoringOptions(), **changes)
    assert plan_keys(tiny_family, small_data_dir, options) == base, changes
  # The tiny family's convention is T5X's (id 0 before each prompt): naming it explicitly
  # is the same run; no BOS or another id is not.
  assert plan_keys(tiny_family, small_data_dir, plan.ScoringOptions(bos="0")) == base
  for change in (dict(max_length=512), dict(seed=1), dict(tokenization="joint"),
                 dict(dtype="bfloat16"), dict(token_logprobs=True), dict(bos="none"),
                 dict(bos="3"), dict(limit=5)):
    options = dataclasses.replace(plan.ScoringOptions(), **change)
    keys = plan_keys(tiny_family, small_data_dir, options)
    assert all(keys[k] != base[k] for k in base), change

  # One edited row of memo-trap: new memo-trap keys, the same neqa keys.
  data = shutil.copytree(small_data_dir, tmp_path / "data")
  memo = data / "memo-trap_classification.jsonl"
  lines = memo.read_text("utf-8").splitlines(keepends=True)
  lines[5] = lines[5].replace('"prompt":"', '"prompt":"Now: ', 1)
  memo.write_text("".join(lines), "utf-8")
  edited = plan_keys(tiny_family, data)
  assert all((edited[k] != base[k]) == (k[1] == "memo-trap") for k in base)

  # The same checkpoints elsewhere: the same keys; another checkpoint of tiny-1: new keys.
  moved = shutil.copytree(tiny_family.parent, tmp_path / "moved")
  assert plan_keys(moved / "manifest.json", small_data_dir) == base
  other = plan_keys(tiny.init_tiny(tmp_path / "other", seed=1, sizes=TINY_MODELS[:1]),
                    small_data_dir)
  assert set(other) == {("tiny-1", "memo-trap"), ("tiny-1", "neqa")}
  assert all(other[k] != base[k] for k in other)


# (option flags, variant, whether the numbers change: with the byte vocabulary joint
# tokenization gives the same tokens, so only the key changes).
NUMBER_OPTIONS = [
    (("--max_length", "48"), "zero_shot", True),
    (("--seed", "1"), "1_shot", True),
    (("--dtype", "bfloat16"), "zero_shot", True),
    (("--tokenization", "joint"), "zero_shot", False),
    (("--bos", "none"), "zero_shot", True),
]


@pytest.mark.parametrize("flags,variant,changes_numbers", NUMBER_OPTIONS,
                         ids=[f[0][0][2:] for f in NUMBER_OPTIONS])
def test_an_option_that_changes_numbers_writes_a_new_run(
    flags: tuple[str, str], variant: str, changes_numbers: bool, score_here,
    reference_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
  out = copy_results(reference_results, tmp_path / "results")
  before, old_dirs = file_states(out / "runs"), set(run_dirs(out))
  score_here(out, *ONE_TASK_ARGS, "--variants", variant, "--tokens_per_batch", "1024", *flags)

  new_dirs = set(run_dirs(out)) - old_dirs
  assert len(new_dirs) == 1 and results.is_complete(next(iter(new_dirs)))
  new_dir = next(iter(new_dirs))
  now = file_states(out / "runs")
  assert {p: now[p] for p in before} == before  # old runs untouched, no chunk reused
  info = results.read_run_info(new_dir)
  name, value = flags[0][2:], flags[1]
  if name == "bos":  # recorded resolved, as the token id the model saw (None: no token)
    assert info["bos_id"] is None and info["options"].keys().isdisjoint({"bos"})
  elif name == "max_length":  # recorded resolved: a model with fewer positions reads less
    assert str(info["max_length"]) == value
  else:
    assert str(info["options"][name]) == value
  got = read_results(out, [new_dir])
  expected = select(read_results(reference_results), ("tiny-1",), ("memo-trap",), (variant,))
  assert got.keys() == expected.keys()
  diff = max(abs(got[k].logprob - expected[k].logprob) for k in got)
  assert (diff > 1e-3) == changes_numbers, diff


def test_max_length_is_capped_at_a_models_learned_positions(small_data_dir, tmp_path) -> None:
  """GPT-2 reads 1,024 positions: its runs are planned (and keyed) with that max length."""
  (tmp_path / "ckpt").mkdir()
  (tmp_path / "ckpt" / "weights").write_bytes(b"planning hashes, never reads, weights")
  manifest = tmp_path / "gpt2.json"
  manifest.write_text(json.dumps({"family": "gpt2", "models": [
      {"name": "gpt2", "architecture": "gpt2", "gin": "models/gpt2/124m.gin",
       "checkpoint": "ckpt", "vocabulary": {"type": "byte"}}]}))
  runs = plan.plan(family_lib.load(manifest), None, ["neqa"], ["zero_shot"], small_data_dir,
                   plan.ScoringOptions(max_length=2048))
  assert [r.max_length for r in runs] == [1024] and runs[0].info["max_length"] == 1024
  short = plan.plan(family_lib.load(manifest), None, ["neqa"], ["zero_shot"], small_data_dir,
                    plan.ScoringOptions(max_length=512))
  assert short[0].max_length == 512 and short[0].key != runs[0].key


def test_limit_scores_the_first_examples_as_their_own_run(
    score_here, reference_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
  out = copy_results(reference_results, tmp_path / "results")
  score_here(out, *ONE_TASK_ARGS, "--variants", "zero_shot", "--limit", "5")
  [limited] = [d for d in run_dirs(out) if results.read_run_info(d)["options"]["limit"] == 5]
  got = read_results(out, [limited])
  assert sorted({k[3] for k in got}) == [0, 1, 2, 3, 4]
  expected = select(read_results(reference_results), ("tiny-1",), ("memo-trap",), ("zero_shot",))
  key = limited.name  # records are the reference run's, under their own run key
  assert_same_records(got, {k: dataclasses.replace(v, run_key=key)
                            for k, v in expected.items() if k[3] < 5}, OTHER_BATCHING_ATOL)


@pytest.mark.parametrize("prefetch", ["on", "off"])
def test_loading_the_next_model_in_the_background_changes_nothing(
    prefetch: str, score_here, reference_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
  out = tmp_path / "results"
  score_here(out, "--tasks", "memo-trap", "--variants", "zero_shot", "--prefetch", prefetch)
  expected = select(read_results(reference_results), tasks=("memo-trap",),
                    variants=("zero_shot",))
  assert_same_records(read_results(out), expected, OTHER_BATCHING_ATOL)


def test_speed_options_keep_the_key_and_resume_a_partial_run(
    score_here, reference_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
  """Runs cut after their first chunk resume with another chunk size, batch size and no
  packing: same run dirs, finished chunk kept, the remaining examples exactly once."""
  out = copy_results(reference_results, tmp_path / "results")
  for variant in ("zero_shot", "1_shot"):
    run_dir = find_run(out, "tiny-1", "memo-trap", variant)
    (run_dir / "COMPLETE").unlink()
    for chunk in sorted(run_dir.glob("chunk-*.jsonl"))[1:]:
      chunk.unlink()
  kept = chunk_states(out)
  score_here(out, *ONE_TASK_ARGS, "--variants", "zero_shot,1_shot", "--chunk_size", "5",
             "--tokens_per_batch", "256", "--gin_bindings", "ScoringOptions.pack = False")
  assert_finished(out, N_RUNS)
  now = chunk_states(out)
  assert {p: now[p] for p in kept} == kept
  assert_same_records(read_results(out), read_results(reference_results), OTHER_BATCHING_ATOL)


def test_rerun_of_complete_runs_does_no_work(
    score_here, reference_results: pathlib.Path, tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch) -> None:
  out = copy_results(reference_results, tmp_path / "results")
  before = file_states(out / "runs")

  def no_loading(*args, **kwargs):
    raise AssertionError("a complete run loaded a model")

  monkeypatch.setattr(loading, "load_model", no_loading)
  start = time.monotonic()
  result = score_here(out, *SCORE_ARGS)
  assert time.monotonic() - start < 30
  for model in TINY_MODELS:
    assert f"{model}: all runs already complete" in result.err
  assert file_states(out / "runs") == before  # INDEX.md is rewritten
  assert temporary_files(out) == []


def test_consecutive_chunks_are_scored_together_within_the_budget() -> None:
  from invscale_jax.engine import runner  # pylint: disable=g-import-not-at-top
  chunks = [[i] * n for i, n in enumerate([3, 3, 5, 1, 9, 2])]
  groups = runner.scoring_groups(chunks, len, budget=8)
  assert groups == [[chunks[0], chunks[1]], [chunks[2], chunks[3]], [chunks[4]], [chunks[5]]]
  assert [c for g in groups for c in g] == chunks  # every chunk once, in order
