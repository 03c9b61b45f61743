"""The TFDS dataset `inverse_scaling_prize`: built from the official files only (catalog
sha256), never downloading; the SeqIO tasks read it through seqio.TfdsDataSource and
build the same requests as from the files."""

from __future__ import annotations

import shutil

import pytest

from invscale_jax import catalog, gin_macros

TASK = "neqa"


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, shared_data):
  from invscale_jax import cli  # pylint: disable=g-import-not-at-top

  out = tmp_path_factory.mktemp("tensorflow_datasets")
  assert cli.main(["data", "tfds-build", "--manual_dir", str(shared_data), "--tfds_data_dir",
                   str(out), "--tasks", TASK]) == 0
  return out


def test_dataset_holds_the_release(tfds_dir, shared_data):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from invscale_jax.data import datadir, inverse_scaling_prize  # pylint: disable=g-import-not-at-top
  from invscale_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(f"inverse_scaling_prize/{TASK}:1.0.0", data_dir=str(tfds_dir))
  assert set(builder.info.features) == {"example_id", "prompt", "classes", "answer_index",
                                        "round", "part"}
  assert builder.info.splits["test"].num_examples == catalog.get(TASK).reported_rows == 300
  assert tfds_source.examples(catalog.get(TASK), str(tfds_dir)) == datadir.load_task(
      shared_data, TASK)
  assert len(inverse_scaling_prize.InverseScalingPrize.BUILDER_CONFIGS) == len(catalog.TASKS)


def test_only_the_official_file_is_built(shared_data, tmp_path, run_cli):
  spec = catalog.get(TASK)
  shutil.copy(shared_data / spec.filename, tmp_path / spec.filename)
  with open(tmp_path / spec.filename, "a", encoding="utf-8") as f:
    f.write("\n")
  result = run_cli("data", "tfds-build", "--manual_dir", tmp_path, "--tfds_data_dir",
                   tmp_path / "out", "--tasks", TASK)
  assert result.code == 2
  assert f"{tmp_path / spec.filename}: sha256 " in result.err
  assert f"is not the release's {spec.sha256}" in result.err
  assert not list((tmp_path / "out").rglob("*.tfrecord*"))


def test_seqio_tasks_read_tfds_as_the_files(tfds_dir, shared_data, monkeypatch, clean_gin,
                                            tmp_path):
  import seqio  # pylint: disable=g-import-not-at-top

  import seqio_tasks  # pylint: disable=g-import-not-at-top
  from invscale_jax.engine import requests  # pylint: disable=g-import-not-at-top

  vocabulary = seqio.ByteVocabulary()

  def reqs(data_dir, **env):
    for k, v in env.items():
      monkeypatch.setenv(k, v)
    task = seqio_tasks.build_task(TASK, "1_shot", vocabulary, data_dir=str(data_dir))
    return [(r.example_id, r.prompt_text, r.prefix.tolist(), r.answer_index,
             [(b.text, b.target.tolist()) for b in r.branches])
            for r in requests.from_task(task, vocabulary, max_length=2048, bos_id=0)]

  from_files = reqs(shared_data)
  # An empty files' dir: the TFDS source does not read it.
  from_tfds = reqs(tmp_path, **{gin_macros.DATA_SOURCE: "tfds",
                                gin_macros.TFDS_DATA_DIR: str(tfds_dir)})
  assert len(from_files) == 300 and from_tfds == from_files
  monkeypatch.setenv(gin_macros.DATA_SOURCE, "bigquery")
  with pytest.raises(ValueError, match="INVSCALE_DATA_SOURCE: must be one of files, tfds"):
    reqs(shared_data)


def test_score_from_tfds_plans_the_runs_of_the_files(tfds_dir, shared_data, tiny_family,
                                                      monkeypatch, clean_gin, tmp_path, run_cli):
  """`invscale score --data_source tfds`: the same run keys as the official files (the
  dataset holds them, hash checked), with no task file in --data_dir."""
  from invscale_jax import family  # pylint: disable=g-import-not-at-top
  from invscale_jax.engine import plan  # pylint: disable=g-import-not-at-top

  fam = family.load(tiny_family)
  keys = lambda data_dir: [r.key for r in plan.plan(fam, ["tiny-1"], [TASK], ["zero_shot"],
                                                    str(data_dir), plan.ScoringOptions())]
  from_files = keys(shared_data)
  monkeypatch.setenv(gin_macros.TFDS_DATA_DIR, str(tfds_dir))
  result = run_cli("score", "--family", tiny_family, "--model", "tiny-1", "--tasks", TASK,
                   "--data_source", "tfds", "--data_dir", tmp_path, "--out", tmp_path / "out",
                   "--dry_run")
  assert result.code == 0, result.err
  assert TASK in result.out and "to do" in result.out  # its 300 requests built from TFDS
  monkeypatch.setenv(gin_macros.DATA_SOURCE, "tfds")
  assert keys(tmp_path) == from_files
