"""Hostile model inputs (issue 21 M8-M10, M12 and the low findings about flags): configs,
gin files and bindings, token ids, weight files and checkpoint metadata. Each gives one
line naming the file, field or flag and a non-zero exit, before anything large is built,
read or written."""

from __future__ import annotations

import json
import os
import pathlib
import struct

import pytest

from conftest import RunCli
from invscale_jax import vocab as vocab_lib
from invscale_jax.models.config import load_config
from test_cli_errors import assert_one_line, write_data, write_manifest

TINY_GIN = "include 'models/tiny/tiny_1.gin'\n"


def _score(run_cli: RunCli, tmp_path: pathlib.Path, manifest: pathlib.Path, *args,
           command: str = "score"):
  return run_cli(command, "--family", manifest, "--tasks", "redefine", "--data_dir",
                 write_data(tmp_path / "data"), "--out", tmp_path / "out", *args)


# ---------------------------------------------------------------------------- token ids


@pytest.mark.parametrize("args, fields, message", [
    (("--bos", "384"), {}, "--bos (ScoringOptions.bos): token id 384 is outside the model's "
     "vocabulary (ids 0 to 383)"),
    (("--bos", "99999999999", "--dry_run"), {}, "--bos (ScoringOptions.bos): token id "
     "99999999999 is outside the model's vocabulary (ids 0 to 383)"),
    (("--dry_run",), {"bos_id": 10**30}, "{manifest}: model m: bos_id: token id "
     f"{10**30} is outside the model's vocabulary (ids 0 to 383)"),
    (("--bos", "\u0663"), {}, "--bos (ScoringOptions.bos): must be 'model' (the model's "
     "convention), 'none' or a token id, got '\u0663'"),
])
def test_token_ids_outside_the_vocabulary(args, fields, message, tmp_path,
                                          run_cli: RunCli) -> None:
  manifest = write_manifest(tmp_path / "manifest.json", **fields)
  assert_one_line(_score(run_cli, tmp_path, manifest, *args), message.format(manifest=manifest))
  assert not (tmp_path / "out").exists()


