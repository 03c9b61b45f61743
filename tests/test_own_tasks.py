"""Your own tasks: declarations, registration as SeqIO tasks (also after gin is locked),
task names in every spelling, a declared task scored and reported end to end, and CoT
exemplars in the run key."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, RunCli, run_dirs
from invscale_jax import family as family_lib
from invscale_jax import results, task_registry
from invscale_jax.data import cot, declarations
from invscale_jax.engine import plan

# A classification task in the prize's format (classes as a Python list literal).
ROWS = [{"prompt": f"Q: is {a} larger than {b}? A:", "classes": "[' yes', ' no']",
         "answer_index": int(a <= b)} for a, b in ((3, 1), (2, 7), (9, 4), (1, 5), (6, 6))]
EXEMPLAR = {"task": "my-cmp", "prompt": "Q: is 8 larger than 2? A:", "classes": [" yes", " no"],
            "answer_index": 0, "rationale": "8 is more than 2.",
            "answer_phrase": "So the answer is", "note": "hand-written"}
DECLARATION = {"name": "my-cmp", "type": "classification", "metric": "accuracy",
               "file": "my-cmp.jsonl", "cot_exemplars": "my-cmp.cot.json",
               "description": "which number is larger"}


def write_task_dir(root: pathlib.Path, declaration: dict | None = None) -> pathlib.Path:
  """A task directory with `my-cmp` (CoT exemplars) and `my-seq` (sequence probability)."""
  root.mkdir(parents=True, exist_ok=True)
  (root / "my-cmp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
  (root / "my-cmp.cot.json").write_text(json.dumps(EXEMPLAR))
  (root / "my-cmp.task.json").write_text(json.dumps(declaration or DECLARATION))
  (root / "my-seq.jsonl").write_text(json.dumps({"prompt": "1 2 3", "completion": " 4"}) + "\n")
  (root / "my-seq.task.json").write_text(json.dumps(
      {"name": "my-seq", "type": "sequence_probability", "file": "my-seq.jsonl"}))
  return root


def forget_own_tasks() -> None:
  """Nothing declared, and no SeqIO task of ours registered, after a test."""
  task_registry.use([])
  if "seqio" in sys.modules:
    seqio = sys.modules["seqio"]
    for name in [n for n in seqio.TaskRegistry.names() if n.startswith("invscale:my_")]:
      seqio.TaskRegistry.remove(name)


@pytest.fixture
def task_dir(tmp_path: pathlib.Path):
  """The task directory, declared for the test."""
  root = write_task_dir(tmp_path / "tasks")
  task_registry.use([str(root)])
  yield root
  forget_own_tasks()


# ---------------------------------------------------------------------------- declarations


def test_a_task_directory_declares_its_tasks(task_dir: pathlib.Path) -> None:
  cmp, seq = declarations.read_dir(str(task_dir))
  assert (cmp.name, cmp.metric, cmp.headline, cmp.seqio_name) == (
      "my-cmp", "classification", "accuracy", "my_cmp")
  assert cmp.file_path() == str(task_dir / "my-cmp.jsonl")
  assert cmp.exemplar_path == str(task_dir / "my-cmp.cot.json")
  assert (seq.metric, seq.headline, seq.exemplar_path) == ("sequence_probability", "loss", None)
  assert cmp.declaration() == {**DECLARATION, "demos_in_prompt": False}


@pytest.mark.parametrize("change, field, reason", [
    ({"name": "My task"}, "name", "must match [a-z][a-z0-9-]*"),
    ({"name": "x" * 65}, "name", "at most 64 characters"),
    ({"name": "memo-trap"}, "name", "is a prize task's name"),
    ({"name": "other"}, "name", "differs from the file's name (expected other.task.json)"),
    ({"type": "ranking"}, "type", "must be one of classification, sequence_probability"),
    ({"metric": "bleu"}, "metric", "must be one of accuracy, loss"),
    ({"file": None}, "file", "missing"),
    ({"file": "/etc/passwd"}, "file", "must be relative"),
    ({"file": "../x.jsonl"}, "file", "must not leave the declaration's directory"),
    ({"file": "absent.jsonl"}, "file", "absent.jsonl not found"),
    ({"cot_exemplars": "none.json"}, "cot_exemplars", "none.json not found"),
    ({"demos_in_prompt": "no"}, "demos_in_prompt", "must be true or false"),
    ({"metrics": "accuracy"}, "metrics", "unknown field"),
])
def test_bad_declarations_are_one_line(tmp_path: pathlib.Path, change: dict, field: str,
                                       reason: str) -> None:
  declaration = {k: v for k, v in {**DECLARATION, **change}.items() if v is not None}
  root = write_task_dir(tmp_path / "tasks", declaration)
  with pytest.raises(declarations.DeclarationError) as error:
    declarations.read_dir(str(root))
  message = str(error.value)
  assert message.startswith(f"{root / 'my-cmp.task.json'}: {field}: "), message
  assert reason in message and "\n" not in message


def test_bad_directories(tmp_path: pathlib.Path, run_cli: RunCli) -> None:
  root = write_task_dir(tmp_path / "tasks")
  (root / "my-cmp.task.json").write_text("{not json")
  with pytest.raises(declarations.DeclarationError, match="my-cmp.task.json: file: invalid JSON"):
    declarations.read_dir(str(root))
  with pytest.raises(declarations.DeclarationError, match="task directory not found"):
    declarations.read_dir(str(tmp_path / "absent"))
  with pytest.raises(declarations.DeclarationError, match=r"no task declarations"):
    declarations.read_dir(str(tmp_path / "tasks" / ".."))
  twice = write_task_dir(tmp_path / "copy")
  with pytest.raises(declarations.DeclarationError, match="also declared in"):
    declarations.read_dirs([str(write_task_dir(tmp_path / "good")), str(twice)])
  # The task file is checked by the release files' validator: `FILE:LINE: FIELD: reason`.
  good = tmp_path / "good"
  (good / "my-cmp.jsonl").write_text('{"prompt": "a", "classes": "[\' x\']", "answer_index": 0}\n')
  result = run_cli("data", "validate", good)
  assert result.code == 1
  assert f"{good / 'my-cmp.jsonl'}:1: classes: needs at least 2 distinct classes" in result.err
  assert f"{good / 'my-seq.jsonl'}: 1 rows OK" in result.out


def test_a_task_directory_in_a_bucket(tmp_path: pathlib.Path, bucket: str) -> None:
  from conftest import upload  # pylint: disable=g-import-not-at-top
  from invscale_jax.data import loader  # pylint: disable=g-import-not-at-top

  url = upload(write_task_dir(tmp_path / "tasks"), f"{bucket}/tasks")
  try:
    cmp, _ = task_registry.use([url])
    assert cmp.file_path() == f"{url}/my-cmp.jsonl"
    assert len(loader.load(cmp.file_path(), cmp.metric, cmp.name)) == len(ROWS)
    assert cot.load_exemplar("my_cmp").rationale == EXEMPLAR["rationale"]
  finally:
    forget_own_tasks()


def test_a_bad_task_file_fails_score_with_its_line(tmp_path: pathlib.Path, tiny_family,
                                                   run_cli: RunCli, forgetting) -> None:
  root = write_task_dir(tmp_path / "tasks")
  rows = [json.dumps(r) for r in ROWS]
  rows[1], rows[3] = rows[1].replace('"answer_index": 1', '"answer_index": 2'), "{"
  (root / "my-cmp.jsonl").write_text("\n".join(rows) + "\n")
  result = run_cli("score", "--family", tiny_family, "--task_dirs", root, "--tasks", "my-cmp",
                   "--out", tmp_path / "out")
  assert result.code == 2 and not (tmp_path / "out" / "runs").exists()
  assert result.err == (f"invscale: error: {root / 'my-cmp.jsonl'}:2: answer_index: 2 out of "
                        f"range for 2 classes (and 1 more: `invscale data validate {root}`)\n")


def test_manifest_task_dirs_are_relative_to_it(tmp_path: pathlib.Path, tiny_family) -> None:
  manifest = json.loads(tiny_family.read_text())
  path = tmp_path / "manifest.json"
  path.write_text(json.dumps({**manifest, "task_dirs": ["tasks", "gs://b/tasks"]}))
  assert family_lib.load(path).task_dirs == (str(tmp_path / "tasks"), "gs://b/tasks")
  path.write_text(json.dumps({**manifest, "task_dirs": "tasks"}))
  with pytest.raises(family_lib.ManifestError, match="task_dirs: must be a list"):
    family_lib.load(path)


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize("name, task, variant", [
    ("memo-trap", "memo-trap", None), ("memo_trap", "memo-trap", None),
    ("memo_trap.1_shot", "memo-trap", "1_shot"),
    ("invscale:memo_trap.zero_shot", "memo-trap", "zero_shot"),
    ("my-cmp", "my-cmp", None), ("invscale:my_cmp.cot_1_shot", "my-cmp", "cot_1_shot"),
])
def test_task_names_in_every_spelling(task_dir, name: str, task: str, variant) -> None:
  spec, got = task_registry.parse(name)
  assert (spec.name, got) == (task, variant)


def test_a_name_with_a_variant_fixes_it(task_dir) -> None:
  pairs = plan.task_variants(["invscale:memo_trap.zero_shot", "my_cmp"], ["1_shot", "3_shot"])
  assert [(s.name, v.name) for s, v in pairs] == [
      ("memo-trap", "zero_shot"), ("my-cmp", "1_shot"), ("my-cmp", "3_shot")]


def test_unknown_names_fail_before_any_heavy_import(tmp_path: pathlib.Path, tiny_family) -> None:
  """`--tasks memotrap`: one line with a suggestion, and TensorFlow, SeqIO, JAX unloaded."""
  code = ("import sys\nfrom invscale_jax import cli\n"
          f"code = cli.main(['score', '--family', {str(tiny_family)!r}, '--out', "
          f"{str(tmp_path / 'out')!r}, '--tasks', 'neqa,memotrap'])\n"
          "heavy = [m for m in ('tensorflow', 'seqio', 'jax', 'flax') if m in sys.modules]\n"
          "print(code, heavy)\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
  assert result.stdout.strip() == "2 []", result.stderr
  [line] = result.stderr.strip().splitlines()
  assert line.startswith("invscale: error: unknown task 'memotrap'; did you mean memo-trap?")


# ---------------------------------------------------------------------------- SeqIO


def test_registered_variants_and_cli_listing(task_dir, run_cli: RunCli) -> None:
  import seqio_tasks  # pylint: disable=g-import-not-at-top

  names = seqio_tasks.register_task_dirs([str(task_dir)])
  assert "invscale:my_cmp.cot_1_shot" in names and "invscale:my_seq.1_shot" in names
  assert not any(n.startswith("invscale:my_seq.cot") for n in names)  # no exemplars
  with pytest.raises(ValueError, match="cot_exemplars: not declared"):
    seqio_tasks.build_task("my-seq", "cot_zero_shot")
  listed = run_cli("tasks", "list", "--task_dirs", task_dir).out.splitlines()
  assert set(names) <= set(listed) and "invscale:memo_trap.zero_shot" in listed
  lengths = run_cli("tasks", "lengths", "my_cmp", "--task_dirs", task_dir)
  longest = max(len(r["prompt"].encode()) for r in ROWS)
  assert lengths.out == f"TASK_FEATURE_LENGTHS = {{'inputs': {longest}, 'targets': 4}}\n"


def test_registered_from_gin_after_it_is_locked(tmp_path: pathlib.Path) -> None:
  """T5X imports MIXTURE_OR_TASK_MODULE after gin is finalized: the macro applies then,
  and so does the environment variable."""
  gin_dir, env_dir = write_task_dir(tmp_path / "a"), tmp_path / "b"
  env_dir.mkdir()
  (env_dir / "my-other.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
  (env_dir / "my-other.task.json").write_text(json.dumps(
      {"name": "my-other", "type": "classification", "file": "my-other.jsonl"}))
  code = ("import gin, seqio\n"
          f"gin.parse_config(\"INVSCALE_TASK_DIRS = [{str(gin_dir)!r}]\")\n"
          "gin.finalize()\n"
          "import seqio_tasks\n"
          "task = seqio.get_mixture_or_task('invscale:my_cmp.1_shot')\n"
          "rows = list(task.get_dataset(None, split='test', shuffle=False).as_numpy_iterator())\n"
          "other = seqio.get_mixture_or_task('invscale:my_other.zero_shot')\n"
          "print(len(rows), rows[0]['inputs_pretokenized'].decode().count('Q:'), other.name)\n")
  env = {k: v for k, v in os.environ.items() if not k.startswith("INVSCALE_")}
  env.update(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
             **{task_registry.ENV_VAR: str(env_dir)})
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == [str(2 * len(ROWS)), "2", "invscale:my_other.zero_shot"]


# ---------------------------------------------------------------------------- run keys


def keys(family: pathlib.Path, data_dir: pathlib.Path, tasks: list[str], variants: list[str]
         ) -> dict[tuple[str, str, str], plan.Run]:
  runs = plan.plan(family_lib.load(family), ["tiny-1"], tasks, variants, str(data_dir),
                   plan.ScoringOptions())
  return {(r.entry.name, r.task.name, r.variant.name): r for r in runs}


def test_cot_exemplars_are_in_the_run_key(task_dir, tiny_family, small_data_dir) -> None:
  """Everything that builds a prompt is in the key: the shipped exemplar of a prize task,
  a declared task's exemplar, its declaration and its file."""
  from invscale_jax.data import datadir  # pylint: disable=g-import-not-at-top

  variants = ["zero_shot", "cot_1_shot"]
  base = keys(tiny_family, small_data_dir, ["memo-trap", "my-cmp"], variants)
  shipped = base[("tiny-1", "memo-trap", "cot_1_shot")].info
  assert shipped["cot_exemplar_sha256"] == datadir.sha256_of(cot.exemplar_path("memo-trap"))
  assert "cot_exemplar_sha256" not in base[("tiny-1", "memo-trap", "zero_shot")].info
  assert base[("tiny-1", "my-cmp", "zero_shot")].info["task_spec"]["type"] == "classification"
  edits = {"exemplar": ("my-cmp.cot.json", "8 is more than 2.", "8 exceeds 2."),
           "declaration": ("my-cmp.task.json", "which number", "Which number"),
           "file": ("my-cmp.jsonl", "Q: is 3", "Q: Is 3")}
  for what, (name, old, new) in edits.items():
    path = task_dir / name
    text = path.read_text()
    path.write_text(text.replace(old, new))
    task_registry.use([str(task_dir)])
    edited = keys(tiny_family, small_data_dir, ["memo-trap", "my-cmp"], variants)
    changed = {k for k in base if edited[k].key != base[k].key}
    expect = {("tiny-1", "my-cmp", "cot_1_shot")} | (
        set() if what == "exemplar" else {("tiny-1", "my-cmp", "zero_shot")})
    assert changed == expect, what
    path.write_text(text)


