"""Shared test fixtures: where the data lives, a combined data dir, and running the CLI."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import types
from typing import Callable, Iterator

import pytest

# ---------------------------------------------------------------------------- environment


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
  """invscale's cache (content hashes, copies of remote files) in a temporary directory,
  for this process and the commands it starts."""
  path = tmp_path_factory.mktemp("invscale_cache")
  old = os.environ.get("INVSCALE_CACHE_DIR")
  os.environ["INVSCALE_CACHE_DIR"] = str(path)
  yield path
  if old is None:
    del os.environ["INVSCALE_CACHE_DIR"]
  else:
    os.environ["INVSCALE_CACHE_DIR"] = old


# ---------------------------------------------------------------------------- Cloud Storage


@pytest.fixture(scope="session")
def gcs() -> Iterator[object]:
  """A Cloud Storage server on 127.0.0.1 for the session (`gcs_emulator.Emulator`): this
  process and the commands it starts reach gs:// URLs there."""
  import gcs_emulator  # pylint: disable=g-import-not-at-top

  emulator = gcs_emulator.Emulator()
  saved = {k: os.environ.get(k) for k in emulator.env()}
  os.environ.update(emulator.env())
  try:
    yield emulator
  finally:
    emulator.stop()
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


@pytest.fixture
def bucket(gcs) -> str:
  """A new, empty bucket; its gs:// URL."""
  import uuid  # pylint: disable=g-import-not-at-top

  return gcs.create_bucket(f"test-{uuid.uuid4().hex[:16]}")


def upload(local: os.PathLike | str, url: str) -> str:
  """Copies every file under the local directory to the same paths under `url`."""
  from invscale_jax import storage  # pylint: disable=g-import-not-at-top

  for name in storage.list_files(local):
    storage.write_bytes(storage.join(url, name), storage.read_bytes(os.path.join(local, name)))
  return url


@pytest.fixture(scope="session")
def family_in_bucket(gcs, tiny_family: pathlib.Path, small_data_dir: pathlib.Path,
                     tmp_path_factory: pytest.TempPathFactory):
  """The tiny family (legacy checkpoints), an Orbax copy of tiny-1 with its own manifest,
  and the small data dir, uploaded to a bucket: gs://BUCKET/fam/..., .../orbax/...,
  .../data. A namespace of their URLs (and `local`, the family's directory)."""
  import json  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  import uuid  # pylint: disable=g-import-not-at-top

  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  from invscale_jax.checkpoints import read_checkpoint  # pylint: disable=g-import-not-at-top

  url = gcs.create_bucket(f"family-{uuid.uuid4().hex[:8]}")
  upload(tiny_family.parent, f"{url}/fam")
  local = tmp_path_factory.mktemp("orbax")
  params = read_checkpoint(tiny_family.parent / "tiny-1" / "checkpoint_0")
  ocp.PyTreeCheckpointer().save(local / "tiny-1" / "checkpoint_0" / "state",
                                {"target": params, "state": {"step": np.int32(0)}})
  manifest = json.loads(tiny_family.read_text())
  manifest["models"] = [dict(manifest["models"][0], checkpoint="tiny-1")]
  (local / "manifest.json").write_text(json.dumps(manifest))
  upload(local, f"{url}/orbax")
  upload(small_data_dir, f"{url}/data")
  return types.SimpleNamespace(url=url, manifest=f"{url}/fam/manifest.json",
                               orbax_manifest=f"{url}/orbax/manifest.json", data=f"{url}/data",
                               local=tiny_family.parent)


def bucket_results(out: str) -> dict[RecordKey, object]:
  """`read_results` of a gs:// results directory."""
  from invscale_jax import results  # pylint: disable=g-import-not-at-top

  return read_results(out, dirs=results.run_dirs(out))


def without_run_keys(recs: dict[RecordKey, object]) -> dict[RecordKey, object]:
  """Records with the run key blanked: a checkpoint's identity (part of the key) is its
  files' sha256 on disk and their generations on GCS, so the keys differ; nothing else may."""
  return {k: dataclasses.replace(r, run_key="") for k, r in recs.items()}


# ---------------------------------------------------------------------------- task data

