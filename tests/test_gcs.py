"""Everything on Cloud Storage: the file layer's guarantees, errors, checkpoints, scoring
from a bucket into a bucket (kill -9 and resume there, three slices sharing the runs), and
the report.

The server is gcp-storage-emulator on 127.0.0.1 with the GCS protocol features it lacks
added (`gcs_emulator`); our code reaches it only through tensorstore's `gcs` driver.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from conftest import (T5X_CONFIG_GIN, RunCli, ScoreCli, assert_same_records, bucket_results,
                      read_results, select, upload, without_run_keys)
from invscale_jax import family, results, storage, vocab, vocab_spec
from invscale_jax import checkpoint_layout as layout
from invscale_jax.checkpoints import count_params, legacy, read_checkpoint, write_checkpoint
from invscale_jax.models import t5x_gin
from invscale_jax.models.config import load_config
from invscale_jax.report import output

ONE_TASK = ("--tasks", "memo-trap", "--variants", "zero_shot", "--tokens_per_batch", "1024")
TINY_1 = ("--model", "tiny-1", *ONE_TASK)


def one_line(error: BaseException) -> str:
  message = str(error)
  assert "\n" not in message
  return message


def assert_finished_in_bucket(out: str, n_runs: int) -> None:
  """`n_runs` runs, each verified complete, and no lease or stray object left."""
  dirs = results.run_dirs(out)
  assert len(dirs) == n_runs, dirs
  assert [d for d in dirs if not results.is_complete(d)] == []
  for d in dirs:
    names = set(storage.list_files(d))
    assert names == {results.RUN_INFO, results.COMPLETE, *results.chunk_names(d)}, names


# ---------------------------------------------------------------------------- the file layer


def test_objects_are_created_once_and_replaced_only_if_unchanged(bucket: str) -> None:
  url = storage.join(bucket, "runs/k/chunk-000000.jsonl")
  assert storage.create(url, b"first")
  assert not storage.create(url, b"second")  # ifGenerationMatch=0 on an existing object
  stamp = storage.read_stamped(url)
  assert stamp.data == b"first"
  newer = storage.replace(url, b"third", stamp.generation)
  assert newer is not None and newer != stamp.generation
  assert storage.replace(url, b"fourth", stamp.generation) is None  # a stale generation
  assert storage.replace(url, None, stamp.generation) is None  # nor delete with it
  assert storage.read_bytes(url) == b"third"
  assert storage.replace(url, None, newer) is not None
  assert storage.read_stamped(url).data is None


RACE = """
import sys
from invscale_jax import storage
print(storage.create(sys.argv[1], sys.argv[2].encode()), flush=True)
"""


def test_of_processes_racing_to_create_an_object_exactly_one_does(bucket: str) -> None:
  url = storage.join(bucket, "LEASE")
  env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
  procs = [subprocess.Popen([sys.executable, "-c", RACE, url, f"writer {i}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
           for i in range(4)]
  said = [p.communicate(timeout=120)[0].strip() for p in procs]
  assert sorted(said) == ["False", "False", "False", "True"], said
  assert storage.read_bytes(url) == f"writer {said.index('True')}".encode()


def test_listing_holds_exactly_the_directory(bucket: str) -> None:
  for name in ("a/x", "a/b/y", "a0", "ab/z", "b"):
    storage.write_bytes(storage.join(bucket, name), b"-")
  assert list(storage.list_files(storage.join(bucket, "a"))) == ["b/y", "x"]
  assert storage.children(bucket) == ["a", "a0", "ab", "b"]
  assert storage.is_dir(storage.join(bucket, "a")) and not storage.is_dir(bucket + "/c")
  assert storage.is_file(bucket + "/a0") and not storage.is_file(bucket + "/a")


def test_missing_bucket_and_missing_object_are_one_line_naming_the_url(bucket: str) -> None:
  missing = storage.join(bucket, "absent.json")
  with pytest.raises(FileNotFoundError) as raised:
    storage.read_bytes(missing)
  assert one_line(raised.value) == f"{missing}: not found (no such object, or no such bucket)"
  nowhere = f"gs://no-bucket-{uuid.uuid4().hex[:8]}/results/run.json"
  for write in (storage.write_bytes, storage.create):
    with pytest.raises(FileNotFoundError) as raised:
      write(nowhere, b"{}")
    assert one_line(raised.value) == (f"{nowhere}: cannot write: bucket "
                                      f"{nowhere[:nowhere.index('/', 5)]} does not exist")


def test_permission_denied_is_one_line_naming_the_url(gcs) -> None:
  url = "gs://forbidden-results/runs/k/run.json"
  for action in (storage.read_bytes, lambda u: storage.write_bytes(u, b"{}"),
                 lambda u: storage.create(u, b"{}"), lambda u: list(storage.list_files(u))):
    with pytest.raises(storage.StorageError) as raised:
      action(url)
    message = one_line(raised.value)
    assert message.startswith(f"{url}: cannot ") and ": permission denied: " in message


def test_a_write_cut_by_the_network_leaves_nothing(gcs) -> None:
  bucket = gcs.create_bucket(f"cut-{uuid.uuid4().hex[:8]}")
  url = storage.join(bucket, "runs/k/chunk-000000.jsonl")
  with pytest.raises(storage.StorageError) as raised:
    storage.create(url, b"x" * 100_000)
  assert one_line(raised.value).startswith(f"{url}: cannot write: ")
  assert storage.read_stamped(url).data is None
  assert list(storage.list_files(bucket)) == []
  cuts = [r for r in gcs.requests() if r.startswith(f"POST /upload/storage/v1/b/{bucket[5:]}/")]
  assert len(cuts) == 7 and all(r.endswith(" cut") for r in cuts)  # 1 try + 6 retries


def test_a_write_cut_once_is_retried_and_lands_whole(gcs) -> None:
  bucket = gcs.create_bucket(f"flaky-{uuid.uuid4().hex[:8]}")
  url = storage.join(bucket, "chunk-000000.jsonl")
  data = bytes(range(256)) * 400
  assert storage.create(url, data)
  assert storage.read_bytes(url) == data
  tries = [r for r in gcs.requests() if r.startswith(f"POST /upload/storage/v1/b/{bucket[5:]}/")]
  assert [t.rsplit(" ", 1)[1] for t in tries] == ["cut", "200"]


# ---------------------------------------------------------------------------- a family in a bucket


def test_checkpoints_in_a_bucket_read_as_on_disk(family_in_bucket) -> None:
  local = read_checkpoint(family_in_bucket.local / "tiny-2")
  flat = lambda tree: {k: np.asarray(v) for k, v in layout.flatten(tree).items()}
  for path in (f"{family_in_bucket.url}/fam/tiny-2",  # a model dir: its latest step
               f"{family_in_bucket.url}/fam/tiny-2/checkpoint_0"):
    got = flat(read_checkpoint(path))
    assert got.keys() == flat(local).keys()
    for key, value in flat(local).items():
      np.testing.assert_array_equal(got[key], value)
  orbax, legacy_1 = (flat(read_checkpoint(f"{family_in_bucket.url}/{d}/tiny-1"))
                     for d in ("orbax", "fam"))
  assert orbax.keys() == legacy_1.keys()
  for key, value in legacy_1.items():
    np.testing.assert_array_equal(orbax[key], value)
  assert count_params(f"{family_in_bucket.url}/orbax/tiny-1") == sum(v.size for v in orbax.values())


def test_a_slice_of_a_parameter_reads_only_its_chunks(gcs, bucket: str, tmp_path) -> None:
  embedding = np.arange(64 * 16, dtype=np.float32).reshape(64, 16)
  write_checkpoint(tmp_path, {"decoder": {"token_embedder": {"embedding": embedding}}},
                   max_chunk_bytes=8 * 16 * 4)  # 8 chunks of 8 rows
  checkpoint = upload(tmp_path, f"{bucket}/m") + "/checkpoint_0"
  (source,) = legacy.target_sources(checkpoint).values()
  before = len(gcs.requests())
  np.testing.assert_array_equal(source.read((slice(16, 24), slice(None))), embedding[16:24])
  chunk_reads = [r for r in gcs.requests()[before:] if "embedding%2F" in r and ".zarray" not in r]
  assert len(chunk_reads) == 1 and "embedding%2F2.0?" in chunk_reads[0], chunk_reads


def test_model_gin_files_and_vocabularies_in_a_bucket(bucket: str, tmp_path) -> None:
  import sentencepiece  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top

  ours = f"{bucket}/gin/tiny.gin"
  storage.write_text(ours, "include 'models/tiny/tiny_1.gin'\nModelConfig.num_layers = 3\n")
  storage.write_text(f"{bucket}/gin/outer.gin",
                     f"include '{ours}'\nModelConfig.dtype = 'float32'\n")
  expected = load_config(family.GIN_DIR / "models/tiny/tiny_1.gin",
                         ["ModelConfig.num_layers = 3", "ModelConfig.dtype = 'float32'"])
  assert load_config(f"{bucket}/gin/outer.gin") == expected
  (tmp_path / "config.gin").write_text(T5X_CONFIG_GIN)
  storage.write_text(f"{bucket}/t5x/config.gin", T5X_CONFIG_GIN)
  storage.write_text(f"{bucket}/t5x/sizes/model.gin", "include 'config.gin'\nDROPOUT_RATE = 0.1\n")
  assert t5x_gin.is_t5x_gin(f"{bucket}/t5x/sizes/model.gin")  # the include is found above it
  assert (t5x_gin.read(f"{bucket}/t5x/sizes/model.gin").fields
          == t5x_gin.read(tmp_path / "config.gin").fields)

  texts = ["Question: is the sky blue? Answer: yes", "The quick brown fox jumps."] * 20
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=288, pad_id=0, eos_id=1,
      unk_id=2, bos_id=-1, byte_fallback=True, minloglevel=2)
  (tmp_path / "spm.model").write_bytes(model.getvalue())
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  upload(tmp_path, f"{bucket}/vocab")
  for kind, name in (("sentencepiece", "spm.model"), ("hf_tokenizer", "tokenizer.json")):
    remote = vocab.from_spec({"type": kind, "path": f"{bucket}/vocab/{name}"})
    local = vocab.from_spec({"type": kind, "path": str(tmp_path / name)})
    assert remote.encode(texts[0]) == local.encode(texts[0])
    assert remote.vocab_size == local.vocab_size
    assert (vocab_spec.identity({"type": kind, "path": f"{bucket}/vocab/{name}"})
            == vocab_spec.identity({"type": kind, "path": str(tmp_path / name)}))
  remote = vocab.from_spec({"type": "sentencepiece", "path": f"{bucket}/vocab/spm.model"})
  assert remote == seqio.SentencePieceVocabulary(f"{bucket}/vocab/spm.model")  # as T5X's


# ---------------------------------------------------------------------------- scoring


@pytest.fixture(scope="module")
def bucket_cli(score_cli: ScoreCli, family_in_bucket) -> ScoreCli:
  """`invscale score` on the family and data in the bucket."""
  return dataclasses.replace(score_cli, family=family_in_bucket.manifest,
                             data_dir=family_in_bucket.data)


@pytest.fixture(scope="module")
def scored_in_bucket(bucket_cli: ScoreCli, family_in_bucket) -> str:
  """gs://BUCKET/results: both models on memo-trap zero-shot, in chunks of 8 examples."""
  out = f"{family_in_bucket.url}/results"
  result = bucket_cli.run(out, *ONE_TASK, "--chunk_size", "8")
  assert result.code == 0, result.err
  return out


