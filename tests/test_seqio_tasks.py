"""The registered SeqIO tasks: names, `invscale tasks list`, and every dataset materialised."""

from __future__ import annotations

import collections
import functools
import pathlib
from typing import Any

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

import seqio_tasks
from conftest import RunCli
from invscale_jax import catalog
from invscale_jax.data import datadir, loader, variants
from seqio_tasks import tasks as tasks_lib

# The 11 release names as SeqIO spells them, written out rather than derived.
SEQIO_NAMES = ("hindsight_neglect", "into_the_unknown", "memo_trap", "modus_tollens", "neqa",
               "pattern_matching_suppression", "prompt_injection", "redefine",
               "repetitive_algebra", "resisting_correction", "sig_figs")
EXPECTED_NAMES = sorted(f"invscale:{t}.{v}" for t in SEQIO_NAMES for v in tasks_lib.VARIANTS)
SCALARS = ("example_id", "class_index", "n_classes", "answer_index", "is_correct", "task",
           "variant", "round", "part", "n_demos", "n_demos_dropped")


def get_dataset(task: seqio.Task) -> tf.data.Dataset:
  return task.get_dataset(sequence_length=None, split="test", shuffle=False)


def examples_of(data_dir: pathlib.Path, spec: catalog.TaskSpec) -> list[loader.Example]:
  return datadir.load_task(data_dir, spec.name)


def expected_demos(variant: variants.Variant) -> int:
  """Demonstrations before any are dropped: k sampled ones, or the worked CoT exemplar."""
  return variant.k_shot + int(variant.worked_exemplar)


def test_registers_every_task_and_variant() -> None:
  assert {"zero_shot", "1_shot", "3_shot", "5_shot"} <= set(tasks_lib.VARIANTS)
  assert len(EXPECTED_NAMES) == 11 * len(tasks_lib.VARIANTS)
  assert sorted(seqio_tasks.REGISTERED) == EXPECTED_NAMES
  assert set(EXPECTED_NAMES) <= set(seqio.TaskRegistry.names())
  assert {"invscale:neqa.zero_shot", "invscale:memo_trap.1_shot"} <= set(EXPECTED_NAMES)
  for name in EXPECTED_NAMES:
    spec, variant = seqio_tasks.parse_task_name(name)
    assert seqio_tasks.task_name(spec.name, variant.name) == name
    task = seqio.get_mixture_or_task(name)
    assert task.name == name and task.splits == (tasks_lib.SPLIT,)
    metric_names = {f.__name__ for f in task.score_metric_fns}
    assert metric_names == ({"sequence_loss"} if spec.name == "prompt-injection"
                            else {"accuracy", "classification_loss"})


@pytest.mark.parametrize("name", ["neqa.zero_shot", "invscale:neqa", "invscale:.zero_shot",
                                  "other:neqa.zero_shot", "invscale:neqa.zero"])
def test_bad_task_names_are_errors(name: str) -> None:
  with pytest.raises((ValueError, KeyError)):
    seqio_tasks.parse_task_name(name)


def test_tasks_list_prints_one_name_per_line(run_cli: RunCli) -> None:
  result = run_cli("tasks", "list")
  assert result.code == 0
  assert result.out.splitlines() == EXPECTED_NAMES


def test_tasks_list_registers_extra_variants(run_cli: RunCli) -> None:
  extra = sorted(f"invscale:{t}.2_shot" for t in SEQIO_NAMES)
  try:
    result = run_cli("tasks", "list", "--variants", "2_shot")
    assert result.code == 0
    assert result.out.splitlines() == sorted(EXPECTED_NAMES + extra)
  finally:
    for name in extra:
      seqio.TaskRegistry.remove(name)
  bad = run_cli("tasks", "list", "--variants", "two_shot")
  assert bad.code == 2 and "unknown prompt variant 'two_shot'" in bad.err


# ---------------------------------------------------------------------------- materialised


