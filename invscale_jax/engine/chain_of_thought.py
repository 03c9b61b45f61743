"""Chain-of-thought runs: generate, read the answer, and optionally score the classes.

1. The model continues each CoT prompt (`Generator`); the text is cut at the first EOS and
   at the task's stop strings.
2. The answer after the last "So the answer is" is mapped to a class (`extract.parse`);
   no match counts as wrong and is reported as unparseable.
3. Generate, then score (`score_after=True`): the classes are rank-classified after
   prompt + generated rationale + " So the answer is", which gives a loss as well.
Sequence-probability requests (prompt-injection) generate nothing: they are scored after
the CoT prompt (see `data/cot.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from invscale_jax import tokenizer as tokenizer_lib
from invscale_jax.data import cot, extract
from invscale_jax.engine.generate import Generator
from invscale_jax.engine.requests import Request, with_prompt


@dataclasses.dataclass(frozen=True)
class Generation:
  text: str  # the continuation, cut at EOS and stop strings
  n_tokens: int  # generated tokens kept
  class_index: int | None  # parsed answer (None: unparseable)


def decode_text(tokens: np.ndarray, vocabulary: tokenizer_lib.Tokenizer, stops: Sequence[str]) -> tuple[str, int]:
  """Text up to EOS and the first stop string, and how many tokens that kept."""
  ids = tokens.tolist()
  if vocabulary.eos_id is not None and vocabulary.eos_id in ids:
    ids = ids[:ids.index(vocabulary.eos_id)]
  text = cot.truncate(vocabulary.decode(ids), stops)
  return text, min(len(ids), len(vocabulary.encode(text)))


def generate(requests: Sequence[Request], task: str, generator: Generator,
             vocabulary: tokenizer_lib.Tokenizer,
             progress: Callable[[int], None] | None = None) -> list[Generation]:
  """Generations of CLASS requests, parsed into classes."""
  outputs = generator.generate(requests, progress)
  stops = cot.stop_strings(task)
  result = []
  for r, tokens in zip(requests, outputs):
    text, n = decode_text(tokens, vocabulary, stops)
    index, _ = extract.parse(text, r.class_texts)
    result.append(Generation(text, n, index))
  return result


def scoring_requests(requests: Sequence[Request], generations: Sequence[Generation],
                     vocabulary: tokenizer_lib.Tokenizer, max_length: int | None,
                     bos_id: int | None, eos_id: int | None = None) -> list[Request]:
  """Requests whose prompt is prompt + generated rationale + " So the answer is"."""
  out = []
  for r, g in zip(requests, generations):
    tokens = np.asarray(vocabulary.encode(cot.scoring_prefix(r.prompt_text, g.text)), np.int32)
    branches = tuple(dataclasses.replace(b, context=b.context[:0]) for b in r.branches)
    out.append(with_prompt(dataclasses.replace(r, branches=branches), tokens, bos_id, max_length,
                           eos_id))
  return out