def test_a_family_in_a_bucket_scores_into_a_bucket_as_on_disk(
    scored_in_bucket: str, reference_results: pathlib.Path) -> None:
  assert_finished_in_bucket(scored_in_bucket, 2)
  expected = select(read_results(reference_results), tasks=("memo-trap",),
                    variants=("zero_shot",))
  assert_same_records(without_run_keys(bucket_results(scored_in_bucket)),
                      without_run_keys(expected), atol=0.0)


def test_an_orbax_checkpoint_in_a_bucket_scores_as_the_legacy_one(
    run_cli: RunCli, family_in_bucket, scored_in_bucket: str, clean_gin: None) -> None:
  del clean_gin
  out = f"{family_in_bucket.url}/orbax-results"
  result = run_cli("score", "--family", family_in_bucket.orbax_manifest, "--data_dir",
                   family_in_bucket.data, "--out", out, *ONE_TASK,
                   "--chunk_size", "8")  # the same batches: the same floats
  assert result.code == 0, result.err
  assert_finished_in_bucket(out, 1)
  expected = select(bucket_results(scored_in_bucket), ("tiny-1",), ("memo-trap",), ("zero_shot",))
  assert_same_records(without_run_keys(bucket_results(out)), without_run_keys(expected), 0.0)


def test_kill_9_then_rerun_gives_the_uninterrupted_records(
    bucket_cli: ScoreCli, family_in_bucket, scored_in_bucket: str) -> None:
  out = f"{family_in_bucket.url}/killed"
  # One chunk per scoring call, so that the kill lands between chunks of the run.
  job = bucket_cli.start(out, *TINY_1, "--chunk_size", "2", INVSCALE_GROUP_TOKENS="1")
  deadline = time.monotonic() + 240
  while not any("/chunk-" in n for n in storage.list_files(out)):
    assert job.proc.poll() is None and time.monotonic() < deadline, job.output()
    time.sleep(0.2)
  job.proc.kill()
  job.proc.wait()
  left = list(storage.list_files(out))
  assert any(n.endswith("/" + results.LEASE) for n in left), left
  result = bucket_cli.run(out, *TINY_1, "--chunk_size", "8")
  assert result.code == 0, result.err
  assert "took over the lease" in result.err, result.err
  assert_finished_in_bucket(out, 1)
  # Examples scored again after the kill share batches with others: float32 summation noise.
  assert_same_records(bucket_results(out), select(bucket_results(scored_in_bucket), ("tiny-1",)),
                      atol=1e-5)


