"""Bad inputs and failing disks: one line naming the file (and field), a non-zero exit, no
traceback and nothing half-written."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO, CliResult
from invscale_jax import family as family_lib
from invscale_jax.data import loader
from invscale_jax.models.config import load_config
from test_report_end_to_end import small_results

ROWS = [{"prompt": "Redefine e as 917. Q: What is the first digit of e? A:",
         "classes": "[' 9', ' 2']", "answer_index": 0},
        {"prompt": "Redefine the + sign as subtraction. Q: What is 9 + 4? A:",
         "classes": "[' 5', ' 13']", "answer_index": 0}]


def assert_one_line(result: CliResult, message: str, code: int = 2) -> None:
  assert result.code == code, result.err
  assert result.err == f"invscale: error: {message}\n"


def write_data(root: pathlib.Path, *rows: dict) -> pathlib.Path:
  """A data dir holding redefine's file (ROWS, then `rows`)."""
  root.mkdir(parents=True, exist_ok=True)
  lines = [json.dumps(r) for r in (*ROWS, *rows)]
  (root / "redefine_classification.jsonl").write_text("\n".join(lines) + "\n")
  return root


def write_manifest(path: pathlib.Path, **fields) -> pathlib.Path:
  """A one-model manifest (checkpoint: an empty directory) with `fields` overridden."""
  (path.parent / "ckpt").mkdir(parents=True, exist_ok=True)
  model = {"name": "m", "architecture": "decoder_only", "gin": "models/tiny/tiny_1.gin",
           "checkpoint": "ckpt", "vocabulary": {"type": "byte"}, "n_params": 10}
  path.write_text(json.dumps({"family": "f", "models": [{**model, **fields}]}))
  return path


# ---------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("fields, message", [
    ({"name": ["a"]}, "name: must be a non-empty string, got ['a']"),
    ({"gin": None}, "gin: must be a non-empty string, got None"),
    ({"checkpoint": 7}, "checkpoint: must be a non-empty string, got 7"),
    ({"vocabulary": "byte"}, "vocabulary: must be an object, got 'byte'"),
    ({"vocabulary": {"type": "sentencepiece", "path": ["x"]}},
     "vocabulary.path: must be a non-empty string, got ['x']"),
    ({"train_tokens": float("nan")}, "train_tokens: must be a finite positive number, got nan"),
    ({"train_flops": float("inf")}, "train_flops: must be a finite positive number, got inf"),
    ({"n_params": 1.5}, "n_params: must be an integer, got 1.5"),
    ({"n_params": True}, "n_params: must be a finite positive number, got True"),
    ({"encoder_eos": "no"}, "encoder_eos: must be true or false, got 'no'"),
])
def test_manifest_field_of_the_wrong_type_or_value(fields, message, tmp_path, run_cli) -> None:
  manifest = write_manifest(tmp_path / "manifest.json", **fields)
  assert_one_line(run_cli("family", "show", manifest), f"{manifest}: models[0]: {message}")


def test_integral_float_n_params_is_an_integer(tmp_path) -> None:
  manifest = write_manifest(tmp_path / "manifest.json", n_params=1e9, train_tokens=2e10)
  assert family_lib.load(manifest).models[0].n_params == 10**9


def test_unreadable_manifests(tmp_path, run_cli) -> None:
  assert_one_line(run_cli("family", "show", tmp_path), f"{tmp_path}: Is a directory")
  deep = tmp_path / "deep.json"
  deep.write_text("[" * 100_000 + "]" * 100_000)
  assert_one_line(run_cli("family", "show", deep), f"{deep}: invalid JSON: nested too deeply")
  binary = tmp_path / "binary.json"
  binary.write_bytes(b"\x89PNG\r\n")
  assert_one_line(run_cli("family", "show", binary),
                  f"{binary}: not UTF-8 text (invalid start byte at byte 0)")
  family = write_manifest(tmp_path / "family.json")
  family.write_text(json.dumps(dict(json.loads(family.read_text()), family=["f"])))
  assert_one_line(run_cli("family", "show", family),
                  f"{family}: family: must be a non-empty string, got ['f']")


# ---------------------------------------------------------------------------- model gin files


