"""Requests: one per example, built from a task's rows tokenized with the model's tokenizer.

`from_task_rows` tokenizes the rows of `data.task_rows` directly (no TensorFlow: the
scoring path); `from_task` reads a SeqIO task's tokenized dataset. Both give the same
requests, as SeqIO's tokenize preprocessor gives the same ids as the tokenizer.

A request is a shared `prefix` (the prompt's tokens, led by the model's BOS token when it
has one) and one `Branch` per class (or one for a completion). A branch's `context` holds
prompt tokens that are not shared (only with joint tokenization, see below) and its
`target` the tokens that are scored.

What precedes the prompt is the model's convention (`bos_id`, from the family manifest):
T5X's decoder-only models see id 0, as T5X's feature converter shifts it in; GPT-NeoX
(Pythia) sees nothing, as with transformers and the prize pipeline. Encoder-decoder
prompts go to the encoder with nothing before them (pass `bos_id=None`) and, by default,
EOS after them (`eos_id`), as T5's SeqIO tasks and transformers' T5 tokenizer do.

Tokenization (`ScoringOptions.tokenization`):
- "separate" (default, SeqIO's convention): prompt and class are tokenized separately.
- "joint" (the prize's pipeline): prompt+class is tokenized as one string and the last k
  tokens are scored, k being the class's token count alone. Where the tokenizer merges
  across the boundary the contexts differ per class; the common part is still shared.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from invscale_jax import records

if TYPE_CHECKING:  # SeqIO (and TensorFlow) load only where SeqIO tasks are read
  import seqio

  from invscale_jax.data.task_rows import Encoder

SEPARATE = "separate"
JOINT = "joint"


@dataclasses.dataclass(frozen=True)
class Branch:
  context: np.ndarray  # unshared prompt tokens before the target (empty for "separate")
  target: np.ndarray  # scored tokens
  text: str  # the target text (a class, or a completion)

  @property
  def n_bytes(self) -> int:
    return len(self.text.encode("utf-8"))


@dataclasses.dataclass(frozen=True)
class Request:
  example_id: int
  kind: str  # records.CLASS or records.SEQUENCE
  prompt_text: str
  prefix: np.ndarray  # shared prompt tokens (the BOS token first, if the model has one)
  branches: tuple[Branch, ...]
  answer_index: int | None
  n_truncated: int = 0  # prompt tokens cut from the left to fit max_length
  n_demos_dropped: int = 0

  @property
  def class_texts(self) -> tuple[str, ...]:
    return tuple(b.text for b in self.branches)


def _common_prefix_len(seqs: Sequence[np.ndarray]) -> int:
  n = min(len(s) for s in seqs)
  for i in range(n):
    if any(s[i] != seqs[0][i] for s in seqs[1:]):
      return i
  return n


def with_prompt(request: Request, tokens: np.ndarray, bos_id: int | None,
                max_length: int | None, eos_id: int | None = None) -> Request:
  """`request` with prefix `[bos_id] + tokens + [eos_id]` (each id only when not None),
  the tokens cut from the left (keeping BOS and EOS) so that prefix + the longest branch
  fits `max_length`."""
  bos = np.asarray([] if bos_id is None else [bos_id], np.int32)
  eos = np.asarray([] if eos_id is None else [eos_id], np.int32)
  excess = 0
  if max_length is not None:
    longest = max(len(b.context) + len(b.target) for b in request.branches)
    excess = max(0, len(bos) + len(tokens) + len(eos) + longest - max_length)
    if excess > len(tokens):
      raise ValueError(f"example {request.example_id}: a target alone is longer than "
                       f"max_length={max_length}; raise max_length")
  prefix = np.concatenate([bos, np.asarray(tokens, np.int32)[excess:], eos])
  if not len(prefix):
    raise ValueError(f"example {request.example_id}: the prompt has no tokens and the model "
                     f"no BOS token: nothing to condition the target on")
  return dataclasses.replace(request, prefix=prefix, n_truncated=excess)


def _make_request(rows: list[dict], vocabulary: Encoder, tokenization: str,
                  max_length: int | None, bos_id: int | None,
                  eos_id: int | None) -> Request:
  rows = sorted(rows, key=lambda r: int(r["class_index"]))
  first = rows[0]
  texts = [r["targets_pretokenized"].decode("utf-8") for r in rows]
  prompt = first["inputs_pretokenized"].decode("utf-8")
  targets = [np.asarray(r["targets"], np.int32) for r in rows]
  if tokenization == SEPARATE:
    prefix = np.asarray(first["inputs"], np.int32)
    contexts = [prefix[:0]] * len(rows)
  elif tokenization == JOINT:
    joint = [np.asarray(vocabulary.encode(prompt + t), np.int32) for t in texts]
    contexts_full = [j[:len(j) - len(tg)] for j, tg in zip(joint, targets)]
    targets = [j[len(j) - len(tg):] for j, tg in zip(joint, targets)]
    shared = _common_prefix_len(contexts_full)
    prefix = contexts_full[0][:shared]
    contexts = [c[shared:] for c in contexts_full]
  else:
    raise ValueError(f"tokenization: must be {SEPARATE!r} or {JOINT!r}, got {tokenization!r}")
  is_class = int(first["class_index"]) >= 0
  request = Request(
      example_id=int(first["example_id"]),
      kind=records.CLASS if is_class else records.SEQUENCE,
      prompt_text=prompt,
      prefix=prefix,
      branches=tuple(Branch(c, t, x) for c, t, x in zip(contexts, targets, texts)),
      answer_index=int(first["answer_index"]) if is_class else None,
      n_demos_dropped=int(first["n_demos_dropped"]))
  return with_prompt(request, prefix, bos_id, max_length, eos_id)


def from_rows(rows: Iterable[dict], vocabulary: Encoder, tokenization: str = SEPARATE,
              max_length: int | None = None, bos_id: int | None = None,
              limit: int | None = None, eos_id: int | None = None) -> list[Request]:
  """Groups a task's rows by example (in example order) into requests, of the first
  `limit` examples (None: all)."""
  groups: dict[int, list[dict]] = {}
  for row in rows:
    groups.setdefault(int(row["example_id"]), []).append(row)
  return [_make_request(groups[e], vocabulary, tokenization, max_length, bos_id, eos_id)
          for e in sorted(groups)[:limit]]


def from_task(task: seqio.Task, vocabulary: seqio.Vocabulary, tokenization: str = SEPARATE,
              max_length: int | None = None, bos_id: int | None = None,
              limit: int | None = None, eos_id: int | None = None) -> list[Request]:
  """The requests of a SeqIO task built by `seqio_tasks.build_task` (see `from_rows`)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  dataset = task.get_dataset(sequence_length=None, split="test", shuffle=False)
  return from_rows(dataset.as_numpy_iterator(), vocabulary, tokenization, max_length, bos_id,
                   limit, eos_id)