REPO = pathlib.Path(__file__).resolve().parents[1]
# The 3 real release files live beside the checkout; they are never copied into the repo.
SHARED_DATA = REPO.parent / "shared" / "data" / "inverse_scaling"
FIXTURE_DATA = REPO / "tests" / "fixtures" / "inverse_scaling"
MALFORMED = REPO / "tests" / "fixtures" / "malformed"
# Real files expected in SHARED_DATA, with their row counts (from the data README).
REAL_ROWS = {"memo-trap": 936, "hindsight-neglect": 315, "neqa": 300}


def load_script(name: str) -> types.ModuleType:
  """benchmarks/<name>.py imported as module `name` (the scripts are not a package)."""
  import importlib.util  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The directory holding the 3 real release files (skips the test when absent)."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real task data not found at {SHARED_DATA} (expected beside the checkout)")
  return SHARED_DATA


def task_file(filename: str) -> pathlib.Path:
  """A task's file: the real one in SHARED_DATA when there, else the hand-written fixture
  (skips the test when there is neither)."""
  for path in (SHARED_DATA / filename, FIXTURE_DATA / filename):
    if path.is_file():
      return path
  pytest.skip(f"{filename}: not in {SHARED_DATA} and no fixture for it")


@pytest.fixture(scope="session")
def combined_data_dir(tmp_path_factory: pytest.TempPathFactory,
                      shared_data: pathlib.Path) -> pathlib.Path:
  """A data dir with all 11 task files: symlinks to the 3 real files and the 8 fixtures."""
  from invscale_jax import catalog  # pylint: disable=g-import-not-at-top

  del shared_data  # only to skip when the real files are absent
  root = tmp_path_factory.mktemp("combined_data")
  for spec in catalog.TASKS:
    source = task_file(spec.filename)
    assert source.is_file(), f"no real file nor fixture for {spec.name}"
    (root / spec.filename).symlink_to(source)
  return root


def count_nonblank_lines(path: os.PathLike | str) -> int:
  """Rows of a JSONL file, counted without the loader."""
  with open(path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())


# ---------------------------------------------------------------------------- malformed files

# file -> every problem it must report, as (LINE, FIELD, fragment of the reason), in order.
MALFORMED_EXPECTED: dict[str, list[tuple[int, str, str]]] = {
    "invalid_json.jsonl": [(2, "line", "invalid JSON: Expecting ',' delimiter")],
    "not_an_object.jsonl": [(2, "line", "must be a JSON object, got list")],
    "missing_prompt.jsonl": [(2, "prompt", "missing")],
    "empty_prompt.jsonl": [(1, "prompt", "must be a non-empty string")],
    "missing_classes.jsonl": [(3, "classes", "missing")],
    "classes_not_list_literal.jsonl": [
        (1, "classes", "not a Python or JSON list literal: 'Yes or No'")],
    "classes_not_a_list.jsonl": [(2, "classes", "must hold a list, got str")],
    "classes_unhashable_set.jsonl": [(1, "classes", "not a Python or JSON list literal")],
    "classes_non_string.jsonl": [(2, "classes", "every class must be a non-empty string")],
    "single_class.jsonl": [(1, "classes", "needs at least 2 distinct classes, got [' Yes']")],
    "duplicate_classes.jsonl": [
        (2, "classes", "needs at least 2 distinct classes, got [' Yes', ' Yes']")],
    "answer_index_missing.jsonl": [(1, "answer_index", "missing")],
    "answer_index_out_of_range.jsonl": [(2, "answer_index", "3 out of range for 3 classes"),
                                        (3, "answer_index", "-1 out of range for 2 classes")],
    "answer_index_not_integer.jsonl": [(1, "answer_index", "must be an integer, got 0.5"),
                                       (3, "answer_index", "must be an integer, got 'first'")],
    "round_not_integer.jsonl": [(2, "round", "must be an integer, got 'two'")],
    "prompt-injection_missing_completion.jsonl": [(2, "completion", "missing")],
    "empty.jsonl": [(1, "file", "no rows")],
    "blank_lines_only.jsonl": [(1, "file", "no rows")],
    "not_utf8.jsonl": [(3, "file", "not UTF-8 text (invalid continuation byte at byte 215)")],
    "csv_wrong_column_count.csv": [(4, "line", "expected 4 columns, got 5")],
    "csv_classes_unparseable.csv": [(4, "classes", "not a Python or JSON list literal: 'Yes|No'")],
    "csv_header_only.csv": [(1, "file", "no rows")],
    "several_problems.jsonl": [
        (2, "prompt", "missing"),
        (2, "answer_index", "5 out of range for 2 classes"),
        (3, "line", "invalid JSON: Unterminated string"),
        (5, "classes", "needs at least 2 distinct classes"),
        (7, "prompt", "must be a non-empty string"),
        (7, "answer_index", "must be an integer, got 'x'"),
        (8, "line", "must be a JSON object, got int"),
    ],
}
# How many rows of each malformed file are valid (and so still parsed into examples).
MALFORMED_VALID_ROWS = {
    "invalid_json.jsonl": 2, "not_an_object.jsonl": 1, "missing_prompt.jsonl": 1,
    "empty_prompt.jsonl": 1, "missing_classes.jsonl": 2, "classes_not_list_literal.jsonl": 0,
    "classes_not_a_list.jsonl": 1, "classes_unhashable_set.jsonl": 0,
    "classes_non_string.jsonl": 1, "single_class.jsonl": 1, "duplicate_classes.jsonl": 1,
    "answer_index_missing.jsonl": 0, "answer_index_out_of_range.jsonl": 1,
    "answer_index_not_integer.jsonl": 1, "round_not_integer.jsonl": 1,
    "prompt-injection_missing_completion.jsonl": 2, "empty.jsonl": 0,
    "blank_lines_only.jsonl": 0, "not_utf8.jsonl": 0, "csv_wrong_column_count.csv": 2,
    "csv_classes_unparseable.csv": 1, "csv_header_only.csv": 0, "several_problems.jsonl": 2,
}