@pytest.mark.parametrize("text, message", [
    ("include 'models/tiny/tiny_1.gin'\nModelConfig.vocab_size = 1e11\n",
     "{gin}: ModelConfig.vocab_size: must be of type int, got 100000000000.0"),
    ("include 'models/tiny/tiny_1.gin'\nModelConfig.emb_dim = True\n",
     "{gin}: ModelConfig.emb_dim: must be of type int, got True"),
    ("include 'models/tiny/tiny_1.gin'\nModelConfig.norm_eps = 'small'\n",
     "{gin}: ModelConfig.norm_eps: must be of type float, got 'small'"),
    ("include 'models/tiny/tiny_1.gin'\nModelConfig.num_heads = -2\n",
     "{gin}: ModelConfig: vocab_size, emb_dim, num_heads, head_dim, mlp_dim must be positive"),
    ("include '{manifest}'\n", "{manifest}:1: not a valid gin file: Unexpected token."),
    ("include '{binary}'\n", "{binary}: not a gin file (not UTF-8 text at byte 1)"),
])
def test_bad_model_gin_is_one_line(text, message, tmp_path, run_cli) -> None:
  """Scoring reads every model's gin file before anything else: a bad one is one line."""
  paths = {"gin": tmp_path / "model.gin", "manifest": tmp_path / "other.json",
           "binary": tmp_path / "weights.bin"}
  paths["manifest"].write_text('{"family": "x", "models": []}\n')
  paths["binary"].write_bytes(b"\x00\xff\xfe")
  paths["gin"].write_text(text.format(**paths))
  manifest = write_manifest(tmp_path / "manifest.json", gin=str(paths["gin"]))
  result = run_cli("score", "--family", manifest, "--tasks", "redefine",
                   "--data_dir", write_data(tmp_path / "data"), "--out", tmp_path / "out")
  assert_one_line(result, message.format(**paths))
  with pytest.raises(ValueError, match="^" + message.format(**paths).split(":")[0]):
    load_config(paths["gin"])
  assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- vocabularies


@pytest.mark.parametrize("kind, filename", [("sentencepiece", "spm.model"),
                                            ("hf_tokenizer", "tokenizer.json")])
def test_missing_or_corrupt_vocabulary_names_manifest_and_model(kind, filename, tmp_path,
                                                                run_cli) -> None:
  manifest = write_manifest(tmp_path / "manifest.json",
                            vocabulary={"type": kind, "path": filename})
  args = ("score", "--family", manifest, "--tasks", "redefine",
          "--data_dir", write_data(tmp_path / "data"), "--out", tmp_path / "out")
  path = tmp_path / filename
  assert_one_line(run_cli(*args), f"{manifest}: model m: vocabulary.path: {path}: "
                                  f"no such {kind} file")
  path.write_text("include 'not a tokenizer'\n")  # scoring reads it when the model loads
  from invscale_jax import tokenizer, vocab  # pylint: disable=g-import-not-at-top
  for reader in (vocab, tokenizer):  # SeqIO's vocabulary, and the scoring path's tokenizer
    with pytest.raises(ValueError, match=f"^{manifest}: model m: vocabulary.path: {path}: "
                                         f"not a valid {kind} file \\(.+\\)$"):
      reader.from_spec(family_lib.load(manifest).models[0].vocabulary)


# ---------------------------------------------------------------------------- task data


def test_validate_a_directory_and_deeply_nested_rows(tmp_path, run_cli) -> None:
  result = run_cli("data", "validate", tmp_path)
  assert result.code == 1
  assert result.err.splitlines()[0] == f"{tmp_path}:0: file: cannot read: Is a directory"
  nested = tmp_path / "nested.jsonl"
  nested.write_text("\n".join([
      '{"prompt": "p", "classes": ' + "[" * 100_000 + "]" * 100_000 + ', "answer_index": 0}',
      json.dumps({"prompt": "p", "classes": "[" * 100_000 + "]" * 100_000, "answer_index": 0}),
      json.dumps(ROWS[0])]) + "\n")
  result = run_cli("data", "validate", nested)
  assert result.code == 1
  assert result.err.splitlines()[:2] == [
      f"{nested}:1: line: invalid JSON: nested too deeply",
      f"{nested}:2: classes: not a Python or JSON list literal: '{'[' * 40}'"]


@pytest.mark.parametrize("field, row", [
    ("prompt", {"prompt": "Q: \ud800?", "classes": "[' a', ' b']", "answer_index": 0}),
    ("classes", {"prompt": "Q: ?", "classes": "[' a', ' \\ud800']", "answer_index": 0}),
    ("classes", {"prompt": "Q: ?", "classes": [" a", " \udfff"], "answer_index": 0}),
])
def test_lone_surrogates_are_rejected_by_validator_and_scorer_alike(field, row, tmp_path,
                                                                    run_cli) -> None:
  """JSON may escape a lone surrogate ("\\ud800"); it is not text, and no tokenizer can
  encode it. `data validate` and loading for scoring report the same FILE:LINE: FIELD."""
  data = write_data(tmp_path / "data", row)
  path = data / "redefine_classification.jsonl"
  result = run_cli("data", "validate", path)
  assert result.code == 1
  line = result.err.splitlines()[0]
  assert line.startswith(f"{path}:3: {field}: ") and "lone surrogate" in line
  with pytest.raises(loader.DataError) as e:
    loader.load(path)  # what scoring reads the file with
  assert str(e.value) == line


