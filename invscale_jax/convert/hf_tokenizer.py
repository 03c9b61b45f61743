"""A Hugging Face model's tokenizer exactly as transformers applies it: the tokenizer.json
it encodes with, and its conventions (the token it puts before a text, its EOS, and
whether it puts EOS after a text, as T5's does).

transformers decides what `tokenizer(text)` adds from tokenizer_config.json (an explicit
`add_bos_token` rebuilds the post-processor) or else from tokenizer.json's post-processor,
and some tokenizer classes rebuild the pre-tokenizer from vocab.json + merges.txt (OPT
ships no tokenizer.json at all). So the tokenizer is loaded with `AutoTokenizer`, its
backend is saved as tokenizer.json (what `vocab.HfTokenizerVocabulary` encodes with, no
special tokens added) and the BOS is read off what it adds to a probe text.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from invscale_jax import vocab_spec

# Texts on which the saved tokenizer.json must encode as transformers' tokenizer does.
_PROBES = ("Hello world", " leading space,  two spaces\nand a new line", "Ünïcödé ✓ 1234.5")


@dataclasses.dataclass(frozen=True)
class Conventions:
  bos_id: int | None  # put before every text by `tokenizer(text)`; None: nothing
  eos: str | None  # the end-of-sequence token
  appends_eos: bool = False  # `tokenizer(text)` ends with the EOS token (T5, Flan-T5)


def has_tokenizer(src_dir: str | os.PathLike) -> bool:
  """Whether the directory holds tokenizer files transformers can load."""
  src = pathlib.Path(src_dir)
  return any((src / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                           "vocab.json"))


def _conventions(tokenizer, src_dir: str | os.PathLike) -> Conventions:
  plain = tokenizer(_PROBES[0], add_special_tokens=False)["input_ids"]
  full = tokenizer(_PROBES[0])["input_ids"]
  eos_id = tokenizer.eos_token_id
  appends_eos = eos_id is not None and len(full) > len(plain) and full[-1] == eos_id
  body = full[:-1] if appends_eos else full
  if body != plain and body[1:] != plain:
    raise ValueError(f"{src_dir}: the tokenizer turns {_PROBES[0]!r} into {full}, not "
                     f"{plain} with one leading token and/or its EOS after: only a leading "
                     f"BOS and a trailing EOS are supported")
  return Conventions(bos_id=None if body == plain else int(body[0]), eos=tokenizer.eos_token,
                     appends_eos=appends_eos)


def export(src_dir: str | os.PathLike, path: str | os.PathLike) -> Conventions:
  """Writes the tokenizer.json transformers encodes `src_dir`'s texts with to `path` and
  returns the tokenizer's conventions."""
  import transformers  # pylint: disable=g-import-not-at-top  (hf extra: optional)

  tokenizer = transformers.AutoTokenizer.from_pretrained(src_dir)
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is None:
    raise ValueError(f"{src_dir}: transformers gives no `tokenizers` backend for this "
                     f"tokenizer ({type(tokenizer).__name__}); it cannot be exported")
  for probe in _PROBES:
    ours = backend.encode(probe, add_special_tokens=False).ids
    theirs = tokenizer(probe, add_special_tokens=False)["input_ids"]
    if ours != theirs:
      raise ValueError(f"{src_dir}: the tokenizer's backend encodes {probe!r} as {ours}, "
                       f"transformers as {theirs}; it cannot be exported")
  backend.save(str(path))
  return _conventions(tokenizer, src_dir)


def vocabulary_spec(path: str, conventions: Conventions) -> dict:
  """The manifest's vocabulary entry of an exported tokenizer.json at `path`."""
  spec = {"type": "hf_tokenizer", "path": path}
  if conventions.eos and conventions.eos != vocab_spec.HF_DEFAULT_EOS:
    spec["eos"] = conventions.eos
  return spec
