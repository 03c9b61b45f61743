"""The CLI as a newcomer meets it: flag help that says what each flag does, shipped families
by name, fast one-line errors about names and paths, and a dry run that says why an earlier
run does not count."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

from conftest import REPO, SCORE_ARGS, RunCli
from invscale_jax import catalog, cli
from invscale_jax import family as family_lib
from invscale_jax.data import variants
from invscale_jax.engine import plan

HEAVY = ("tensorflow", "seqio", "jax", "flax", "torch", "transformers")


def _subparser(name: str) -> argparse.ArgumentParser:
  parser = cli.build_parser()
  commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
  return commands.choices[name]


def test_every_score_flag_says_what_it_does_and_its_default() -> None:
  # The flags of ScoringOptions fields (some are set by the command or by gin alone).
  option_flags = {f"--{f.name}" for f in dataclasses.fields(plan.ScoringOptions)}
  for command in ("score", "generate"):
    text = _subparser(command).format_help()
    assert "override ScoringOptions" not in text
    flags = {s: a for a in _subparser(command)._actions for s in a.option_strings}
    assert len(option_flags & flags.keys()) >= 13
    for flag in (option_flags & flags.keys()) | {"--model", "--tasks", "--variants",
                                                 "--data_dir", "--gin_file", "--log_samples",
                                                 "--dry_run", "--quiet"}:
      assert len(flags[flag].help) > 30 and "default" in flags[flag].help, flag
  text = " ".join(_subparser("score").format_help().split())
  for shown in ("{separate,joint}", "{float32,bfloat16}", "{auto,on,off}", "(default: 2048)",
                "(default: model)", "pythia"):
    assert shown in text


def test_every_flag_has_help_with_its_default() -> None:
  def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
    for action in parser._actions:
      if isinstance(action, argparse._SubParsersAction):
        for name, sub in action.choices.items():
          yield from walk(sub, (*path, name))
      elif action.dest not in ("help", "version"):
        yield path, action

  checked = (("score",), ("generate",), ("results",), ("storage",), ("family",),
             ("tasks", "show"), ("tasks", "lengths"), ("data", "validate"))
  for path, action in walk(cli.build_parser(), ()):
    if not any(path[:len(c)] == c for c in checked):
      continue
    assert action.help, (path, action.dest)
    if action.default not in (None, False, []) and action.default != argparse.SUPPRESS:
      assert "default" in action.help % vars(action), (path, action.dest, action.help)


def test_shipped_families_by_name_and_names_from_directories(tmp_path, run_cli: RunCli) -> None:
  assert family_lib.load("pythia").name == "pythia"
  missing = run_cli("score", "--family", "pythia-nope", "--out", tmp_path / "r")
  assert missing.code == 2 and "pythia-nope: manifest not found (nor a shipped family: " \
      in missing.err
  # A manifest without a "family" field is named after its directory when it is
  # DIR/manifest.json, after its file otherwise.
  entry = {"name": "m", "architecture": "decoder_only", "gin": "models/tiny/tiny_1.gin",
           "checkpoint": "ckpt", "vocabulary": {"type": "byte"}, "n_params": 10}
  for path in (tmp_path / "my-models" / "manifest.json", tmp_path / "other.json"):
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"models": [entry]}))
  assert family_lib.load(tmp_path / "my-models" / "manifest.json").name == "my-models"
  assert family_lib.load(tmp_path / "other.json").name == "other"


def _fast_error(*argv: str, cwd: pathlib.Path) -> tuple[int, str, list[str]]:
  """Runs `invscale ARGV` in a fresh interpreter: exit code, stderr, heavy modules loaded."""
  code = ("import sys; from invscale_jax import cli; code = cli.main(sys.argv[1:]); "
          f"print([m for m in {HEAVY!r} if m in sys.modules]); sys.exit(code)")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get(
      "PYTHONPATH", "")]))
  done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                        env=env, cwd=cwd, timeout=60, check=False)
  return done.returncode, done.stderr, json.loads(done.stdout.strip().replace("'", '"'))


def test_errors_about_models_and_directories_come_before_heavy_imports(
    tmp_path, shared_data) -> None:
  args = ("score", "--family", "pythia", "--out", str(tmp_path / "r"), "--tasks", "memo-trap")
  code, err, heavy = _fast_error(*args, "--model", "tiny-9", "--data_dir", str(shared_data),
                                 cwd=tmp_path)
  assert (code, heavy) == (2, [])
  assert "no model named 'tiny-9' (has pythia-70m" in err
  for extra in ((), ("--dry_run",)):
    code, err, heavy = _fast_error(*args, "--data_dir", str(tmp_path / "nowhere"), *extra,
                                   cwd=tmp_path)
    assert (code, heavy) == (2, [])
    assert err.startswith(f"invscale: error: {tmp_path / 'nowhere'}: data directory does not "
                          f"exist; run `invscale data download")
  assert not (tmp_path / "r").exists()


def test_dry_run_says_which_option_makes_an_earlier_run_not_match(
    run_cli: RunCli, tiny_family, small_data_dir, reference_results) -> None:
  args = dict(zip(SCORE_ARGS[::2], SCORE_ARGS[1::2]))
  shown = run_cli("score", "--family", tiny_family, "--data_dir", small_data_dir,
                  "--out", reference_results, "--model", "tiny-1", "--tasks", "memo-trap",
                  "--variants", "zero_shot", "--chunk_size", args["--chunk_size"],
                  "--max_length", "1024", "--dry_run")
  assert shown.code == 0, shown.err
  notes = [line for line in shown.out.splitlines() if "does not match" in line]
  assert len(notes) == 1
  assert notes[0].startswith("tiny-1 memo-trap.zero_shot: earlier run ")
  assert notes[0].endswith("does not match: max_length: 2048 there, 1024 here")


def test_tasks_show_prints_the_prompt_and_classes_seqio_builds(run_cli: RunCli,
                                                               small_data_dir) -> None:
  import seqio  # pylint: disable=g-import-not-at-top
  import seqio_tasks  # pylint: disable=g-import-not-at-top

  shown = run_cli("tasks", "show", "invscale:memo_trap.1_shot", "--example", "5",
                  "--data_dir", small_data_dir, "--max_length", "200")
  assert shown.code == 0, shown.err
  rows = seqio_tasks.tasks.rows_for(
      catalog.get("memo-trap"), variants.parse("1_shot"), seqio.ByteVocabulary(),
      seqio_tasks.tasks.PromptOptions(0, 200), str(small_data_dir))
  mine = [i for i, e in enumerate(rows["example_id"]) if e == 5]
  header, prompt_and_classes = shown.out.split("\n--- prompt ---\n")
  prompt, classes = prompt_and_classes.split("\n--- classes ")
  assert prompt == rows["inputs"][mine[0]]
  n_dropped = rows["n_demos_dropped"][mine[0]]
  assert f"demonstrations: {rows['n_demos'][mine[0]]} kept, {n_dropped} dropped" in header
  answer = rows["answer_index"][mine[0]]
  for i in mine:
    mark = "*" if rows["class_index"][i] == answer else " "
    assert f"{mark} {rows['class_index'][i]}: {rows['targets'][i]!r}" in classes
  long = run_cli("tasks", "show", "hindsight-neglect.zero_shot", "--data_dir", small_data_dir,
                 "--max_length", "256")
  assert " tokens over the budget of 253 (max_length - BOS - longest target): the prompt's " \
      "start is cut when scored" in long.out
  bad = run_cli("tasks", "show", "memo-trap.zero_shot", "--example", "99", "--data_dir",
                small_data_dir)
  assert bad.code == 2 and "--example: memo-trap has examples 0 to 23, got 99" in bad.err


def test_log_samples_keeps_the_prompt_text_beside_the_records(
    run_cli: RunCli, tiny_family, small_data_dir, reference_results, tmp_path) -> None:
  from conftest import find_run, read_results  # pylint: disable=g-import-not-at-top
  from invscale_jax import results  # pylint: disable=g-import-not-at-top
  from invscale_jax.data import datadir  # pylint: disable=g-import-not-at-top

  out = shutil.copytree(reference_results, tmp_path / "results")
  args = dict(zip(SCORE_ARGS[::2], SCORE_ARGS[1::2]))
  shown = run_cli("score", "--family", tiny_family, "--data_dir", small_data_dir, "--out", out,
                  "--model", "tiny-1", "--tasks", "memo-trap", "--variants", "zero_shot,1_shot",
                  "--chunk_size", args["--chunk_size"], "--log_samples", "--quiet")
  assert shown.code == 0, shown.err
  assert "warning" not in shown.err  # the runs were complete, and still are
  examples = datadir.load_task(small_data_dir, "memo-trap")
  records = read_results(out)
  for variant in ("zero_shot", "1_shot"):
    run_dir = find_run(out, "tiny-1", "memo-trap", variant)
    assert results.verify_complete(str(run_dir)) is None
    lines = (run_dir / "samples" / "prompts.jsonl").read_text(encoding="utf-8").splitlines()
    samples = [json.loads(line) for line in lines]
    scored = {k[3] for k in records if k[:3] == ("tiny-1", "memo-trap", variant)}
    assert {s["example_id"] for s in samples} == scored and len(samples) == len(examples)
    for s in samples:
      e = examples[s["example_id"]]
      assert (s["targets"], s["answer_index"]) == (list(e.classes), e.answer_index)
      if variant == "zero_shot":
        assert s["prompt"] == e.prompt
      else:
        assert s["prompt"].endswith("\n\n\n" + e.prompt) and s["n_demos_dropped"] == 0