# ---------------------------------------------------------------------------- end to end


@pytest.fixture
def forgetting():
  yield
  forget_own_tasks()


def test_a_declared_task_scored_and_reported(tmp_path: pathlib.Path, tiny_family,
                                              small_data_dir, run_cli: RunCli,
                                              forgetting) -> None:
  """Declared through the manifest's task_dirs, scored with `invscale score` on the tiny
  family (zero-shot, CoT and a sequence task, names in two spellings), reported from the
  results alone; an edited exemplar is not reused."""
  root = write_task_dir(tmp_path / "fam" / "tasks")
  manifest = json.loads(tiny_family.read_text())
  for m in manifest["models"]:
    m["checkpoint"] = str(tiny_family.parent / m["checkpoint"])
  family = tmp_path / "fam" / "manifest.json"
  family.write_text(json.dumps({**manifest, "task_dirs": ["tasks"]}))
  out, flags = tmp_path / "results", ("--generation_length", "8", "--max_length", "256")
  score = ("score", "--family", family, "--data_dir", small_data_dir, "--out", out,
           "--tasks", "my_cmp,invscale:my_cmp.cot_1_shot,my-seq", *flags)
  result = run_cli(*score)
  assert result.code == 0, result.err
  infos = [results.read_run_info(d) for d in run_dirs(out)]
  assert sorted((i["model"]["name"], i["task"], i["variant"]) for i in infos) == sorted(
      (m, t, v) for m in ("tiny-1", "tiny-2")
      for t, v in (("my-cmp", "zero_shot"), ("my-cmp", "cot_1_shot"), ("my-seq", "zero_shot")))
  assert all(results.is_complete(d) for d in run_dirs(out))
  cmp = next(i for i in infos if i["task"] == "my-cmp")
  assert cmp["task_spec"]["description"] == DECLARATION["description"]
  assert cmp["task_source"] == str(root) and cmp["n_examples"] == len(ROWS)

  # The report needs nothing but the results: the task directory is gone.
  shutil.move(root, tmp_path / "elsewhere")
  task_registry.use([])
  report = tmp_path / "report"
  result = run_cli("report", out, "--out", report)
  assert result.code == 0, result.err
  summary = (report / "summary.md").read_text()
  assert "| tiny | my-cmp | " in summary and "my-seq (loss)" in summary
  assert "No average." in summary  # your own tasks are never averaged with the prize's
  shutil.move(tmp_path / "elsewhere", root)

  # An edited exemplar: the CoT runs are to do again, the zero-shot runs are complete.
  exemplar = root / "my-cmp.cot.json"
  exemplar.write_text(exemplar.read_text().replace("8 is more than 2.", "8 exceeds 2."))
  result = run_cli(*score, "--dry_run")
  assert result.code == 0, result.err
  lines = [line.split() for line in result.out.splitlines() if "my-cmp." in line]
  status = {(line[0], line[1]): " ".join(line[2:4]) for line in lines}
  assert status[("tiny-1", "my-cmp.cot_1_shot")].startswith("to do")
  assert status[("tiny-1", "my-cmp.zero_shot")].startswith("complete")


