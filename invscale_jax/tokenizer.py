"""Tokenizers without TensorFlow: the ids of `vocab`'s SeqIO vocabularies, in plain Python.

The scoring path (requests, decoding for chain of thought) tokenizes with these; SeqIO
(and TensorFlow) is imported only by the SeqIO tasks, for T5X and for users. Each gives
the same ids as the SeqIO vocabulary of the same manifest spec (`vocab.from_spec`):
- "byte": UTF-8 bytes shifted by 3 (0 pad, 1 EOS, 2 UNK), as `seqio.ByteVocabulary`;
- "sentencepiece": the model's own ids, as `seqio.SentencePieceVocabulary` (no extra ids);
- "hf_tokenizer": a `tokenizers` tokenizer.json, no special tokens added.
`decode` follows SeqIO's: ids past the vocabulary read as UNK, and the text stops after the
first EOS.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Sequence

import sentencepiece
import tokenizers

from invscale_jax import storage, vocab_spec


TOKENIZER_BYTES = 256 << 20  # the largest tokenizer.json read (Gemma's is 34 MB)
# The largest part of a tokenizer.json besides its vocabulary and merges: normalizer and
# pre-tokenizer strings are compiled or added to every text, and a huge one takes gigabytes.
TOKENIZER_PART_BYTES = 1 << 20
_TOKENIZER_PARTS = ("normalizer", "pre_tokenizer", "post_processor", "decoder")


def _check_tokenizer_file(path: str) -> None:
  """Refuses a tokenizer.json too large to load in bounded memory (a ValueError)."""
  size = os.stat(path).st_size
  if size > TOKENIZER_BYTES:
    raise ValueError(f"{size} bytes, more than the {TOKENIZER_BYTES} read")
  if size <= TOKENIZER_PART_BYTES:
    return
  with open(path, "rb") as f:
    data = json.load(f)
  if not isinstance(data, dict):
    raise ValueError("not a JSON object")
  for part in _TOKENIZER_PARTS:
    n = len(json.dumps(data.get(part)))
    if n > TOKENIZER_PART_BYTES:
      raise ValueError(f"its {part} takes {n} bytes, more than the {TOKENIZER_PART_BYTES} "
                       "read")


class Tokenizer:
  """encode / decode, eos_id, unk_id, vocab_size (`pad_id` is 0, as in SeqIO)."""

  pad_id = 0
  eos_id: int | None = None
  unk_id: int | None = None
  vocab_size: int = 0

  def encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def decode_ids(self, ids: list[int]) -> str:
    """The text of exactly `ids` (no EOS cut, no UNK mapping)."""
    raise NotImplementedError

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    if self.unk_id is not None:
      ids = [self.unk_id if i >= self.vocab_size else i for i in ids]
    if self.eos_id is not None and self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id) + 1]
    return self.decode_ids(ids)


class ByteTokenizer(Tokenizer):
  """`seqio.ByteVocabulary`'s ids."""

  _SPECIAL = 3
  eos_id, unk_id, vocab_size = 1, 2, 256 + _SPECIAL

  def encode(self, text: str) -> list[int]:
    return [b + self._SPECIAL for b in text.encode("utf-8")]

  def decode_ids(self, ids: list[int]) -> str:
    kept = [i - self._SPECIAL for i in ids if self._SPECIAL <= i < self.vocab_size]
    return bytes(kept).decode("utf-8", errors="ignore")


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model (a path or gs:// URL), as `seqio.SentencePieceVocabulary`."""

  def __init__(self, path: str):
    self._model = sentencepiece.SentencePieceProcessor()
    with open(storage.local_copy(path), "rb") as f:
      self._model.LoadFromSerializedProto(f.read())
    self.eos_id, self.unk_id = self._model.eos_id(), self._model.unk_id()
    self.vocab_size = self._model.GetPieceSize()

  def encode(self, text: str) -> list[int]:
    return list(self._model.EncodeAsIds(text))

  def decode_ids(self, ids: list[int]) -> str:
    return self._model.DecodeIds(ids)


class HfTokenizer(Tokenizer):
  """A `tokenizers` tokenizer.json (e.g. Pythia / GPT-NeoX): its own ids, no special tokens
  added on encode; `eos_token` names the end of sequence (`<|endoftext|>` by default)."""

  unk_id = None

  def __init__(self, path: str, eos_token: str = vocab_spec.HF_DEFAULT_EOS):
    local = storage.local_copy(path)
    _check_tokenizer_file(local)
    self._tokenizer = tokenizers.Tokenizer.from_file(local)
    self.eos_id = self._tokenizer.token_to_id(eos_token)
    # Ids need not be dense: the size is one more than the largest id, not the count.
    self.vocab_size = max(self._tokenizer.get_vocab(with_added_tokens=True).values(),
                          default=-1) + 1

  def encode(self, text: str) -> list[int]:
    return self._tokenizer.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

  def decode_ids(self, ids: list[int]) -> str:
    return self._tokenizer.decode(ids, skip_special_tokens=False)


@functools.lru_cache(maxsize=None)
def _build(kind: str, path: str | None, eos: str | None) -> Tokenizer:
  if kind == "byte":
    return ByteTokenizer()
  if kind == "sentencepiece":
    return SentencePieceTokenizer(path)
  if kind == "hf_tokenizer":
    return HfTokenizer(path) if eos is None else HfTokenizer(path, eos)
  raise ValueError(f"vocabulary.type: unknown vocabulary type {kind!r}")


def from_spec(spec: dict[str, Any]) -> Tokenizer:
  """The tokenizer (built once per spec) of a manifest's `vocabulary`; a bad file is a
  one-line error naming it."""
  kind = spec.get("type")
  if kind not in ("sentencepiece", "hf_tokenizer"):
    return _build(kind, None, None)  # bytes, or an error naming the unknown type
  path, what = vocab_spec.vocabulary_file(spec)
  try:
    return _build(kind, path, spec.get("eos"))
  except Exception as e:  # pylint: disable=broad-except  (tokenizers raise bare Exception)
    reason = str(e).partition("\n")[0] or type(e).__name__
    raise ValueError(f"{what}: not a valid {kind} file ({reason})") from None


def encode_all(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
  """`encode` of every text (in one call where the tokenizer batches)."""
  if isinstance(tokenizer, HfTokenizer):
    return tokenizer.encode_batch(texts)
  return [tokenizer.encode(t) for t in texts]