def test_tokenizer_ids_beyond_its_token_count(tmp_path) -> None:
  """A tokenizer.json whose ids are not dense: its size is its largest id + 1, so that
  loading checks it against the network (and no id past the embedding reaches it)."""
  path = tmp_path / "tokenizer.json"
  path.write_text(json.dumps({"version": "1.0", "model": {
      "type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 1000}, "unk_token": "[UNK]"},
      "pre_tokenizer": {"type": "Whitespace"}}))
  vocabulary = vocab_lib.from_spec({"type": "hf_tokenizer", "path": str(path)})
  assert vocabulary.vocab_size == 1001
  assert list(vocabulary.encode("a b")) == [1, 1000]


def test_huge_tokenizer_parts_are_refused_before_loading(tmp_path) -> None:
  path = tmp_path / "tokenizer.json"
  path.write_text(json.dumps({"version": "1.0", "model": {
      "type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"},
      "normalizer": {"type": "Replace", "pattern": {"String": "x" * (5 << 20)},
                     "content": ""}}))
  with pytest.raises(ValueError, match=r"tokenizer.json: not a valid hf_tokenizer file "
                     r"\(its normalizer takes \d+ bytes, more than the 1048576 read\)"):
    vocab_lib.from_spec({"type": "hf_tokenizer", "path": str(path)})


# ---------------------------------------------------------------------------- configs


@pytest.mark.parametrize("binding, message", [
    ("ModelConfig.norm_eps = -1e-5",
     "ModelConfig.norm_eps (the norm epsilon): must be a finite number > 0, got -1e-05"),
    ("ModelConfig.rotary_base = -5.0",
     "ModelConfig.rotary_base (rotary theta): must be a finite number > 0, got -5.0"),
    ("ModelConfig.relpos_buckets = 0", "ModelConfig: relpos_buckets must be >= 4 and "
     "relpos_max_distance more than half of it, got 0 and 128"),
    ("ModelConfig.num_layers = 1000000",
     "ModelConfig.num_layers: 1000000 is more than 1024, the most this program builds"),
    ("ModelConfig.vocab_size = 10**12", "ModelConfig.vocab_size: 1000000000000 is more "
     "than 4194304, the most this program builds"),
])
def test_model_config_values_that_would_give_nan_or_blow_up(binding, message,
                                                            tmp_path) -> None:
  gin = tmp_path / "model.gin"
  gin.write_text(TINY_GIN + binding.replace("10**12", str(10**12)) + "\n")
  with pytest.raises(ValueError) as e:
    load_config(gin)
  assert str(e.value) == f"{gin}: {message}"


def test_model_gin_that_includes_itself(tmp_path, run_cli: RunCli) -> None:
  gin = tmp_path / "model.gin"
  gin.write_text(f"include '{gin}'\n")
  manifest = write_manifest(tmp_path / "manifest.json", gin=str(gin))
  assert_one_line(_score(run_cli, tmp_path, manifest, "--dry_run"),
                  f"{gin}: includes nest more than 32 deep (an include cycle?)")


NEOX = {"model_type": "gpt_neox", "vocab_size": 512, "hidden_size": 64,
        "num_attention_heads": 4, "intermediate_size": 256, "num_hidden_layers": 2,
        "hidden_act": "gelu", "layer_norm_eps": 1e-5, "rotary_pct": 0.25}


@pytest.mark.parametrize("config, message", [
    ([1], "must hold a JSON object, got list"),
    ({**NEOX, "num_attention_heads": 3}, "num_attention_heads 3 does not divide hidden_size 64"),
    ({**NEOX, "num_attention_heads": 0},
     "num_attention_heads: must be a positive integer, got 0"),
    ({**NEOX, "vocab_size": 10**12}, "ModelConfig.vocab_size: 1000000000000 is more than "
     "4194304, the most this program builds"),
    ({**NEOX, "layer_norm_eps": -1},
     "ModelConfig.norm_eps (the norm epsilon): must be a finite number > 0, got -1"),
    ({**NEOX, "rotary_emb_base": -5},
     "ModelConfig.rotary_base (rotary theta): must be a finite number > 0, got -5"),
    ({k: v for k, v in NEOX.items() if k != "hidden_size"}, "hidden_size: missing"),
    ({**NEOX, "num_hidden_layers": 10**6},
     "ModelConfig.num_layers: 1000000 is more than 1024, the most this program builds"),
    ("{\"model_type\":", "1: invalid JSON: Expecting value"),
])
def test_hostile_hf_config_json(config, message, tmp_path, run_cli: RunCli) -> None:
  src = tmp_path / "hf"
  src.mkdir()
  (src / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
  out = tmp_path / "converted"
  result = run_cli("convert", "hf-gpt-neox", "--src", src, "--out", out)
  sep = "" if message[0].isdigit() else " "
  assert_one_line(result, f"{src / 'config.json'}:{sep}{message}")
  assert not out.exists()


# ---------------------------------------------------------------------------- run gin and flags


@pytest.mark.parametrize("args, message", [
    (("--gin_bindings", "ScoringOptions.pack"), "--gin_bindings 'ScoringOptions.pack':1: not "
     "valid gin: Couldn't parse statement, expected ':' or '='."),
    (("--gin_bindings", "ScoringOptions.nope = 1"), "--gin_bindings 'ScoringOptions.nope = "
     "1': Configurable 'ScoringOptions' doesn't have a parameter named 'nope'."),
    (("--gin_file", "{data}/redefine_classification.jsonl"), "--gin_file "
     "{data}/redefine_classification.jsonl:1: not valid gin: Unexpected token."),
    (("--gin_file", "{self_gin}"), "--gin_file {self_gin}: includes itself"),
    (("--gin_file", "{data}"), "--gin_file {data}: not a file"),
    (("--gin_bindings", "ScoringOptions.pack = %rm_rf"),
     "gin bindings of ScoringOptions: %rm_rf is not bound to a value"),
    (("--model", ","), "--model: empty name in ','; give comma-separated names"),
    (("--tasks", "redefine,"), "--tasks: empty name in 'redefine,'; give comma-separated names"),
])
def test_run_gin_and_list_flags(args, message, tmp_path, run_cli: RunCli) -> None:
  paths = {"data": tmp_path / "data", "self_gin": tmp_path / "self.gin"}
  paths["self_gin"].write_text(f"include '{paths['self_gin']}'\n")
  manifest = write_manifest(tmp_path / "manifest.json")
  args = [a.format(**paths) for a in args]
  assert_one_line(_score(run_cli, tmp_path, manifest, "--dry_run", *args),
                  message.format(**paths))


def test_generation_length_must_leave_room_for_the_prompt(tmp_path, run_cli: RunCli) -> None:
  manifest = write_manifest(tmp_path / "manifest.json")
  result = _score(run_cli, tmp_path, manifest, "--generation_length", "1000000000",
                  "--dry_run", command="generate")
  assert_one_line(result, "--generation_length (ScoringOptions.generation_length): "
                  "1000000000 leaves no room for the prompt in model m's max_length 2048")


@pytest.mark.parametrize("flag, value, message", [
    ("--limit", "\u0661", "must be an integer, got '\u0661'"),
    ("--max_length", "1_000", "must be an integer, got '1_000'"),
    ("--out", "", "must be a path, got an empty string"),
])
def test_score_flag_values(flag, value, message, tmp_path, run_cli: RunCli, capsys) -> None:
  args = ["score", "--family", "f.json", "--out", "o", flag, value]
  with pytest.raises(SystemExit) as exit_info:
    run_cli(*args)
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.splitlines()[-1] == (
      f"invscale score: error: argument {flag}: {message}")


def test_max_length_bounded(tmp_path, run_cli: RunCli) -> None:
  manifest = write_manifest(tmp_path / "manifest.json")
  assert_one_line(_score(run_cli, tmp_path, manifest, "--max_length", "100000000", "--dry_run"),
                  "--max_length (ScoringOptions.max_length): must be an integer from 2 to "
                  "1048576, got 100000000")


# ---------------------------------------------------------------------------- weight files


def _safetensors(header: dict | None = None, raw_header: bytes | None = None,
                 body: bytes = b"\0" * 16) -> bytes:
  text = raw_header if raw_header is not None else json.dumps(header).encode()
  return struct.pack("<Q", len(text)) + text + body


F32 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
WEIGHT_FILES = {
    "lying_shape": ("model.safetensors", _safetensors({"w": {**F32, "shape": [10**5, 10**5]}})),
    "offsets_past_the_end": ("model.safetensors",
                             _safetensors({"w": {**F32, "data_offsets": [0, 10**12]}})),
    "2^60_header": ("model.safetensors", struct.pack("<Q", 2**60) + b"{}"),
    "unknown_dtype": ("model.safetensors", _safetensors({"w": {**F32, "dtype": "Q99"}})),
    "header_not_json": ("model.safetensors", _safetensors(raw_header=b"not json!!")),
    "not_a_pickle": ("pytorch_model.bin", b"garbage, neither a zip nor a pickle"),
    "old_pickle": ("pytorch_model.bin", b"\x80\x02}q\x00."),  # an empty dict, protocol 2
}


@pytest.mark.parametrize("kind", WEIGHT_FILES)
def test_malformed_weight_files_in_convert(kind, tmp_path, run_cli: RunCli) -> None:
  src = tmp_path / "hf"
  src.mkdir()
  (src / "config.json").write_text(json.dumps(NEOX))
  name, data = WEIGHT_FILES[kind]
  (src / name).write_bytes(data)
  out = tmp_path / "converted"
  result = run_cli("convert", "hf-gpt-neox", "--src", src, "--out", out)
  assert result.code == 2 and result.err.startswith(
      f"invscale: error: {src / name}: not a readable weight file (")
  assert result.err.count("\n") == 1
  assert not out.exists()  # nothing half-written


def test_malformed_weight_file_in_score(tmp_path, run_cli: RunCli) -> None:
  src = tmp_path / "hf"
  src.mkdir()
  (src / "config.json").write_text(json.dumps(NEOX))
  name, data = WEIGHT_FILES["offsets_past_the_end"]
  (src / name).write_bytes(data)
  manifest = tmp_path / "manifest.json"
  manifest.write_text(json.dumps({"family": "f", "models": [
      {"name": "m", "hf_dir": str(src), "architecture": "gpt_neox", "vocabulary": {"type": "byte"},
       "n_params": 10}]}))
  result = _score(run_cli, tmp_path, manifest)
  assert result.code == 2 and f"{src / name}: not a readable weight file (" in result.err
  assert result.err.count("\n") == 1


def test_init_tiny_honours_the_umask(tiny_family: pathlib.Path) -> None:
  """The family directory gets 0777 less the umask, as mkdir gives (mkdtemp's was 0700)."""
  umask = os.umask(0)
  os.umask(umask)
  assert tiny_family.parent.stat().st_mode & 0o777 == 0o777 & ~umask
