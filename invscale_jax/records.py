"""Result records: what the engine writes and the report reads, one JSON object per line.

A chunk (see `results` for where chunks live) is the records of whole examples. An example
has, by the run's `record_kinds`: one CLASS record per class, one SEQUENCE record, and/or
one GENERATION record. Every number in a record is finite: a model that produces NaN is
an error, never a record.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable, Sequence

# Kinds of record.
CLASS = "class"  # one class of a classification example, scored by log-likelihood
SEQUENCE = "sequence"  # one completion of a sequence-probability example
GENERATION = "generation"  # one decoded (chain-of-thought) answer for an example


@dataclasses.dataclass(frozen=True)
class Record:
  """One scored row.

  For CLASS records `logprob` is log p(class | prompt) summed over the class tokens; for
  SEQUENCE records it is the summed log-probability of the completion. GENERATION records
  carry the decoded text and the class it was mapped to (`class_index`, None when the
  answer could not be parsed; `logprob` is then the score of that class when the run
  also rank-classified after generating, else None).
  """

  run_key: str
  model: str
  task: str  # release name, e.g. "memo-trap"
  variant: str  # e.g. "zero_shot", "1_shot", "cot_1_shot"
  example_id: int  # row index in the task file (0-based)
  kind: str  # CLASS, SEQUENCE or GENERATION
  class_index: int | None
  n_classes: int  # 1 for SEQUENCE
  answer_index: int | None  # None for SEQUENCE
  logprob: float | None
  n_tokens: int  # target tokens scored (or generated)
  n_bytes: int  # UTF-8 bytes of the scored target text (for per-byte normalisation)
  is_correct: bool | None  # class_index == answer_index; None for SEQUENCE
  token_logprobs: tuple[float, ...] | None = None
  generation: str | None = None
  parsed: bool | None = None  # GENERATION only: did the answer map to a class
  n_truncated: int = 0  # prompt tokens cut from the left to fit max_length
  n_demos_dropped: int = 0  # few-shot / CoT demonstrations left out to fit max_length

  def to_json(self) -> str:
    d = dataclasses.asdict(self)
    if d["token_logprobs"] is not None:
      d["token_logprobs"] = list(d["token_logprobs"])
    return json.dumps(d, ensure_ascii=False, sort_keys=True)

  @classmethod
  def from_dict(cls, d: Any) -> "Record":
    if not isinstance(d, dict):
      raise ValueError(f"must be a JSON object, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"unknown record fields {sorted(unknown)}")
    for name in ("example_id", "n_classes", "n_tokens", "n_bytes"):
      if not (_is_int(d.get(name)) and d[name] >= 0):
        raise ValueError(f"{name}: must be an integer >= 0, got {_short(d.get(name))}")
    for name in ("is_correct", "parsed"):
      if d.get(name) is not None and not isinstance(d[name], bool):
        raise ValueError(f"{name}: must be true, false or null, got {_short(d[name])}")
    if d.get("kind") not in KINDS:
      raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {d.get('kind')!r}")
    for name in ("class_index", "answer_index"):
      if d.get(name) is not None and not _is_int(d[name]):
        raise ValueError(f"{name}: must be an integer or null, got {d[name]!r}")
    logprob = d.get("logprob")
    if logprob is not None and not _is_logprob(logprob):
      raise ValueError(f"logprob: must be a finite number <= 0 (a log-probability), "
                       f"got {logprob!r}")
    tokens = d.get("token_logprobs")
    if tokens is not None:
      if not (isinstance(tokens, list) and all(_is_logprob(v) for v in tokens)):
        raise ValueError(f"token_logprobs: must be a list of finite numbers <= 0 "
                         f"(log-probabilities), got {_short(tokens)}")
      d = dict(d, token_logprobs=tuple(tokens))
    try:
      return cls(**d)
    except TypeError as e:  # a missing field
      raise ValueError(str(e)) from None


KINDS = (CLASS, SEQUENCE, GENERATION)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_logprob(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and value <= 0)


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def format_chunk(records: Iterable[Record]) -> bytes:
  return "".join(r.to_json() + "\n" for r in records).encode("utf-8")


def parse_chunk(path: str, data: bytes) -> list[Record]:
  """The records of a chunk's bytes; a bad or truncated line raises ValueError naming
  PATH:LINE."""
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
  if text and not text.endswith("\n"):
    raise ValueError(f"{path}:{text.count(chr(10)) + 1}: truncated (no end of line)")
  out = []
  for lineno, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      out.append(Record.from_dict(json.loads(line)))
    except (ValueError, TypeError, RecursionError) as e:
      raise ValueError(f"{path}:{lineno}: record: {e}") from None
  return out


def example_problem(recs: Sequence[Record], kinds: Sequence[str]) -> str | None:
  """What is wrong with the records of one example (None: they are all there, once)."""
  by_kind: dict[str, list[Record]] = {}
  for r in recs:
    by_kind.setdefault(r.kind, []).append(r)
  if set(by_kind) != set(kinds):
    return f"has {sorted(by_kind)} records, expected {sorted(kinds)}"
  for kind, group in by_kind.items():
    if kind == CLASS:
      n, indices = group[0].n_classes, [r.class_index for r in group]
      if None in indices or sorted(indices) != list(range(n)) or any(
          r.n_classes != n for r in group):
        return f"classes {indices} of {n}"
    elif len(group) != 1:
      return f"{len(group)} {kind} records, expected 1"
  return None


def check_finite(recs: Iterable[Record], label: str) -> None:
  """Raises ValueError when a score is NaN or infinite (e.g. NaN weights)."""
  for r in recs:
    values = () if r.logprob is None else (r.logprob, *(r.token_logprobs or ()))
    if not all(math.isfinite(v) for v in values):
      raise ValueError(f"{label}: the model scored example {r.example_id} as {r.logprob} "
                       f"(not a finite number): its checkpoint may hold NaN or infinite "
                       f"weights; nothing of this chunk was written")


