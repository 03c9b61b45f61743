"""`vocab.HfTokenizerVocabulary` on a tiny BPE tokenizer.json trained here, alone and in SeqIO."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import seqio_tasks
from conftest import FIXTURE_DATA
from invscale_jax import vocab, vocab_spec
from invscale_jax.data import datadir, loader
from seqio_tasks import tasks as tasks_lib

SAMPLES = ("", " A", " Yes", "Redefine π as 462. Q: What is the first digit of π? A:",
           "Héllo wörld — 3.14 ✓\n\n\nAnswer:  two  spaces\ttab", "<not special>", "x" * 300)


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  """A byte-level BPE tokenizer.json, trained on a few fixture prompts, `<|endoftext|>` = 0."""
  tokenizers = pytest.importorskip("tokenizers")
  texts = [e.prompt for e in loader.load(FIXTURE_DATA / "redefine_classification.jsonl")]
  texts += [e.prompt for e in loader.load(FIXTURE_DATA / "modus-tollens_classification.jsonl")]
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(texts, trainer)
  path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
  tokenizer.save(str(path))
  assert tokenizer.token_to_id("<|endoftext|>") == 0
  return path


@pytest.fixture(scope="module")
def hf_vocab(tokenizer_path: pathlib.Path) -> vocab.HfTokenizerVocabulary:
  return vocab.HfTokenizerVocabulary(tokenizer_path)


def test_special_ids_and_size(hf_vocab: vocab.HfTokenizerVocabulary,
                              tokenizer_path: pathlib.Path) -> None:
  import tokenizers  # pylint: disable=g-import-not-at-top

  raw = tokenizers.Tokenizer.from_file(str(tokenizer_path))
  assert hf_vocab.eos_id == 0 == hf_vocab.pad_id
  assert hf_vocab.unk_id is None
  assert hf_vocab.vocab_size == raw.get_vocab_size() > 256


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_and_tf_agree(text: str, hf_vocab: vocab.HfTokenizerVocabulary) -> None:
  ids = list(hf_vocab.encode(text))
  assert 0 not in ids  # nothing special added
  assert hf_vocab.decode(ids) == text
  tf_ids = hf_vocab.encode_tf(tf.constant(text))
  assert tf_ids.dtype == tf.int32 and tf_ids.shape.rank == 1
  assert tf_ids.numpy().tolist() == ids
  assert hf_vocab.decode_tf(tf.constant(ids, tf.int32)).numpy().decode("utf-8") == text


def test_tf_functions_work_inside_tf_data(hf_vocab: vocab.HfTokenizerVocabulary) -> None:
  """In a tf.data map (graph mode) the Python callbacks get other types than in eager mode."""
  texts = [t for t in SAMPLES if t]
  encoded = tf.data.Dataset.from_tensor_slices(texts).map(hf_vocab.encode_tf)
  ids = [x.tolist() for x in encoded.as_numpy_iterator()]
  assert ids == [list(hf_vocab.encode(t)) for t in texts]
  decoded = encoded.map(hf_vocab.decode_tf)
  assert [x.decode() for x in decoded.as_numpy_iterator()] == texts


def test_bpe_merges_are_used(hf_vocab: vocab.HfTokenizerVocabulary) -> None:
  """The trained merges shorten familiar text (fewer tokens than bytes)."""
  text = "Consider the following statements:"
  assert 0 < len(hf_vocab.encode(text)) < len(text.encode()) / 2


def test_decode_stops_at_eos_and_skips_padding(hf_vocab: vocab.HfTokenizerVocabulary) -> None:
  ids = list(hf_vocab.encode(" Yes"))
  assert hf_vocab.decode(ids + [0] + list(hf_vocab.encode(" No"))) == " Yes<|endoftext|>"
  padded = tf.constant(ids + [0, 0, 0], tf.int32)
  assert hf_vocab.decode_tf(padded).numpy().decode() == " Yes"


def test_from_spec_and_spec_id(tokenizer_path: pathlib.Path,
                               hf_vocab: vocab.HfTokenizerVocabulary) -> None:
  spec = {"type": "hf_tokenizer", "path": str(tokenizer_path)}
  built = vocab.from_spec(spec)
  assert isinstance(built, vocab.HfTokenizerVocabulary) and built == hf_vocab
  assert hash(built) == hash(hf_vocab)
  digest = hashlib.sha256(tokenizer_path.read_bytes()).hexdigest()
  assert vocab_spec.identity(spec) == f"hf_tokenizer:{digest}"
  assert vocab_spec.identity({"type": "byte"}) == "byte"
  with pytest.raises(FileNotFoundError, match="vocabulary.path"):
    vocab.from_spec({"type": "hf_tokenizer", "path": str(tokenizer_path.parent / "nope.json")})


def materialise(task_name: str, variant: str, hf_vocab: vocab.HfTokenizerVocabulary,
                data_dir: pathlib.Path, **options: object) -> list[dict[str, object]]:
  task = seqio_tasks.build_task(task_name, variant, vocabulary=hf_vocab,
                                options=tasks_lib.PromptOptions(**options), data_dir=str(data_dir))
  return [{k: v.decode() if isinstance(v, bytes) else v for k, v in row.items()}
          for row in task.get_dataset(sequence_length=None, split="test",
                                      shuffle=False).as_numpy_iterator()]


def test_seqio_task_with_hf_vocabulary(hf_vocab: vocab.HfTokenizerVocabulary,
                                       combined_data_dir: pathlib.Path) -> None:
  rows = materialise("neqa", "1_shot", hf_vocab, combined_data_dir)
  examples = datadir.load_task(combined_data_dir, "neqa")
  assert len(rows) == sum(len(e.classes) for e in examples) == 600
  assert sum(bool(r["is_correct"]) for r in rows) == len(examples)
  for row in rows[:40] + rows[-40:]:
    assert row["inputs"].dtype == np.int32
    assert row["inputs"].tolist() == list(hf_vocab.encode(row["inputs_pretokenized"]))
    assert hf_vocab.decode(row["inputs"].tolist()) == row["inputs_pretokenized"]
    assert hf_vocab.decode(row["targets"].tolist()) == row["targets_pretokenized"]
    assert row["targets_pretokenized"] in (" A", " B")
    assert row["n_demos"] == 1 and row["inputs_pretokenized"].count("\n\n\n") == 1


def test_length_budget_counts_hf_tokens(hf_vocab: vocab.HfTokenizerVocabulary,
                                        combined_data_dir: pathlib.Path) -> None:
  """Under max_length M a demonstration is kept iff prompt + BOS + longest class <= M tokens."""
  free = materialise("sig-figs", "1_shot", hf_vocab, combined_data_dir, max_length=None)
  examples = {e.example_id: e for e in datadir.load_task(combined_data_dir, "sig-figs")}
  need = {}
  for row in free:
    longest = max(len(hf_vocab.encode(c)) for c in examples[row["example_id"]].classes)
    need[row["example_id"]] = len(row["inputs"]) + 1 + longest
  budget = int(np.median(list(need.values())))
  capped = materialise("sig-figs", "1_shot", hf_vocab, combined_data_dir, max_length=budget)
  dropped = {r["example_id"]: r["n_demos_dropped"] for r in capped}
  assert dropped == {i: int(n > budget) for i, n in need.items()}
  assert 0 < sum(dropped.values()) < len(dropped)


def test_configured_vocabulary_hashes_like_its_vocabulary(clean_gin: None, tokenizer_path,
                                                         hf_vocab, monkeypatch) -> None:
  import gin  # pylint: disable=g-import-not-at-top

  monkeypatch.delenv(vocab_spec.ENV_VAR, raising=False)
  gin.parse_config(f"INVSCALE_VOCABULARY = {{'type': 'hf_tokenizer', 'path': '{tokenizer_path}'}}")
  configured = vocab.ConfiguredVocabulary()
  assert configured == hf_vocab and hash(configured) == hash(hf_vocab)
  assert str(configured).startswith("ConfiguredVocabulary(")