class MemoEncoder:
  """`encode` of a tokenizer, remembered per text: prompts are counted to fit the length
  budget, then tokenized again for their requests."""

  def __init__(self, tokenizer: Encoder):
    self.encode = functools.lru_cache(maxsize=None)(tokenizer.encode)


def from_task_rows(rows: dict[str, list[Any]], tokenizer: Encoder, tokenization: str = SEPARATE,
                   max_length: int | None = None, bos_id: int | None = None,
                   limit: int | None = None, eos_id: int | None = None) -> list[Request]:
  """The requests of a task's untokenized rows (`task_rows.rows_for`), tokenized as SeqIO's
  tokenize preprocessor does (inputs and targets separately; `eos_id`: EOS after an
  encoder-decoder prompt), without TensorFlow; see `from_rows`."""
  keep = set(sorted(set(rows["example_id"]))[:limit])
  tokenized = []
  for i, example_id in enumerate(rows["example_id"]):
    if example_id not in keep:
      continue
    row = {k: v[i] for k, v in rows.items()}
    inputs, targets = row["inputs"], row["targets"]
    row.update(inputs=tokenizer.encode(inputs), targets=tokenizer.encode(targets),
               inputs_pretokenized=inputs.encode("utf-8"),
               targets_pretokenized=targets.encode("utf-8"))
    tokenized.append(row)
  return from_rows(tokenized, tokenizer, tokenization, max_length, bos_id, eos_id=eos_id)