def assert_problem_lines(lines: list[str], path: pathlib.Path,
                         expected: list[tuple[int, str, str]]) -> None:
  """`lines` are exactly the one-line problems `FILE:LINE: FIELD: reason` expected, in order."""
  assert len(lines) == len(expected), "\n".join(lines)
  for line, (lineno, field, fragment) in zip(lines, expected):
    prefix = f"{path}:{lineno}: {field}: "
    assert line.startswith(prefix), f"{line!r} does not start with {prefix!r}"
    assert fragment in line[len(prefix):], f"{fragment!r} not in {line!r}"
    assert "\n" not in line


@pytest.fixture
def clean_gin() -> Iterator[None]:
  """No gin bindings before or after the test."""
  import gin  # pylint: disable=g-import-not-at-top

  gin.clear_config()
  yield
  gin.clear_config()


# ---------------------------------------------------------------------------- the CLI


@dataclasses.dataclass(frozen=True)
class CliResult:
  code: int
  out: str
  err: str


RunCli = Callable[..., CliResult]  # the type of the `run_cli` fixture


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
  """Runs `invscale ARGS...` in-process; returns exit code, stdout and stderr."""
  from invscale_jax import cli  # pylint: disable=g-import-not-at-top

  def run(*argv: str | os.PathLike) -> CliResult:
    capsys.readouterr()  # drop anything printed before
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)

  return run


# ---------------------------------------------------------------------------- models


@pytest.fixture(scope="session")
def text_examples() -> list[tuple[str, list[str]]]:
  """Six (prompt, classes) pairs: real memo-trap rows when the data is there, else rows of
  a hand-written fixture in the same format."""
  import ast  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top

  path = SHARED_DATA / "memo-trap_classification.jsonl"
  if not path.is_file():
    path = FIXTURE_DATA / "modus-tollens_classification.jsonl"
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()][:6]
  return [(row["prompt"], list(ast.literal_eval(row["classes"]))) for row in rows]