def test_your_tasks_are_drawn_apart_from_the_prize_average(tmp_path: pathlib.Path,
                                                          forgetting) -> None:
  """Runs of memo-trap and of a declared task (metric: loss), read back from results: the
  declared task has its own curves, shown by its loss, and no part in the average."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from invscale_jax.report import analysis, load, tables  # pylint: disable=g-import-not-at-top
  from test_report_end_to_end import class_records, entry  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  spec = {**DECLARATION, "metric": "loss", "demos_in_prompt": False}
  for model in ("tiny-1", "tiny-2"):
    for task in ("memo-trap", "my-cmp"):
      key = f"{model}.{task}"
      recs = [dataclasses.replace(r, run_key=key)
              for r in class_records(model, task, "zero_shot", 0.6, rng, n=40)]
      info = {"run_key": key, "family": "tiny", "model": entry(model), "task": task,
              "variant": "zero_shot", "n_examples": 40, "n_rows": 80, "n_records": 80,
              "record_kinds": ["class"],
              **({"task_spec": spec, "task_source": "/gone"} if task == "my-cmp" else {})}
      with results.LeaseKeeper() as keeper:
        writer = results.open_run(results.run_dir(str(tmp_path), key), info, key, keeper)
        writer.write_chunk(recs)
        writer.finish()
  task_registry.use([])
  a = analysis.analyse(load.load_runs([str(tmp_path)]), options=analysis.Options(resamples=100))
  assert [av.tasks for av in a.averages] == [("memo-trap",), ("memo-trap",)]  # accuracy, loss
  assert {(c.task, c.metric) for c in a.curves if c.task == "my-cmp"} >= {
      ("my-cmp", "accuracy"), ("my-cmp", "loss")}
  assert tables.metric_for("my-cmp", "accuracy") == "loss"
  assert task_registry.get("my_cmp").directory == "/gone"
