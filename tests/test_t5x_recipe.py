"""The T5X recipe, emulated: T5X's infer.py / eval.py sequence in a fresh process.

T5X is not installed here. A few files written below stand in for the parts of it a run
touches (`t5x.utils.DatasetConfig` / `RestoreCheckpointConfig` / `import_module`, a model
class holding the vocabulary) and for its gin files (a model gin, runs/infer.gin). The
driver does what T5X's main does: registers `infer` (or `evaluate`) with gin, parses and
finalizes gin with the run's files and `--gin.X=Y` bindings, then calls it; `infer`
imports MIXTURE_OR_TASK_MODULE the way t5x/utils.py does (after gin is locked), checks the
task's vocabularies against the model's with `!=`, and builds the dataset trimmed to
TASK_FEATURE_LENGTHS. The gin file we ship (gin/t5x/score_invscale.gin) is used as is.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from invscale_jax import catalog, gin_macros

STUB_UTILS = '''
"""Stand-in for the parts of t5x.utils that an inference or eval run touches."""
import dataclasses
import importlib
from typing import Any


@dataclasses.dataclass
class DatasetConfig:
  mixture_or_task_name: str
  task_feature_lengths: Any
  split: str
  batch_size: int
  shuffle: bool
  seed: Any
  use_cached: bool = False
  pack: bool = False
  module: Any = None


@dataclasses.dataclass
class RestoreCheckpointConfig:
  path: Any
  mode: str = "latest"
  dtype: Any = None


def import_module(module):
  try:
    importlib.import_module(module)
  except RuntimeError as e:
    if str(e) == "Attempted to add a new configurable after the config was locked.":
      raise RuntimeError("Your Task/Mixture module contains gin configurables that must be "
                         "loaded before gin flag parsing.") from e
    raise
'''

STUB_MODELS = '''
"""Stand-in for t5x.models: a model holds its vocabulary."""


class DecoderOnlyModel:

  def __init__(self, vocabulary, z_loss=0.0):
    self.input_vocabulary = self.output_vocabulary = vocabulary


class EncoderDecoderModel(DecoderOnlyModel):
  pass
'''

# Modelled on t5x/configs/runs/infer.gin and eval.gin (only what the stand-ins take).
RUN_GIN = {"infer": '''
from __gin__ import dynamic_registration

import __main__ as infer_script
from t5x import utils

MIXTURE_OR_TASK_NAME = %gin.REQUIRED
TASK_FEATURE_LENGTHS = %gin.REQUIRED
CHECKPOINT_PATH = %gin.REQUIRED
INFER_OUTPUT_DIR = %gin.REQUIRED
MIXTURE_OR_TASK_MODULE = None

infer_script.infer:
  mode = 'predict'
  model = %MODEL
  output_dir = %INFER_OUTPUT_DIR
  dataset_cfg = @utils.DatasetConfig()
  restore_checkpoint_cfg = @utils.RestoreCheckpointConfig()

utils.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  module = %MIXTURE_OR_TASK_MODULE
  task_feature_lengths = %TASK_FEATURE_LENGTHS
  split = 'test'
  batch_size = 32
  shuffle = False
  seed = 0

utils.RestoreCheckpointConfig:
  path = %CHECKPOINT_PATH
  mode = 'specific'
  dtype = 'bfloat16'
''', "evaluate": '''
from __gin__ import dynamic_registration

import __main__ as eval_script
from t5x import utils

MIXTURE_OR_TASK_NAME = %gin.REQUIRED
CHECKPOINT_PATH = %gin.REQUIRED
TASK_FEATURE_LENGTHS = None
MIXTURE_OR_TASK_MODULE = None

eval_script.evaluate:
  model = %MODEL
  dataset_cfg = @utils.DatasetConfig()
  restore_checkpoint_cfg = @utils.RestoreCheckpointConfig()

utils.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  task_feature_lengths = %TASK_FEATURE_LENGTHS
  split = 'test'
  batch_size = 32
  shuffle = False
  seed = 42
  module = %MIXTURE_OR_TASK_MODULE

utils.RestoreCheckpointConfig:
  path = %CHECKPOINT_PATH
  mode = 'specific'
'''}

DRIVER = '''
"""T5X's main, reduced to its order of operations."""
import json
import sys