@pytest.fixture(scope="session")
def small_model_config() -> Callable[..., object]:
  """Builds a small float32 `ModelConfig` of an architecture, for exactness tests."""
  from invscale_jax.models.config import ModelConfig  # pylint: disable=g-import-not-at-top

  def make(architecture: str, **overrides) -> ModelConfig:
    fields = dict(architecture=architecture, vocab_size=384, emb_dim=64, num_heads=4,
                  head_dim=16, mlp_dim=128, dtype="float32")
    if architecture == "encoder_decoder":
      fields.update(num_encoder_layers=2, num_decoder_layers=2)
    else:
      fields.update(num_layers=2)
    # The less common variant of each family, where it has one: OPT-350m's projected
    # embeddings and norms after the residuals; Llama with grouped-query attention, Qwen2's
    # q/k/v biases, Llama 3's rotary scaling and Mistral's sliding window.
    fields.update({
        "gpt_neox": dict(mlp_activations=("gelu_exact",), norm_eps=1e-5),
        "opt": dict(mlp_activations=("relu",), norm_eps=1e-5, max_positions=1024,
                    embed_proj_dim=32, post_norm=True),
        "llama": dict(mlp_activations=("silu", "linear"), num_kv_heads=2, qkv_bias=True,
                      rotary_base=500.0, sliding_window=24, rotary_scaling=(
                          ("rope_type", "llama3"), ("factor", 4.0), ("low_freq_factor", 1.0),
                          ("high_freq_factor", 4.0), ("original_max_position_embeddings", 64))),
        "gpt2": dict(mlp_activations=("gelu",), norm_eps=1e-5, max_positions=1024,
                     logits_via_embedding=True),
    }.get(architecture, {}))
    return ModelConfig(**{**fields, **overrides})

  return make