def test_a_chunk_edited_after_complete_is_rejected_and_scored_again(
    run_cli: RunCli, family_in_bucket, scored_in_bucket: str, clean_gin: None) -> None:
  del clean_gin
  out = f"{family_in_bucket.url}/edited"
  for name in storage.list_files(scored_in_bucket):
    storage.write_bytes(f"{out}/{name}", storage.read_bytes(f"{scored_in_bucket}/{name}"))
  [run_dir] = [d for d in results.run_dirs(out)
               if results.read_run_info(d)["model"]["name"] == "tiny-1"]
  chunk = f"{run_dir}/chunk-000001.jsonl"
  first, rest = storage.read_text(chunk).split("\n", 1)
  storage.write_text(chunk, json.dumps(dict(json.loads(first), logprob=-0.001)) + "\n" + rest)
  result = run_cli("score", "--family", family_in_bucket.manifest, "--data_dir",
                   family_in_bucket.data, "--out", out, *TINY_1, "--chunk_size", "8")
  assert result.code == 0, result.err
  assert f"{chunk}: changed after the run was completed; moved to {run_dir}/rejected/" in result.err
  assert [n for n in storage.list_files(run_dir) if n.startswith("rejected/")]
  # Examples scored again share batches with others: float32 summation noise.
  assert_same_records(bucket_results(out), bucket_results(scored_in_bucket), atol=1e-5)