@pytest.fixture(scope="module")
def all_rows(combined_data_dir: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  """Scalar features and token counts of every row of every registered task, by task name.

  The datasets are built with the data dir given only through $INVSCALE_DATA_DIR, then
  concatenated and read in one batch (tracing one pipeline per task would be slow).
  """
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(datadir.ENV_VAR, str(combined_data_dir))
    datasets = [get_dataset(seqio.get_mixture_or_task(n)) for n in EXPECTED_NAMES]
  select = lambda x: {**{k: x[k] for k in SCALARS}, "inputs_len": tf.size(x["inputs"]),
                      "targets_len": tf.size(x["targets"]),
                      "targets_pretokenized": x["targets_pretokenized"],
                      "prompt_bytes": tf.strings.length(x["inputs_pretokenized"])}
  merged = functools.reduce(lambda a, b: a.concatenate(b), datasets).map(select)
  batch = next(merged.batch(1 << 20).as_numpy_iterator())
  names = np.array([f"invscale:{t.decode().replace('-', '_')}.{v.decode()}"
                    for t, v in zip(batch["task"], batch["variant"])])
  return {n: {k: v[names == n] for k, v in batch.items()} for n in EXPECTED_NAMES}


@pytest.mark.parametrize("spec", catalog.TASKS, ids=lambda s: s.name)
def test_every_registered_task_materialises(
    spec: catalog.TaskSpec, all_rows: dict[str, dict[str, np.ndarray]],
    combined_data_dir: pathlib.Path) -> None:
  examples = examples_of(combined_data_dir, spec)
  targets = [t for e in examples for t in (e.classes or (e.completion,))]
  for variant in tasks_lib.VARIANTS:
    rows = all_rows[f"invscale:{spec.seqio_name}.{variant}"]
    assert len(rows["example_id"]) == len(targets), variant  # one row per class / completion
    assert [t.decode() for t in rows["targets_pretokenized"]] == targets
    # ByteVocabulary: one id per UTF-8 byte, no EOS appended.
    assert rows["targets_len"].tolist() == [len(t.encode()) for t in targets]
    assert (rows["inputs_len"] == rows["prompt_bytes"]).all()
    correct = np.bincount(rows["example_id"][rows["is_correct"]], minlength=len(examples))
    if spec.metric == catalog.CLASSIFICATION:
      assert correct.tolist() == [1] * len(examples)  # exactly one correct class per example
      assert (rows["is_correct"] == (rows["class_index"] == rows["answer_index"])).all()
    else:
      assert correct.sum() == 0 and (rows["class_index"] == -1).all()
    k = expected_demos(variants.parse(variant))
    assert (rows["n_demos"] + rows["n_demos_dropped"] == k).all(), variant
    assert {r.decode() for r in rows["task"]} == {spec.name}


def test_long_prompts_lose_demonstrations_under_default_budget(
    all_rows: dict[str, dict[str, np.ndarray]]) -> None:
  """hindsight-neglect prompts are ~3000 bytes: 5 demonstrations never fit in 2048."""
  rows = all_rows["invscale:hindsight_neglect.5_shot"]
  assert tasks_lib.PromptOptions().max_length == 2048
  assert rows["n_demos_dropped"].min() >= 1
  assert (rows["inputs_len"] + rows["targets_len"] + 1 <= 2048)[rows["n_demos"] > 0].all()
  short = all_rows["invscale:memo_trap.1_shot"]
  assert (short["n_demos"] == 1).all()


def decoded_rows(task: seqio.Task) -> list[dict[str, Any]]:
  """Every row of a task, as Python values, with inputs/targets decoded by its vocabulary."""
  vocabulary = task.output_features["inputs"].vocabulary
  rows = []
  for row in get_dataset(task).as_numpy_iterator():
    row = {k: v.decode() if isinstance(v, bytes) else v for k, v in row.items()}
    row["inputs_decoded"] = vocabulary.decode(row["inputs"].tolist())
    row["targets_decoded"] = vocabulary.decode(row["targets"].tolist())
    rows.append(row)
  return rows


@pytest.mark.parametrize("name", ["invscale:neqa.zero_shot", "invscale:sig_figs.3_shot",
                                  "invscale:prompt_injection.1_shot"])
def test_rows_in_detail(name: str, combined_data_dir: pathlib.Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setenv(datadir.ENV_VAR, str(combined_data_dir))
  spec, variant = seqio_tasks.parse_task_name(name)
  examples = examples_of(combined_data_dir, spec)
  rows = decoded_rows(seqio.get_mixture_or_task(name))
  by_example = collections.defaultdict(list)
  for row in rows:
    by_example[int(row["example_id"])].append(row)
  assert sorted(by_example) == [e.example_id for e in examples]
  for example in examples:
    group = by_example[example.example_id]
    targets = example.classes or (example.completion,)
    assert [r["targets_pretokenized"] for r in group] == list(targets)
    for index, row in enumerate(group):
      assert row["inputs_decoded"] == row["inputs_pretokenized"]
      assert row["targets_decoded"] == row["targets_pretokenized"]
      assert row["inputs"].dtype == np.int32 and row["inputs"].min() >= 3  # bytes, no pad/EOS
      prompt = row["inputs_pretokenized"]
      assert prompt.endswith(example.prompt)
      assert prompt.count("\n\n\n") == row["n_demos"] == variant.k_shot
      if variant.k_shot == 0:
        assert prompt == example.prompt
      assert row["variant"] == variant.name and row["task"] == spec.name
      assert (row["round"], row["part"]) == (example.round, example.part)
      assert row["n_classes"] == len(targets)
      if example.classes:
        assert (row["class_index"], row["answer_index"]) == (index, example.answer_index)
        assert row["is_correct"] == (index == example.answer_index)
      else:
        assert (row["class_index"], row["answer_index"], row["is_correct"]) == (-1, -1, False)
      assert len({r["inputs_pretokenized"] for r in group}) == 1  # one prompt per example


def test_postprocess_gives_score_metric_targets() -> None:
  task = seqio.get_mixture_or_task("invscale:memo_trap.zero_shot")
  example = {"example_id": np.int32(7), "class_index": np.int32(1), "answer_index": np.int32(0)}
  assert task.postprocess_fn("text", example=example, is_target=True) == (7, 1, 0)
  assert task.postprocess_fn("text", example=example, is_target=False) == "text"


def test_missing_data_dir_is_a_clear_error(tmp_path: pathlib.Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setenv(datadir.ENV_VAR, str(tmp_path))
  with pytest.raises(FileNotFoundError, match="sig-figs_classification.jsonl"):
    get_dataset(seqio.get_mixture_or_task("invscale:sig_figs.zero_shot"))


def test_gin_bindings_given_after_import_apply(clean_gin: None, combined_data_dir: pathlib.Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
  """Gin parsed after `import seqio_tasks` applies: the data dir and prompt option macros."""
  monkeypatch.setenv(datadir.ENV_VAR, str(combined_data_dir / "not_here"))
  task = seqio.get_mixture_or_task("invscale:redefine.1_shot")
  gin.parse_config(f"INVSCALE_DATA_DIR = '{combined_data_dir}'")
  first = [r["inputs_pretokenized"] for r in get_dataset(task).as_numpy_iterator()]
  assert len(first) == sum(len(e.classes) for e in examples_of(combined_data_dir,
                                                               catalog.get("redefine")))
  gin.parse_config("INVSCALE_SEED = 5")
  assert [r["inputs_pretokenized"] for r in get_dataset(task).as_numpy_iterator()] != first
  gin.parse_config("INVSCALE_MAX_LENGTH = 8")
  assert {int(r["n_demos_dropped"]) for r in get_dataset(task).as_numpy_iterator()} == {1}


def test_prompt_options_and_data_dir_arguments(combined_data_dir: pathlib.Path) -> None:
  """build_task's own options: another seed changes demonstrations; a tiny budget drops them."""
  def texts(options: tasks_lib.PromptOptions) -> list[tuple[str, int]]:
    task = seqio_tasks.build_task("redefine", "1_shot", seqio.ByteVocabulary(), options,
                                  str(combined_data_dir))
    return [(r["inputs_pretokenized"].decode(), int(r["n_demos_dropped"]))
            for r in get_dataset(task).as_numpy_iterator()]
  base = texts(tasks_lib.PromptOptions(seed=0, max_length=None))
  assert base == texts(tasks_lib.PromptOptions(seed=0, max_length=None))
  assert base != texts(tasks_lib.PromptOptions(seed=1, max_length=None))
  tiny = texts(tasks_lib.PromptOptions(seed=0, max_length=8))
  assert {d for _, d in tiny} == {1}
  assert all("\n\n\n" not in t for t, _ in tiny)