def test_score_refuses_a_lone_surrogate_as_validate_does(tiny_family, tmp_path,
                                                         run_cli) -> None:
  row = {"prompt": "Q: \ud800?", "classes": "[' a', ' b']", "answer_index": 1}
  data = write_data(tmp_path / "data", row)
  validate = run_cli("data", "validate", data / "redefine_classification.jsonl")
  result = run_cli("score", "--family", tiny_family, "--model", "tiny-1", "--tasks",
                   "redefine", "--data_dir", data, "--out", tmp_path / "out")
  assert_one_line(result, validate.err.splitlines()[0])


def test_prompt_injection_completion_with_a_lone_surrogate(tmp_path) -> None:
  path = tmp_path / "prompt-injection_sequence-probability.jsonl"
  path.write_text(json.dumps({"prompt": "Say hi.", "completion": " hi\udc80"}) + "\n")
  _, problems = loader.check(path)
  assert [str(p) for p in problems] == [
      f"{path}:1: completion: lone surrogate '\\udc80' at character 3 (not valid Unicode)"]


# ---------------------------------------------------------------------------- outputs


def test_init_tiny_over_existing_files(tmp_path, run_cli) -> None:
  (tmp_path / "fam").mkdir()
  (tmp_path / "fam" / "manifest.json").write_text("{}")
  assert_one_line(run_cli("family", "init-tiny", "--out", tmp_path / "fam"),
                  f"{tmp_path / 'fam'}: exists and is not empty; not writing a family there")
  (tmp_path / "file").write_text("x")
  assert_one_line(run_cli("family", "init-tiny", "--out", tmp_path / "file"),
                  f"{tmp_path / 'file'}: exists and is not empty; not writing a family there")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["fam", "file"]


def test_score_out_is_a_file(tiny_family, tmp_path, run_cli) -> None:
  out = tmp_path / "results"
  out.write_text("not a directory\n")
  result = run_cli("score", "--family", tiny_family, "--model", "tiny-1", "--tasks",
                   "redefine", "--data_dir", write_data(tmp_path / "data"), "--out", out)
  assert result.code == 2 and result.err.count("\n") == 1
  assert result.err.startswith(f"invscale: error: {out}/runs/")
  assert result.err.endswith(": Not a directory\n")


# Runs `invscale ARGS` in a child Python after SETUP: what SETUP changes (limits, the
# capability bounding set) applies to the process exec'd next.
_CHILD = ("import ctypes, os, resource, sys\n{setup}\n"
          "os.execv(sys.executable, [sys.executable, '-m', 'invscale_jax.cli', *sys.argv[1:]])")
# Without CAP_DAC_OVERRIDE in its bounding set, even root is refused writing into a
# read-only directory (a no-op for other users); exit 77 when it cannot be dropped.
_NO_DAC_OVERRIDE = ("if os.geteuid() == 0 and ctypes.CDLL(None).prctl(24, 1, 0, 0, 0):\n"
                    "  sys.exit(77)  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE")
# Files may not grow past 16 KiB: writes past it fail (EFBIG), as on a full disk (ENOSPC).
_SMALL_DISK = "resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))"


def _cli(args: list[str], setup: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-c", _CHILD.format(setup=setup), *args], env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def test_read_only_out(tmp_path) -> None:
  results = small_results(tmp_path / "results")
  read_only = tmp_path / "ro"
  read_only.mkdir()
  read_only.chmod(0o555)
  try:
    report = _cli(["report", str(results), "--out", str(read_only / "report"),
                   "--resamples", "200"], _NO_DAC_OVERRIDE)
    download = _cli(["data", "download", "--data_dir", str(read_only / "data"),
                     "--base_url", "http://127.0.0.1:9", "--tasks", "neqa"], _NO_DAC_OVERRIDE)
  finally:
    read_only.chmod(0o755)
  if report.returncode == 77:
    pytest.skip("cannot drop CAP_DAC_OVERRIDE: root writes anywhere")
  assert report.returncode == 2, report.stderr
  assert report.stderr == f"invscale: error: {read_only / 'report'}: Permission denied\n"
  assert download.returncode == 2
  assert download.stderr == f"invscale: error: {read_only / 'data'}: Permission denied\n"
  assert list(read_only.iterdir()) == []


def test_full_disk_while_writing_the_report(tmp_path) -> None:
  results = small_results(tmp_path / "results")
  out = tmp_path / "report"
  result = _cli(["report", str(results), "--out", str(out), "--resamples", "200"], _SMALL_DISK)
  assert result.returncode == 2, result.stderr
  assert result.stderr == f"invscale: error: {out}: File too large\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
