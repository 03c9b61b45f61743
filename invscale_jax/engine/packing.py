"""Packing requests into fixed-shape batches.

Decoder-only row for one request (the prefix starts with the model's BOS, if any)::

  [p1 .. pm, ctx_1 + c1[:-1], ctx_2 + c2[:-1], ...]
   branch 0 (shared)  branch 1        branch 2

Branch tokens continue the prompt's positions (m, m+1, ...) and attend to branch 0 and
to their own branch only, so each class sees exactly `prefix + class`; the prompt
is computed once. The first target token of every branch is read from the hidden state of
the last prompt token. Several requests share a row when they fit (`segment_ids`).

Encoder-decoder: the prompt goes to the encoder once; each class is a decoder branch
`[DECODER_START] + c[:-1]` with positions from 0. One request per row.

Rows are grouped by length bucket (powers of two), and every batch of a bucket has the same
shape (rows and target slots), so the number of compilations stays small.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
  from invscale_jax.engine.requests import Request

DECODER_START = 0  # T5's decoder start token (encoder-decoder models)
MIN_BUCKET = 32
MIN_TARGETS = 16


@dataclasses.dataclass(frozen=True)
class Slot:
  """Where one branch's target log-probabilities land in a batch's output [B, M]."""

  request: int  # index into the request list
  branch: int
  row: int
  start: int  # first target slot
  length: int


@dataclasses.dataclass
class Batch:
  arrays: dict[str, np.ndarray]
  slots: list[Slot]
  n_tokens: int  # non-padding tokens (decoder + encoder)


def bucket(n: int, minimum: int = MIN_BUCKET) -> int:
  """The smallest power of two >= max(n, minimum)."""
  return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def batch_rows(n: int, per_batch: int, row_multiple: int) -> int:
  """Rows of a batch holding n rows: `per_batch`, or for a last, partial batch the next
  power of two (a multiple of `row_multiple`), so padding stays small and shapes few."""
  rows = min(per_batch, bucket(n, 1))
  return -(-rows // row_multiple) * row_multiple


def decoder_length(r: Request) -> int:
  """Row tokens a request needs in a decoder-only row."""
  return len(r.prefix) + sum(len(b.context) + len(b.target) - 1 for b in r.branches)


def request_tokens(r: Request, encoder_decoder: bool) -> int:
  """Tokens the engine computes for a request: the prompt once, then every branch."""
  if encoder_decoder:
    return len(r.prefix) + sum(len(b.target) for b in r.branches)
  return decoder_length(r)


class _Row:
  """A row being filled: token lists and target lists for one or more requests."""

  def __init__(self):
    self.tokens, self.positions, self.segments, self.branches = [], [], [], []
    self.target_index, self.target_ids = [], []
    self.encoder_tokens: list[int] = []
    self.slots: list[tuple[int, int, int, int]] = []  # (request, branch, start, length)

  def add_decoder_only(self, index: int, r: Request) -> None:
    segment = 1 + (self.segments[-1] if self.segments else 0)
    base = len(self.tokens)
    prompt = r.prefix.tolist()
    self.tokens += prompt
    self.positions += range(len(prompt))
    self.segments += [segment] * len(prompt)
    self.branches += [0] * len(prompt)
    last_prompt = base + len(prompt) - 1
    for j, b in enumerate(r.branches):
      seq = [*b.context.tolist(), *b.target.tolist()]
      start = len(self.tokens)
      self.tokens += seq[:-1]
      self.positions += range(len(prompt), len(prompt) + len(seq) - 1)
      self.segments += [segment] * (len(seq) - 1)
      self.branches += [j + 1] * (len(seq) - 1)
      # Token u of seq is predicted by the hidden state at the token before it.
      n_ctx = len(b.context)
      read = [last_prompt if u == 0 else start + u - 1 for u in range(n_ctx, len(seq))]
      self.slots.append((index, j, len(self.target_ids), len(b.target)))
      self.target_index += read
      self.target_ids += b.target.tolist()

  def add_encoder_decoder(self, index: int, r: Request) -> None:
    self.encoder_tokens += r.prefix.tolist()
    for j, b in enumerate(r.branches):
      start = len(self.tokens)
      inputs = [DECODER_START, *b.target[:-1].tolist()]
      self.tokens += inputs
      self.positions += range(len(inputs))
      self.segments += [1] * len(inputs)
      self.branches += [j + 1] * len(inputs)
      self.slots.append((index, j, len(self.target_ids), len(b.target)))
      self.target_index += range(start, start + len(inputs))
      self.target_ids += b.target.tolist()


def _fill(rows: Sequence[_Row], length: int, targets: int, encoder_length: int) -> dict[str, np.ndarray]:
  n = len(rows)
  def pad(values: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((n, width), np.int32)
    for i, v in enumerate(values):
      out[i, :len(v)] = v
    return out
  arrays = {
      "tokens": pad([r.tokens for r in rows], length),
      "positions": pad([r.positions for r in rows], length),
      "segment_ids": pad([r.segments for r in rows], length),
      "branch_ids": pad([r.branches for r in rows], length),
      "target_index": pad([r.target_index for r in rows], targets),
      "target_ids": pad([r.target_ids for r in rows], targets),
      "target_mask": pad([[1] * len(r.target_ids) for r in rows], targets),
  }
  if encoder_length:
    arrays["encoder_tokens"] = pad([r.encoder_tokens for r in rows], encoder_length)
    arrays["encoder_segment_ids"] = pad([[1] * len(r.encoder_tokens) for r in rows], encoder_length)
  return arrays


def _rows_decoder_only(requests: Sequence[Request], order: Sequence[int],
                       pack: bool) -> list[tuple[int, _Row]]:
  """Next-fit packing of requests (in `order`, longest first) into rows: a row is the bucket
  length of its first request, and later (shorter) ones fill the room left in it."""
  rows: list[tuple[int, _Row]] = []
  current: _Row | None = None
  used = width = 0
  for i in order:
    need = decoder_length(requests[i])
    if current is None or not pack or used + need > width:
      current, used, width = _Row(), 0, bucket(need)
      rows.append((width, current))
    current.add_decoder_only(i, requests[i])
    used += need
  return rows


RowsFor = Callable[[int, int, int], int]  # (row length, target slots, encoder length) -> rows


def make_batches(requests: Sequence[Request], architecture: str,
                 tokens_per_batch: int | RowsFor, row_multiple: int = 1,
                 pack: bool = True) -> Iterator[Batch]:
  """Fixed-shape batches covering every request, longest first.

  `tokens_per_batch` sets rows per batch: tokens_per_batch // row length, or a function
  giving the rows of each batch shape (e.g. `BatchSizer.rows`); rows are at least
  `row_multiple` and a multiple of it (e.g. the data-parallel size).
  """
  encoder_decoder = architecture == "encoder_decoder"
  if encoder_decoder:
    order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].prefix), i))
    rows = []
    for i in order:
      row = _Row()
      row.add_encoder_decoder(i, requests[i])
      rows.append(((bucket(len(row.encoder_tokens)), bucket(len(row.tokens))), row))
  else:
    order = sorted(range(len(requests)), key=lambda i: (-decoder_length(requests[i]), i))
    rows = [((0, w), r) for w, r in _rows_decoder_only(requests, order, pack)]
  by_shape: dict[tuple[int, int], list[_Row]] = {}
  for shape, row in rows:
    by_shape.setdefault(shape, []).append(row)
  for (encoder_length, length), group in by_shape.items():
    targets = bucket(max(len(r.target_ids) for r in group), MIN_TARGETS)
    if callable(tokens_per_batch):
      per_batch = tokens_per_batch(length, targets, encoder_length)
    else:
      per_batch = max(1, tokens_per_batch // (length + encoder_length))
    per_batch = max(per_batch // row_multiple * row_multiple, row_multiple)
    for start in range(0, len(group), per_batch):
      chunk = list(group[start:start + per_batch])
      filled = chunk + [_Row() for _ in range(batch_rows(len(chunk), per_batch, row_multiple)
                                               - len(chunk))]
      slots = [Slot(req, br, row, s, n) for row, r in enumerate(chunk) for req, br, s, n in r.slots]
      n_tokens = sum(len(r.tokens) + len(r.encoder_tokens) for r in chunk)
      yield Batch(_fill(filled, length, targets, encoder_length), slots, n_tokens)