@pytest.fixture(scope="session")
def pack_rows() -> Callable[..., tuple[dict, list]]:
  """Builds a `Model.score` batch from rows of (prompt, classes) token-id examples.

  `pack(rows, encoder_decoder, branched=True)` -> (batch, slots). Several examples in a
  row are packed as segments 1, 2, ...; decoder-only rows hold the prompt once (branch 0)
  then each class minus its last token (branch k, positions continuing the prompt's);
  encoder-decoder rows put the prompts in the encoder and `[0] + class[:-1]` per branch
  (positions from 0). With branched=False every token is in branch 0 (only meaningful
  with one class per example: a plain causal row). `slots` holds (row, first target,
  n targets) per class, in example and class order.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  def pack(rows, encoder_decoder: bool, branched: bool = True):
    built, slots = [], []
    for r, examples in enumerate(rows):
      row = {k: [] for k in ("tokens", "positions", "segment_ids", "branch_ids",
                             "encoder_tokens", "encoder_segment_ids", "target_index",
                             "target_ids")}

      def add(tokens, start, segment, branch):
        row["tokens"] += tokens
        row["positions"] += list(range(start, start + len(tokens)))
        row["segment_ids"] += [segment] * len(tokens)
        row["branch_ids"] += [branch] * len(tokens)

      for segment, (prompt, classes) in enumerate(examples, 1):
        if encoder_decoder:
          row["encoder_tokens"] += prompt
          row["encoder_segment_ids"] += [segment] * len(prompt)
        else:
          add(prompt, 0, segment, 0)
        last_prompt = len(row["tokens"]) - 1
        for k, target in enumerate(classes, 1):
          inputs = [0] + target[:-1] if encoder_decoder else target[:-1]
          first = len(row["tokens"])
          add(inputs, 0 if encoder_decoder else len(prompt), segment, k if branched else 0)
          index = list(range(first, first + len(inputs)))
          slots.append((r, len(row["target_ids"]), len(target)))
          row["target_index"] += index if encoder_decoder else [last_prompt] + index
          row["target_ids"] += target
      built.append(row)

    def padded(key, mask=False):
      width = max(1, max(len(row[key]) for row in built))
      out = np.zeros((len(built), width), np.int32)
      for i, row in enumerate(built):
        out[i, :len(row[key])] = 1 if mask else row[key]
      return out

    batch = {k: padded(k) for k in built[0]}
    batch["target_mask"] = padded("target_ids", mask=True)
    if not encoder_decoder:
      del batch["encoder_tokens"], batch["encoder_segment_ids"]
    return batch, slots

  return pack


@pytest.fixture(scope="session")
def small_model(small_model_config) -> Callable[[str], tuple[object, dict]]:
  """(model, random params) of `small_model_config(architecture)`, made once per session.

  Params are drawn with numpy from the model's shapes (`Model.init` takes seconds to
  compile on CPU): matrices N(0, 1/fan_in), vectors 1 + N(0, 0.1^2).
  """
  import functools  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from invscale_jax.models.model import build  # pylint: disable=g-import-not-at-top

  @functools.cache
  def make(architecture: str):
    model = build(small_model_config(architecture))
    rng = np.random.default_rng(0)

    def draw(shape: jax.ShapeDtypeStruct) -> np.ndarray:
      if len(shape.shape) == 1:
        return (1 + 0.1 * rng.standard_normal(shape.shape)).astype(np.float32)
      return (rng.standard_normal(shape.shape) / np.sqrt(shape.shape[0])).astype(np.float32)

    return model, jax.tree.map(draw, model.param_shapes())

  return make



# ---------------------------------------------------------------------------- scoring runs

# Rows taken from the head of each real file for the engine's end-to-end tests.
SMALL_ROWS = {"memo-trap": 24, "neqa": 16, "hindsight-neglect": 20}
TINY_MODELS = ("tiny-1", "tiny-2")
# The reference run's options: 2 models x 2 tasks x 2 variants = 8 runs in 20 chunks.
CHUNK_SIZE = 8
SCORE_ARGS = ("--tasks", "memo-trap,neqa", "--variants", "zero_shot,1_shot",
              "--chunk_size", str(CHUNK_SIZE), "--tokens_per_batch", "1024")
N_RUNS, N_CHUNKS = 8, 20
RecordKey = tuple[str, str, str, int, str, int | None]  # model, task, variant, example, kind, class


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory: pytest.TempPathFactory,
                   shared_data: pathlib.Path) -> pathlib.Path:
  """A data dir holding, under the official file names, the first SMALL_ROWS rows of the
  real memo-trap, neqa and hindsight-neglect files (written at test time)."""
  from invscale_jax import catalog  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("small_data")
  for task, n in SMALL_ROWS.items():
    filename = catalog.get(task).filename
    with open(shared_data / filename, encoding="utf-8") as f:
      lines = [line for line in f if line.strip()][:n]
    (root / filename).write_text("".join(lines), encoding="utf-8")
  return root


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  """The manifest of a real tiny family (T5X checkpoints) holding its 2 smallest models."""
  from invscale_jax.models import tiny  # pylint: disable=g-import-not-at-top

  return tiny.init_tiny(tmp_path_factory.mktemp("families") / "tiny", seed=0, sizes=TINY_MODELS)


class Job:
  """A started subprocess; its stdout and stderr go to one log file."""

  def __init__(self, argv: list[str], env: dict[str, str], log: pathlib.Path):
    import subprocess  # pylint: disable=g-import-not-at-top

    self.log = log
    with open(log, "w", encoding="utf-8") as f:
      self.proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT)

  def output(self) -> str:
    return self.log.read_text(encoding="utf-8", errors="replace")

  def finish(self, timeout: float = 300) -> CliResult:
    """Waits for the exit; past `timeout` seconds kills it and returns code 124 (a hang
    fails the test instead of blocking it). `out` and `err` both hold the whole log."""
    import subprocess  # pylint: disable=g-import-not-at-top

    try:
      code = self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
      code = 124
    text = self.output() + (f"\n[killed: no exit after {timeout} s]" if code == 124 else "")
    return CliResult(code, text, text)


@dataclasses.dataclass(frozen=True)
class ScoreCli:
  """Runs `invscale score` on the tiny family and the small data dir in subprocesses on
  `devices` forced CPU devices (sharing a persistent compilation cache, for speed)."""

  family: pathlib.Path
  data_dir: pathlib.Path
  cache_dir: pathlib.Path
  log_dir: pathlib.Path

  def argv(self, out: os.PathLike | str, *args: str | os.PathLike) -> list[str]:
    """The arguments of `invscale`."""
    return ["score", "--family", str(self.family), "--data_dir", str(self.data_dir),
            "--out", str(out), *map(str, args)]

  def command(self, out: os.PathLike | str, *args: str | os.PathLike) -> list[str]:
    import sys  # pylint: disable=g-import-not-at-top

    return [sys.executable, "-m", "invscale_jax.cli", *self.argv(out, *args)]

  def env(self, devices: int = 1, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("INVSCALE_") or k == "INVSCALE_CACHE_DIR"}
    env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_COMPILATION_CACHE_DIR=str(self.cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **extra)
    return env

  def start(self, out: os.PathLike | str, *args: str | os.PathLike, devices: int = 1,
            **env: str) -> Job:
    import tempfile  # pylint: disable=g-import-not-at-top

    fd, log = tempfile.mkstemp(suffix=".log", dir=self.log_dir)
    os.close(fd)
    return Job(self.command(out, *args), self.env(devices, **env), pathlib.Path(log))

  def run(self, out: os.PathLike | str, *args: str | os.PathLike, devices: int = 1,
          timeout: float = 300, **env: str) -> CliResult:
    return self.start(out, *args, devices=devices, **env).finish(timeout)


@pytest.fixture(scope="session")
def score_cli(tmp_path_factory: pytest.TempPathFactory, tiny_family: pathlib.Path,
              small_data_dir: pathlib.Path) -> ScoreCli:
  return ScoreCli(tiny_family, small_data_dir, tmp_path_factory.mktemp("xla_cache"),
                  tmp_path_factory.mktemp("score_logs"))


@pytest.fixture(scope="session")
def reference_results(tmp_path_factory: pytest.TempPathFactory,
                      score_cli: ScoreCli) -> pathlib.Path:
  """The results dir of one uninterrupted single-device run with SCORE_ARGS (read only:
  tests copy it before changing anything)."""
  out = tmp_path_factory.mktemp("reference") / "results"
  result = score_cli.run(out, *SCORE_ARGS)
  assert result.code == 0, result.err
  assert_finished(out, N_RUNS)
  return out


def read_results(out: os.PathLike | str,
                 dirs: list[pathlib.Path] | None = None) -> dict[RecordKey, object]:
  """Every record under OUT/runs (or in `dirs`) by identity. Fails on a duplicate, and on
  a run whose records are not exactly its examples and rows (run.json's n_examples, n_rows)."""
  from invscale_jax import results  # pylint: disable=g-import-not-at-top

  result = {}
  for run_dir in run_dirs(out) if dirs is None else dirs:
    info = results.read_run_info(run_dir)
    recs = results.read_records(run_dir)
    assert {r.run_key for r in recs} <= {info["run_key"]}, run_dir
    assert sorted({r.example_id for r in recs}) == list(range(info["n_examples"])), run_dir
    assert len(recs) == info["n_rows"], run_dir
    for r in recs:
      key = record_key(r)
      assert key not in result, f"{run_dir}: duplicate record {key}"
      result[key] = r
  return result


def record_key(r) -> RecordKey:
  """What identifies a record across runs of the same (model, task, variant)."""
  return (r.model, r.task, r.variant, r.example_id, r.kind, r.class_index)


def run_dirs(out: os.PathLike | str) -> list[pathlib.Path]:
  """The run directories under OUT/runs."""
  from invscale_jax import results  # pylint: disable=g-import-not-at-top

  return [pathlib.Path(d) for d in results.run_dirs(out)]


def temporary_files(out: os.PathLike | str) -> list[pathlib.Path]:
  """Files a finished run must not leave behind: temporary files of interrupted writes
  (`.NAME.XXXX.tmp`, tensorstore's `.__lock`) and leases."""
  root = pathlib.Path(out)
  return sorted([*root.rglob(".*.tmp"), *root.rglob("*.__lock"), *root.rglob("LEASE")])


def assert_finished(out: os.PathLike | str, n_runs: int) -> None:
  """`n_runs` run dirs, each verified complete, and no temporary file or lease anywhere."""
  from invscale_jax import results  # pylint: disable=g-import-not-at-top

  dirs = run_dirs(out)
  assert len(dirs) == n_runs, dirs
  assert [d.name for d in dirs if not results.is_complete(d)] == []
  assert temporary_files(out) == []


def assert_same_records(got: dict[RecordKey, object], expected: dict[RecordKey, object],
                        atol: float) -> None:
  """The same records: every field equal, but `logprob` only within `atol`."""
  missing, extra = expected.keys() - got.keys(), got.keys() - expected.keys()
  assert not missing and not extra, (f"missing {sorted(missing)[:5]} ({len(missing)}), "
                                     f"extra {sorted(extra)[:5]} ({len(extra)})")
  worst = 0.0
  for key, want in expected.items():
    have = got[key]
    if want.logprob is None or have.logprob is None:
      assert have == want, key
      continue
    worst = max(worst, abs(have.logprob - want.logprob))
    assert dataclasses.replace(have, logprob=0.0) == dataclasses.replace(want, logprob=0.0), key
  assert worst <= atol, f"logprobs differ by up to {worst:.3g} (> {atol})"


def find_run(out: os.PathLike | str, model: str, task: str, variant: str) -> pathlib.Path:
  """The run dir of (model, task, variant) under OUT."""
  from invscale_jax import results  # pylint: disable=g-import-not-at-top

  found = []
  for d in run_dirs(out):
    info = results.read_run_info(d)
    if (info["model"]["name"], info["task"], info["variant"]) == (model, task, variant):
      found.append(d)
  assert len(found) == 1, f"{out}: {len(found)} runs of {(model, task, variant)}"
  return found[0]


def select(results: dict[RecordKey, object], models: tuple[str, ...] = TINY_MODELS,
           tasks: tuple[str, ...] = ("memo-trap", "neqa"),
           variants: tuple[str, ...] = ("zero_shot", "1_shot")) -> dict[RecordKey, object]:
  """The records of some models, tasks and variants."""
  return {k: r for k, r in results.items()
          if r.model in models and r.task in tasks and r.variant in variants}


def file_states(root: os.PathLike | str) -> dict[str, tuple[int, int, int]]:
  """(inode, mtime_ns, size) of every file under `root`: equal states = files untouched."""
  return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
          for p in sorted(pathlib.Path(root).rglob("*")) if p.is_file()}