def test_three_slices_on_one_bucket_share_the_runs(
    bucket_cli: ScoreCli, family_in_bucket, reference_results: pathlib.Path) -> None:
  """Three processes with the same family and --out (three TPU slices): every run is
  scored once, by whichever claims it; the others wait for it, and all three end with the
  same table of the finished runs."""
  out = f"{family_in_bucket.url}/slices"
  args = ("--tasks", "memo-trap,neqa", "--variants", "zero_shot", "--limit", "6",
          "--chunk_size", "2", "--tokens_per_batch", "1024")
  jobs = [bucket_cli.start(out, *args, INVSCALE_POLL_SECONDS="0.5") for _ in range(3)]
  done = [job.finish(300) for job in jobs]
  for result in done:
    assert result.code == 0, result.err
  assert_finished_in_bucket(out, 4)
  scored = [line.split(" (run ")[0] for result in done for line in result.err.splitlines()
            if line.endswith("examples scored here)")]
  assert sorted(scored) == sorted(f"{m} {t}.zero_shot" for m in ("tiny-1", "tiny-2")
                                  for t in ("memo-trap", "neqa")), scored
  tables = {result.out[result.out.index(f"results in {out}"):] for result in done}
  assert len(tables) == 1 and tables.pop().count(" complete ") == 4
  expected = {k: r for k, r in select(read_results(reference_results),
                                      variants=("zero_shot",)).items() if r.example_id < 6}
  assert_same_records(without_run_keys(bucket_results(out)), without_run_keys(expected), 1e-5)


