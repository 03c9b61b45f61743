"""Vocabularies, all `seqio.Vocabulary`: bytes, SentencePiece, and Hugging Face `tokenizer.json`.

A vocabulary is described by a small dict (the `vocabulary` field of a family manifest):
`{"type": "byte"}`, `{"type": "sentencepiece", "path": "spm.model"}` or
`{"type": "hf_tokenizer", "path": "tokenizer.json"}` (with `"eos": "</s>"` when the end
of sequence token is not `<|endoftext|>`). `from_spec` builds it; `vocab_spec.identity` names it
for run keys.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import numpy as np
import seqio
import tensorflow as tf

from invscale_jax import storage, vocab_spec
from invscale_jax import tokenizer as tokenizer_lib


class HfTokenizerVocabulary(seqio.Vocabulary):
  """A `tokenizers` tokenizer.json (e.g. Pythia / GPT-NeoX) as a SeqIO vocabulary.

  Ids are the tokenizer's own; `pad_id` is 0 as SeqIO requires (for GPT-NeoX id 0 is
  `<|endoftext|>`, which is also its BOS and EOS). No special tokens are added on encode.
  The file may be a gs:// URL (tokenizers opens a local copy).
  """

  def __init__(self, path: os.PathLike | str, eos_token: str = vocab_spec.HF_DEFAULT_EOS):
    self._path = str(path)
    self._tokenizer = tokenizer_lib.HfTokenizer(self._path, eos_token)
    super().__init__(extra_ids=0)

  @property
  def eos_id(self) -> int | None:
    return self._tokenizer.eos_id

  @property
  def unk_id(self) -> int | None:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return self._tokenizer.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self._tokenizer.encode(s)

  def _decode(self, ids: Sequence[int]) -> str:
    return self._tokenizer.decode_ids([int(i) for i in ids])

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    def encode(x: np.ndarray | bytes) -> np.ndarray:
      # Eager calls pass a 0-d object array; inside tf.data (graph mode) a plain bytes.
      text = x.item() if isinstance(x, np.ndarray) else x
      return np.asarray(self._encode(text.decode("utf-8")), dtype=np.int32)
    ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
    return tf.ensure_shape(ids, [None])

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode(x: np.ndarray) -> np.ndarray:
      return np.asarray(self._decode([i for i in x.tolist() if i != self.pad_id]).encode("utf-8"),
                        dtype=object)
    text = tf.numpy_function(decode, [ids], tf.string, stateful=False)
    return tf.ensure_shape(text, [])

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, HfTokenizerVocabulary) and other._path == self._path

  def __hash__(self) -> int:
    return hash(self._path)


class SentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """seqio's vocabulary of a gs:// SentencePiece model, read through `storage` (seqio
  opens files with tf.io.gfile, which has other credentials and settings than tensorstore
  and cannot reach an emulator); SentencePiece loads a local copy. It keeps the URL as its
  file, so it equals seqio's vocabulary of that URL (e.g. a T5X model's)."""

  def _model_context(self):
    if not self._model:
      self._model = seqio.SentencePieceVocabulary(
          storage.local_copy(self._sentencepiece_model_file), self._extra_ids,
          self._normalizer_spec_overrides, self._reverse_extra_ids)._model_context()
    return self._model


@functools.lru_cache(maxsize=None)
def _build(kind: str, path: str | None, eos: str | None) -> seqio.Vocabulary:
  if kind == "byte":
    return seqio.ByteVocabulary()
  if kind == "sentencepiece":
    remote = storage.is_url(path)
    return (SentencePieceVocabulary if remote else seqio.SentencePieceVocabulary)(path)
  if kind == "hf_tokenizer":
    return HfTokenizerVocabulary(path) if eos is None else HfTokenizerVocabulary(path, eos)
  raise ValueError(f"vocabulary.type: unknown vocabulary type {kind!r}")


def from_spec(spec: dict[str, Any]) -> seqio.Vocabulary:
  """Builds (once per spec) the vocabulary a manifest entry describes."""
  kind = spec.get("type")
  if kind not in ("sentencepiece", "hf_tokenizer"):
    return _build(kind, None, None)  # bytes, or an error naming the unknown type
  path, what = vocab_spec.vocabulary_file(spec)
  try:
    vocabulary = _build(kind, path, spec.get("eos"))
    vocabulary.vocab_size  # pylint: disable=pointless-statement  (reads the file now)
  except Exception as e:  # pylint: disable=broad-except  (tokenizers raise bare Exception)
    reason = str(e).partition("\n")[0] or type(e).__name__
    raise ValueError(f"{what}: not a valid {kind} file ({reason})") from None
  return vocabulary


class ConfiguredVocabulary(seqio.Vocabulary):
  """The vocabulary `vocab_spec.configured_spec()` names, resolved at first use (so gin bindings
  parsed after `import seqio_tasks` still apply, as in a T5X run).

  It compares (and hashes) equal to the vocabulary it resolves to, as T5X's check that a
  task's vocabulary is the model's (`task_vocab != model_vocab`) requires.
  """

  def __init__(self):
    super().__init__(extra_ids=0)

  @functools.cached_property
  def inner(self) -> seqio.Vocabulary:
    return from_spec(vocab_spec.configured_spec())

  bos_id = property(lambda self: self.inner.bos_id)
  eos_id = property(lambda self: self.inner.eos_id)
  pad_id = property(lambda self: self.inner.pad_id)
  unk_id = property(lambda self: self.inner.unk_id)
  _base_vocab_size = property(lambda self: self.inner.vocab_size)

  def _encode(self, s: str) -> Sequence[int]:
    return self.inner.encode(s)

  def _decode(self, ids: Sequence[int]) -> str:
    return self.inner.decode(ids)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    return self.inner.encode_tf(s)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    return self.inner.decode_tf(ids)

  def __eq__(self, other: Any) -> bool:
    if not isinstance(other, seqio.Vocabulary):  # e.g. inspect's "no default" marker
      return NotImplemented
    return self.inner == (other.inner if isinstance(other, ConfiguredVocabulary) else other)

  def __hash__(self) -> int:
    return hash(self.inner)  # a TypeError, like the inner's, where that is unhashable

  def __str__(self) -> str:
    return f"ConfiguredVocabulary({self.inner})"