import gin
import numpy as np
import seqio
from t5x import utils
from t5x_outputs import infer_task, write_inferences_to_file  # T5X's, emulated


def _check_vocabularies(dataset_cfg, model):
  if dataset_cfg.module:  # T5X: DEPRECATED MIXTURE_OR_TASK_MODULE, imported after gin is locked
    utils.import_module(dataset_cfg.module)
  task = seqio.get_mixture_or_task(dataset_cfg.mixture_or_task_name)
  vocabularies = [task.output_features[k].vocabulary for k in ("inputs", "targets")]
  if vocabularies[0] != model.input_vocabulary or vocabularies[1] != model.output_vocabulary:
    raise ValueError("Model and Task vocabularies do not match")
  return task, vocabularies[0]


def _rows(task, lengths):
  dataset = task.get_dataset(sequence_length=lengths, split="test", shuffle=False)
  return [{k: row[k].tolist() for k in ("inputs", "targets")}
          for row in dataset.as_numpy_iterator()]


def unigram_row_scores(rows):
  return [float(np.log((row["targets"] % 7 + 1) / 28.0).sum()) for row in rows]


def infer(*, mode, model, dataset_cfg, restore_checkpoint_cfg, output_dir,
          write_fn=write_inferences_to_file):
  task, vocabulary = _check_vocabularies(dataset_cfg, model)
  lengths = dict(dataset_cfg.task_feature_lengths)
  if mode == "score":  # the output files, with a unigram model's scores
    infer_task(task, output_dir, lengths, unigram_row_scores, write_fn)
  return {"mode": mode, "restore_dtype": restore_checkpoint_cfg.dtype, "lengths": lengths,
          "vocabulary": str(vocabulary), "full": _rows(task, None),
          "trimmed": _rows(task, lengths)}


def unigram_scores(dataset):
  """A unigram model's log-likelihood of each row's targets: p(t) = (t % 7 + 1) / 28."""
  out = []
  for index, row in dataset.as_numpy_iterator():
    logp = np.log((row["decoder_target_tokens"] % 7 + 1) / 28.0)
    out.append((int(index), float((logp * row["decoder_loss_weights"]).sum())))
  return out


def evaluate(*, model, dataset_cfg, restore_checkpoint_cfg):
  task, _ = _check_vocabularies(dataset_cfg, model)
  evaluator = seqio.Evaluator(
      dataset_cfg.mixture_or_task_name, seqio.DecoderFeatureConverter(pack=False),
      eval_split=dataset_cfg.split, sequence_length=dataset_cfg.task_feature_lengths)
  metrics, _ = evaluator.evaluate(compute_metrics=True, predict_fn=None,
                                  score_fn=unigram_scores)
  [result] = metrics.result().values()
  return {"metrics": {k: float(v) for k, v in result.items()},
          "full": _rows(task, None), "restore_dtype": restore_checkpoint_cfg.dtype}


def main(argv):
  command, files, bindings, out = json.loads(argv[1])
  run = gin.configurable(globals()[command])
  gin.parse_config_files_and_bindings(files, bindings, finalize_config=True)
  config = gin.config_str()  # T5X logs it and writes it to the output dir's config.gin
  with open(out, "w") as f:
    json.dump({**run(), "config": config}, f)


if __name__ == "__main__":
  main(sys.argv)