def test_commands_name_the_url_they_cannot_use(run_cli: RunCli, family_in_bucket,
                                               clean_gin: None) -> None:
  del clean_gin
  absent = f"gs://no-bucket-{uuid.uuid4().hex[:8]}/fam/manifest.json"
  result = run_cli("score", "--family", absent, "--data_dir", family_in_bucket.data,
                   "--out", f"{family_in_bucket.url}/never", *ONE_TASK)
  assert result.err == f"invscale: error: {absent}: manifest not found\n"
  result = run_cli("score", "--family", family_in_bucket.manifest, "--model", "tiny-1",
                   "--data_dir", family_in_bucket.data, "--out", "gs://forbidden-out/r", *ONE_TASK)
  (line,) = result.err.splitlines()
  assert result.code == 2 and line.startswith("invscale: error: gs://forbidden-out/r/runs/")
  assert "permission denied" in line
  assert not storage.is_dir(f"{family_in_bucket.url}/never")
  task = f"{family_in_bucket.data}/absent.jsonl"
  result = run_cli("data", "validate", task)
  assert result.code == 1 and result.err.splitlines()[0] == f"{task}:0: file: not found"
  result = run_cli("data", "status", "--data_dir", family_in_bucket.data)
  assert result.code == 0
  assert "0 verified, 3 differ from the official release, 8 missing" in result.out


# ---------------------------------------------------------------------------- the report


def test_report_from_a_bucket_into_a_bucket(run_cli: RunCli, scored_in_bucket: str,
                                            family_in_bucket, tmp_path: pathlib.Path) -> None:
  report = f"{family_in_bucket.url}/report"
  args = ("--resamples", "50")
  result = run_cli("report", scored_in_bucket, "--out", report, *args)
  assert result.code == 0, result.err
  assert output.gcs_problem(report) is None
  assert storage.children(report) == sorted([*output.FILES, output.COMPLETE])
  local = run_cli("report", scored_in_bucket, "--out", tmp_path / "report", *args)
  assert local.code == 0, local.err
  for name in ("metrics.csv", "metrics.json", "summary.md"):
    assert storage.read_bytes(f"{report}/{name}") == (tmp_path / "report" / name).read_bytes()

  # A writer killed part way: no COMPLETE, or one its files no longer match.
  storage.delete(f"{report}/{output.COMPLETE}")
  storage.write_bytes(f"{report}/summary.md", b"half")
  assert output.gcs_problem(report) == "no COMPLETE marker"
  marker = json.dumps({"files": {"summary.md": "0" * 64}}).encode()
  storage.write_bytes(f"{report}/{output.COMPLETE}", marker)
  assert output.gcs_problem(report) == "its files differ from what COMPLETE lists"
  result = run_cli("report", scored_in_bucket, "--out", report, *args)
  assert result.code == 0, result.err
  assert output.gcs_problem(report) is None
  assert storage.read_bytes(f"{report}/summary.md") == (tmp_path / "report" / "summary.md"
                                                        ).read_bytes()

  result = run_cli("report", scored_in_bucket, "--out", f"{family_in_bucket.url}/fam", *args)
  assert result.err == (f"invscale: error: {family_in_bucket.url}/fam: holds files that are "
                        "not a report's; not overwriting it\n")
