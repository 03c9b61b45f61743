"""Vocabulary specs: what a manifest or setting names, without loading any tokenizer.

A spec is a small dict: `{"type": "byte"}`, `{"type": "sentencepiece", "path": ...}` or
`{"type": "hf_tokenizer", "path": ...}` (`vocab.from_spec` builds the vocabulary). This
module needs neither SeqIO nor TensorFlow, so planning a run (whose key holds the
vocabulary's `identity`) stays fast.
"""

from __future__ import annotations

import os
from typing import Any

from invscale_jax import checks, content_hash, gin_macros, storage

ENV_VAR = gin_macros.VOCABULARY  # the environment variable has the gin macro's name
HF_DEFAULT_EOS = "<|endoftext|>"  # GPT-2, GPT-NeoX, Qwen2, SmolLM2


def vocabulary_file(spec: dict[str, Any]) -> tuple[str, str]:
  """(path, what to call it in errors) of a file-based vocabulary; missing -> FileNotFoundError.
  The spec's optional `source` (set by `family.load`: manifest and model) starts the name."""
  path = spec.get("path")
  where = f"{spec['source']}: " if spec.get("source") else ""
  what = f"{where}vocabulary.path: {path}"
  if not (path and storage.is_file(path)):
    raise FileNotFoundError(f"{what}: no such {spec.get('type')} file")
  return path, what


def identity(spec: dict[str, Any]) -> str:
  """A stable identity of a vocabulary for run keys: its type and its file's sha256."""
  if spec.get("type") == "byte":
    return "byte"
  eos = f":eos={spec['eos']}" if spec.get("eos") else ""
  return f"{spec['type']}:{content_hash.file_sha256(vocabulary_file(spec)[0])}{eos}"


def spec_of(value: Any) -> dict[str, Any]:
  """A vocabulary spec from a setting: a spec dict or its JSON, "byte", or a tokenizer
  file (a `.model` file is SentencePiece, anything else a Hugging Face tokenizer.json).
  Paths are kept as given, so a T5X model's `SentencePieceVocabulary(path)` equals ours."""
  if isinstance(value, dict):
    return dict(value)
  text = str(value)
  if text.lstrip().startswith("{"):  # a spec's JSON: an object (checked by from_spec)
    return checks.parse_json(text, f"vocabulary {text[:40]!r}")
  if text == "byte":
    return {"type": "byte"}
  return {"type": "sentencepiece" if text.endswith(".model") else "hf_tokenizer", "path": text}


def configured_spec() -> dict[str, Any]:
  """Vocabulary of the registered SeqIO tasks: the gin macro INVSCALE_VOCABULARY, else
  $INVSCALE_VOCABULARY, else bytes."""
  setting = gin_macros.value(gin_macros.VOCABULARY) or os.environ.get(ENV_VAR)
  return spec_of(setting) if setting else {"type": "byte"}