'''

TASK_ROWS = {"memo-trap": 6, "hindsight-neglect": 4, "neqa": 8}


@pytest.fixture(scope="module")
def t5x_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  """The stand-ins for t5x, T5X's run gin files and the driver."""
  root = tmp_path_factory.mktemp("t5x_stub")
  (root / "t5x").mkdir()
  (root / "t5x" / "__init__.py").write_text("")
  (root / "t5x" / "utils.py").write_text(STUB_UTILS)
  (root / "t5x" / "models.py").write_text(STUB_MODELS)
  for name, text in RUN_GIN.items():
    (root / f"{name}.gin").write_text(text)
  (root / "driver.py").write_text(DRIVER)
  return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: pathlib.Path) -> pathlib.Path:
  """The first rows of 3 real task files (hindsight-neglect prompts reach ~3000 bytes)."""
  root = tmp_path_factory.mktemp("data")
  for task, n in TASK_ROWS.items():
    name = catalog.get(task).filename
    lines = (shared_data / name).read_text(encoding="utf-8").splitlines(keepends=True)
    (root / name).write_text("".join(lines[:n]), encoding="utf-8")
  return root


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory: pytest.TempPathFactory, data_dir: pathlib.Path) -> pathlib.Path:
  """A small SentencePiece model (T5's ids: pad 0, EOS 1, UNK 2) trained on the prompts."""
  sentencepiece = pytest.importorskip("sentencepiece")
  texts = [json.loads(line)["prompt"] for path in sorted(data_dir.iterdir())
           for line in path.read_text(encoding="utf-8").splitlines()]
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=400, pad_id=0, eos_id=1,
      unk_id=2, bos_id=-1, byte_fallback=True, character_coverage=1.0, minloglevel=2)
  path = tmp_path_factory.mktemp("spm") / "spm.model"
  path.write_bytes(model.getvalue())
  return path


def model_gin(root: pathlib.Path, vocabulary: str, model: str = "DecoderOnlyModel"
              ) -> pathlib.Path:
  """A model gin file naming the model's vocabulary, as T5X's model gin files do."""
  path = root / "model.gin"
  path.write_text(textwrap.dedent(f"""\
      from __gin__ import dynamic_registration
      import seqio
      from t5x import models

      VOCABULARY = {vocabulary}
      MODEL = @models.{model}()
      models.{model}.vocabulary = %VOCABULARY
      """))
  return path


def run_t5x(t5x_dir: pathlib.Path, tmp_path: pathlib.Path, command: str, files: list,
            bindings: list[str], env: dict[str, str] | None = None) -> dict:
  """The driver in a fresh process; its result, or the failure's last line."""
  out = tmp_path / "result.json"
  argv = json.dumps([command, [str(f) for f in files], bindings, str(out)])
  environ = {k: v for k, v in os.environ.items() if not k.startswith("INVSCALE_")}
  environ.update(env or {}, PYTHONPATH=os.pathsep.join(map(str, (t5x_dir, REPO, REPO / "tests"))),
                 TF_CPP_MIN_LOG_LEVEL="3",
                 JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, str(t5x_dir / "driver.py"), argv], env=environ,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr.strip().splitlines()[-1]
  return json.loads(out.read_text())


def test_module_imported_after_gin_is_locked(t5x_dir, data_dir, tmp_path) -> None:
  """The README's recipe with only flags: MIXTURE_OR_TASK_MODULE imported after gin is
  finalized, the data dir from the environment, byte vocabulary. TASK_FEATURE_LENGTHS
  shorter than the prompts shows what SeqIO does with them: it keeps the FIRST tokens."""
  result = run_t5x(
      t5x_dir, tmp_path, "infer", [model_gin(tmp_path, "@seqio.ByteVocabulary()"),
                                   t5x_dir / "infer.gin"],
      ["MIXTURE_OR_TASK_NAME = 'invscale:hindsight_neglect.zero_shot'",
       "MIXTURE_OR_TASK_MODULE = 'seqio_tasks'", "TASK_FEATURE_LENGTHS = {'inputs': 256, "
       "'targets': 8}", "CHECKPOINT_PATH = '/unused'", "INFER_OUTPUT_DIR = '/unused'"],
      env={gin_macros.DATA_DIR: str(data_dir)})
  assert result["restore_dtype"] == "bfloat16" and result["mode"] == "predict"  # infer.gin's
  assert result["vocabulary"].startswith("ConfiguredVocabulary(<seqio.vocabularies.ByteVocabulary")
  full, trimmed = result["full"], result["trimmed"]
  assert len(full) == len(trimmed) == 2 * TASK_ROWS["hindsight-neglect"]
  for whole, cut in zip(full, trimmed):
    assert len(whole["inputs"]) > 2000 and cut["inputs"] == whole["inputs"][:256]
    assert cut["targets"] == whole["targets"]


def test_shipped_gin_file_with_sentencepiece(t5x_dir, data_dir, spm_model, tmp_path,
                                            run_cli) -> None:
  """infer.gin + gin/t5x/score_invscale.gin: score mode, float32 restore, feature lengths
  that cut nothing (and no longer than needed), settings as gin macros, the task's
  vocabulary equal to the model's SentencePiece vocabulary, and output files that
  `invscale import t5x-infer` reads (the fields the gin file asks for)."""
  infer_dir = tmp_path / "infer" / "m"
  result = run_t5x(
      t5x_dir, tmp_path, "infer",
      [model_gin(tmp_path, "@seqio.SentencePieceVocabulary()"), t5x_dir / "infer.gin",
       REPO / "gin" / "t5x" / "score_invscale.gin"],
      [f"seqio.SentencePieceVocabulary.sentencepiece_model_file = '{spm_model}'",
       "MIXTURE_OR_TASK_NAME = 'invscale:memo_trap.2_shot'", "CHECKPOINT_PATH = '/unused'",
       f"INFER_OUTPUT_DIR = '{infer_dir}'", f"INVSCALE_DATA_DIR = '{data_dir}'",
       f"INVSCALE_VOCABULARY = '{spm_model}'", "INVSCALE_SEED = 3"])
  assert result["mode"] == "score" and result["restore_dtype"] == "float32"
  assert "TASK_FEATURE_LENGTHS = @lengths.feature_lengths()" in result["config"]
  assert result["vocabulary"].startswith(f"ConfiguredVocabulary(SentencePieceVocabulary("
                                         f"file={spm_model}")
  full = result["full"]
  assert len(full) == 2 * TASK_ROWS["memo-trap"] and result["trimmed"] == full
  assert result["lengths"] == {k: max(len(row[k]) for row in full) for k in ("inputs", "targets")}
  import numpy as np  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top

  import seqio_tasks  # pylint: disable=g-import-not-at-top
  task = seqio_tasks.build_task("memo-trap", "2_shot", seqio.SentencePieceVocabulary(
      str(spm_model)), seqio_tasks.tasks.PromptOptions(seed=3), str(data_dir))
  expected = [row["inputs"].tolist() for row in
              task.get_dataset(sequence_length=None, split="test", shuffle=False)
              .as_numpy_iterator()]
  assert [row["inputs"] for row in full] == expected  # the macros' seed and vocabulary

  manifest = tmp_path / "family.json"
  manifest.write_text(json.dumps({"family": "t5x", "models": [{
      "name": "m", "architecture": "decoder_only", "gin": "models/tiny/tiny_1.gin",
      "checkpoint": "m/checkpoint_0", "vocabulary": {"type": "sentencepiece",
                                                     "path": str(spm_model)},
      "n_params": 1000}]}))
  out = tmp_path / "results"
  imported = run_cli("import", "t5x-infer", "--family", manifest, "--out", out, infer_dir)
  assert imported.code == 0, imported.err
  from conftest import read_results  # pylint: disable=g-import-not-at-top
  recs = sorted(read_results(out).values(), key=lambda r: (r.example_id, r.class_index))
  assert [(r.example_id, r.class_index) for r in recs] == [
      (e, c) for e in range(TASK_ROWS["memo-trap"]) for c in range(2)]
  assert [r.n_tokens for r in recs] == [len(row["targets"]) for row in full]
  assert [r.logprob for r in recs] == pytest.approx(
      [float(np.log((np.array(row["targets"]) % 7 + 1) / 28.0).sum()) for row in full])
  assert all(r.n_demos_dropped == 0 and r.variant == "2_shot" for r in recs)


@pytest.mark.parametrize("encoder_eos", [None, False])
def test_encoder_inputs_match_score(t5x_dir, data_dir, tmp_path, encoder_eos) -> None:
  """With an EncoderDecoderModel the recipe's inputs end with EOS (unless
  INVSCALE_ENCODER_EOS = False), exactly the encoder inputs `invscale score` builds with its
  default (or with --no_encoder_eos)."""
  # pylint: disable=g-import-not-at-top
  from invscale_jax import catalog, family
  from invscale_jax import tokenizer as tokenizer_lib
  from invscale_jax.data import task_rows, variants
  from invscale_jax.engine import plan, requests
  setting = [] if encoder_eos is None else [f"INVSCALE_ENCODER_EOS = {encoder_eos}"]
  result = run_t5x(
      t5x_dir, tmp_path, "infer", [model_gin(tmp_path, "@seqio.ByteVocabulary()",
                                             "EncoderDecoderModel"), t5x_dir / "infer.gin",
                                   REPO / "gin" / "t5x" / "score_invscale.gin"],
      ["MIXTURE_OR_TASK_NAME = 'invscale:memo_trap.1_shot'", "CHECKPOINT_PATH = '/unused'",
       f"INFER_OUTPUT_DIR = '{tmp_path / 'infer'}'", f"INVSCALE_DATA_DIR = '{data_dir}'",
       *setting])
  entry = family.ModelEntry("t5", "encoder_decoder", "", "", {"type": "byte"})
  run = plan.Run(entry, None, None, "", {}, None, 2048, plan.ScoringOptions(
      encoder_eos=encoder_eos is None).encoder_eos_for(entry))
  vocabulary = tokenizer_lib.ByteTokenizer()  # what `invscale score` builds requests with
  rows = task_rows.rows_for(catalog.get("memo-trap"), variants.parse("1_shot"), vocabulary,
                            task_rows.PromptOptions(0, 2048, 0), str(data_dir))
  reqs = requests.from_task_rows(rows, vocabulary, eos_id=plan.eos_id(run, vocabulary))
  expected = [r.prefix.tolist() for r in reqs for _ in r.branches]
  assert [row["inputs"] for row in result["full"]] == expected
  assert all((row[-1] == vocabulary.eos_id) == (encoder_eos is None) for row in expected)
  assert result["lengths"]["inputs"] == max(map(len, expected))


def test_eval_with_score_metrics(t5x_dir, data_dir, tmp_path) -> None:
  """eval.py's path with gin/t5x/eval_invscale.gin: the tasks imported by the gin file (no
  MIXTURE_OR_TASK_MODULE), a k-shot variant registered before eval.py looks it up, float32
  restore, vocabularies checked (eval.py has no switch for that), seqio.Evaluator
  computing our score metrics from a model's scores."""
  from seqio_tasks import metrics  # pylint: disable=g-import-not-at-top

  result = run_t5x(
      t5x_dir, tmp_path, "evaluate", [model_gin(tmp_path, "@seqio.ByteVocabulary()"),
                                      t5x_dir / "evaluate.gin",
                                      REPO / "gin" / "t5x" / "eval_invscale.gin"],
      ["MIXTURE_OR_TASK_NAME = 'invscale:memo_trap.2_shot'", "CHECKPOINT_PATH = '/unused'",
       f"INVSCALE_DATA_DIR = '{data_dir}'"])
  assert result["restore_dtype"] == "float32"
  import numpy as np  # pylint: disable=g-import-not-at-top

  from invscale_jax.data import datadir  # pylint: disable=g-import-not-at-top
  examples = datadir.load_task(data_dir, "memo-trap")
  targets = [(e.example_id, c, e.answer_index) for e in examples for c in range(len(e.classes))]
  scores = [float(np.log((np.array(row["targets"]) % 7 + 1) / 28.0).sum())
            for row in result["full"]]
  expected = {**metrics.accuracy(targets, scores), **metrics.classification_loss(targets, scores)}
  assert result["metrics"] == pytest.approx(expected, rel=1e-6)
  assert 0 < expected["accuracy"] < 1


def test_configured_vocabulary_equals_what_it_resolves_to(clean_gin, spm_model, monkeypatch):
  """`==` / `!=` (T5X's check) and hashing follow the resolved vocabulary; the setting's
  path is kept as written, as SentencePieceVocabulary compares paths."""
  import gin  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top

  from invscale_jax import vocab, vocab_spec  # pylint: disable=g-import-not-at-top

  monkeypatch.delenv(vocab_spec.ENV_VAR, raising=False)
  sentencepiece = seqio.SentencePieceVocabulary(str(spm_model))
  configured = vocab.ConfiguredVocabulary()
  assert configured == seqio.ByteVocabulary() and configured != sentencepiece
  with pytest.raises(TypeError):  # unhashable, like the ByteVocabulary it is
    hash(configured)
  gin.parse_config(f"INVSCALE_VOCABULARY = '{spm_model}'")
  configured = vocab.ConfiguredVocabulary()
  assert configured == sentencepiece and not configured != sentencepiece
  assert configured != seqio.ByteVocabulary()
  assert configured != seqio.SentencePieceVocabulary(f"{spm_model.parent}/./{spm_model.name}")
  assert configured == vocab.ConfiguredVocabulary()
  assert configured.encode("Hello there") == sentencepiece.encode("Hello there")
  monkeypatch.setenv(vocab_spec.ENV_VAR, str(spm_model))  # the environment variable still works
  gin.clear_config()
  assert vocab.ConfiguredVocabulary() == sentencepiece


@pytest.mark.parametrize("vocabulary", ["byte", "spm"])
def test_tasks_lengths_prints_the_longest_row(vocabulary, data_dir, spm_model, run_cli):
  import ast  # pylint: disable=g-import-not-at-top

  import seqio  # pylint: disable=g-import-not-at-top

  from invscale_jax.data import datadir  # pylint: disable=g-import-not-at-top
  flags = ["--vocabulary", spm_model] if vocabulary == "spm" else []
  result = run_cli("tasks", "lengths", "hindsight-neglect.zero_shot", "--data_dir", data_dir,
                   *flags)
  assert result.code == 0, result.err
  prefix = "TASK_FEATURE_LENGTHS = "
  assert result.out.startswith(prefix)
  lengths = ast.literal_eval(result.out[len(prefix):])
  encoder = (seqio.SentencePieceVocabulary(str(spm_model)) if vocabulary == "spm"
             else seqio.ByteVocabulary())
  examples = datadir.load_task(data_dir, "hindsight-neglect")
  assert lengths == {"inputs": max(len(encoder.encode(e.prompt)) for e in examples),
                     "targets": max(len(encoder.encode(c)) for e in examples for c in e.classes)}
  assert run_cli("tasks", "lengths", "neqa.two_shot", "--data_dir", data_dir).code == 2
  with_eos = run_cli("tasks", "lengths", "hindsight-neglect.zero_shot", "--data_dir", data_dir,
                     "--encoder_eos", *flags)
  assert ast.literal_eval(with_eos.out[len(prefix):]) == dict(lengths,
                                                               inputs=lengths["inputs"] + 1)


def test_own_task_named_by_a_flag_after_the_shipped_gin_file(t5x_dir, tmp_path) -> None:
  """Your own task under T5X: the shipped gin file imports seqio_tasks while it is parsed,
  before the INVSCALE_TASK_DIRS flag is bound; the task is declared when first named."""
  from test_own_tasks import ROWS, write_task_dir  # pylint: disable=g-import-not-at-top

  task_dir = write_task_dir(tmp_path / "tasks")
  result = run_t5x(
      t5x_dir, tmp_path, "infer", [model_gin(tmp_path, "@seqio.ByteVocabulary()"),
                                   t5x_dir / "infer.gin",
                                   REPO / "gin" / "t5x" / "score_invscale.gin"],
      ["MIXTURE_OR_TASK_NAME = 'invscale:my_cmp.zero_shot'", "CHECKPOINT_PATH = '/unused'",
       "INFER_OUTPUT_DIR = '/unused'", f"INVSCALE_TASK_DIRS = ['{task_dir}']"])
  full = result["full"]
  assert len(full) == 2 * len(ROWS) and result["trimmed"] == full
  assert full[0]["inputs"] == [b + 3 for b in ROWS[0]["prompt"].encode()]  # ByT5's ids