def chunk_states(out: os.PathLike | str) -> dict[str, tuple[int, int, int]]:
  """`file_states` of the chunk files under OUT (not the lock file of a chunk whose write
  was cut: opening the run removes it)."""
  return {p: v for p, v in file_states(out).items()
          if "/chunk-" in p and p.endswith(".jsonl")}


# ---------------------------------------------------------------------------- T5X

# What T5X writes into a model dir after training a decoder-only model (gin.config_str()):
# a tiny byte-level network in the form of t5x/examples/decoder_only.
T5X_CONFIG_GIN = """\
from __gin__ import dynamic_registration
import __main__ as train_script
import seqio
from t5x import adafactor
from t5x.examples.decoder_only import network
from t5x import models
from t5x import partitioning
from t5x import utils

# Macros:
# ==============================================================================
BATCH_SIZE = 8
DROPOUT_RATE = 0.0
MIXTURE_OR_TASK_NAME = 'wmt_t2t_ende_v003'
MODEL = @models.DecoderOnlyModel()
MODEL_DIR = '/tmp/model'
OPTIMIZER = @adafactor.Adafactor()
TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 64}
VOCABULARY = @seqio.ByteVocabulary()
Z_LOSS = 0.0001

# Parameters for adafactor.Adafactor:
# ==============================================================================
adafactor.Adafactor.decay_rate = 0.8
adafactor.Adafactor.logical_factor_rules = \\
    @adafactor.standard_logical_factor_rules()

# Parameters for models.DecoderOnlyModel:
# ==============================================================================
models.DecoderOnlyModel.inputs_bidirectional_attention = False
models.DecoderOnlyModel.module = @network.DecoderWrapper()
models.DecoderOnlyModel.optimizer_def = %OPTIMIZER
models.DecoderOnlyModel.vocabulary = %VOCABULARY
models.DecoderOnlyModel.z_loss = %Z_LOSS

# Parameters for network.DecoderWrapper:
# ==============================================================================
network.DecoderWrapper.config = @network.TransformerConfig()

# Parameters for train/utils.DatasetConfig:
# ==============================================================================
train/utils.DatasetConfig.batch_size = %BATCH_SIZE
train/utils.DatasetConfig.mixture_or_task_name = %MIXTURE_OR_TASK_NAME
train/utils.DatasetConfig.task_feature_lengths = %TASK_FEATURE_LENGTHS

# Parameters for utils.SaveCheckpointConfig:
# ==============================================================================
utils.SaveCheckpointConfig.dtype = 'float32'
utils.SaveCheckpointConfig.period = 1000

# Parameters for train_script.train:
# ==============================================================================
train_script.train.model = %MODEL
train_script.train.model_dir = %MODEL_DIR

# Parameters for network.TransformerConfig:
# ==============================================================================
network.TransformerConfig.dropout_rate = %DROPOUT_RATE
network.TransformerConfig.dtype = 'bfloat16'
network.TransformerConfig.emb_dim = 32
network.TransformerConfig.head_dim = 16
network.TransformerConfig.logits_via_embedding = True
network.TransformerConfig.mlp_activations = ('gelu', 'linear')
network.TransformerConfig.mlp_dim = 64
network.TransformerConfig.num_heads = 2
network.TransformerConfig.num_layers = 2
network.TransformerConfig.vocab_size = 384
"""
