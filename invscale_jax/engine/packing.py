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

Rows are as long as their first (longest) request needs, rounded by `fine_bucket` (eight
sizes per power of two), and at least PACK_WIDTH when packing, so short prompts fill rows
rather than pad them. The rows of one length are dealt out evenly to batches of one shape
(rows and target slots), so the number of compilations stays small. Target slots are
gathered per row group (the data-parallel shards): the real targets one after the other,
padded to a `fine_bucket`, so logits and their logsumexp are computed for real targets
only, not for a fixed number of slots per row.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
  from invscale_jax.engine.requests import Request

DECODER_START = 0  # T5's decoder start token (encoder-decoder models)
MIN_BUCKET = 32
PACK_WIDTH = 256  # rows of short requests are at least this wide, so several share a row
MIN_TARGETS = 8
_FIT_WINDOW = 64  # open rows a request may go to (first fit among the latest ones)


@dataclasses.dataclass(frozen=True)
class Slot:
  """Where one branch's target log-probabilities land in a batch's output [G, T]."""

  request: int  # index into the request list
  branch: int
  row: int  # batch row holding the branch
  group: int  # row group (output row) holding its targets
  start: int  # first target slot within the group
  length: int


@dataclasses.dataclass
class Batch:
  arrays: dict[str, np.ndarray]
  slots: list[Slot]
  n_tokens: int  # non-padding tokens (decoder + encoder)


def bucket(n: int, minimum: int = MIN_BUCKET) -> int:
  """The smallest power of two >= max(n, minimum)."""
  return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def fine_bucket(n: int, minimum: int = 1, per_octave: int = 4) -> int:
  """n rounded up to `per_octave` (a power of two) steps per power of two; with 4: 1, 2,
  3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ..., 512, 640, 768, 896, 1024, ... (at most 25%
  padding, few distinct sizes); with 8: ..., 512, 576, 640, ..., 960, 1024, 1152, ..."""
  n = max(int(n), minimum, 1)
  step = 1 << max(0, (n - 1).bit_length() - per_octave.bit_length())
  return -(-n // step) * step


def balanced_rows(n: int, per_batch: int, row_multiple: int) -> tuple[int, int]:
  """(batches, rows of each) holding n rows at most `per_batch` (a multiple of
  `row_multiple`) at a time: the batches split n evenly and their rows are a
  `fine_bucket` (a multiple of `row_multiple`), so padding stays small and shapes few."""
  batches = -(-n // per_batch)
  rows = fine_bucket(-(-n // batches))
  rows = min(per_batch, -(-rows // row_multiple) * row_multiple)
  return -(-n // rows), rows


def batch_rows(n: int, per_batch: int, row_multiple: int) -> int:
  """Rows of a batch holding n rows: `per_batch`, or for a last, partial batch the next
  power of two (a multiple of `row_multiple`), so padding stays small and shapes few."""
  rows = min(per_batch, bucket(n, 1))
  return -(-rows // row_multiple) * row_multiple


def row_length(need: int) -> int:
  """Length of a row whose first (longest) request needs `need` tokens: a `fine_bucket` of
  eight steps per power of two (at most 12.5% padding; a multiple of 64 from 512 on, as
  blockwise attention's blocks), at least MIN_BUCKET. Measured on hindsight-neglect's
  647-token rows (Pythia-70M shape, 2 cores): 704-token rows score 1.14x faster than
  768-token ones."""
  return fine_bucket(need, MIN_BUCKET, per_octave=8)


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


def _fill(rows: Sequence[_Row], length: int, groups: int, targets: int,
          encoder_length: int) -> tuple[dict[str, np.ndarray], list[list[int]]]:
  """The batch arrays of `rows` (their count a multiple of `groups`), and the first
  target slot of each row within its group."""
  n, per_group = len(rows), len(rows) // groups
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
  }
  # Targets of a group's rows, one after the other, indexing its flattened rows.
  index, ids, offsets = [], [], []
  for g in range(groups):
    members = rows[g * per_group:(g + 1) * per_group]
    offsets.append(np.cumsum([0] + [len(r.target_ids) for r in members])[:-1].tolist())
    index.append([i * length + t for i, r in enumerate(members) for t in r.target_index])
    ids.append([t for r in members for t in r.target_ids])
  out = np.zeros((groups, targets), np.int32)
  arrays["target_index"], arrays["target_ids"], arrays["target_mask"] = (
      out.copy(), out.copy(), out.copy())
  for g in range(groups):
    arrays["target_index"][g, :len(index[g])] = index[g]
    arrays["target_ids"][g, :len(ids[g])] = ids[g]
    arrays["target_mask"][g, :len(ids[g])] = 1
  if encoder_length:
    arrays["encoder_tokens"] = pad([r.encoder_tokens for r in rows], encoder_length)
    arrays["encoder_segment_ids"] = pad([[1] * len(r.encoder_tokens) for r in rows], encoder_length)
  return arrays, offsets


def _rows_decoder_only(requests: Sequence[Request], order: Sequence[int],
                       pack: bool) -> list[tuple[int, _Row]]:
  """First-fit packing of requests (in `order`, longest first) into rows: a row is as
  long as its first request needs (`row_length`, at least PACK_WIDTH when packing), and
  later (shorter) requests go to the first of the latest open rows with room for them."""
  rows: list[tuple[int, _Row]] = []
  room: list[list] = []  # [room left, row], open rows, oldest first
  for i in order:
    need = decoder_length(requests[i])
    target = next((entry for entry in room[-_FIT_WINDOW:] if entry[0] >= need), None) if pack else None
    if target is None:
      width = max(row_length(need), PACK_WIDTH if pack else 0)
      target = [width, _Row()]
      rows.append((width, target[1]))
      room.append(target)
    target[1].add_decoder_only(i, requests[i])
    target[0] -= need
    if pack and target[0] < MIN_BUCKET // 2:  # nearly full: stop looking at it
      room.remove(target)
  return rows


RowsFor = Callable[[int, int, int], int]  # (row length, target slots per row, encoder length) -> rows


def make_batches(requests: Sequence[Request], architecture: str,
                 tokens_per_batch: int | RowsFor, row_multiple: int = 1,
                 pack: bool = True) -> Iterator[Batch]:
  """Fixed-shape batches covering every request, longest first.

  `tokens_per_batch` bounds rows per batch: tokens_per_batch // row length, or a function
  giving the most rows of each row shape (e.g. `BatchSizer.rows`, asked with the most
  targets a row of that shape holds); rows are a multiple of `row_multiple` (e.g. the
  data-parallel size), which is also the number of row groups: targets are gathered per
  group, only the real ones plus a little padding (`fine_bucket`), never a fixed number
  per row. The rows of a shape are split evenly into batches of one shape.
  """
  encoder_decoder = architecture == "encoder_decoder"
  if encoder_decoder:
    order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].prefix), i))
    rows = []
    for i in order:
      row = _Row()
      row.add_encoder_decoder(i, requests[i])
      rows.append(((row_length(len(row.encoder_tokens)), row_length(len(row.tokens))), row))
  else:
    order = sorted(range(len(requests)), key=lambda i: (-decoder_length(requests[i]), i))
    rows = [((0, w), r) for w, r in _rows_decoder_only(requests, order, pack)]
  by_shape: dict[tuple[int, int], list[_Row]] = {}
  for shape, row in rows:
    by_shape.setdefault(shape, []).append(row)
  for (encoder_length, length), group in by_shape.items():
    if callable(tokens_per_batch):
      most_targets = bucket(max(len(r.target_ids) for r in group), MIN_TARGETS)
      per_batch = tokens_per_batch(length, most_targets, encoder_length)
    else:
      per_batch = max(1, tokens_per_batch // (length + encoder_length))
    per_batch = max(per_batch // row_multiple * row_multiple, row_multiple)
    n_batches, n_rows = balanced_rows(len(group), per_batch, row_multiple)
    chunks = [group[k::n_batches] for k in range(n_batches)]  # alike in targets too
    per_group = n_rows // row_multiple
    targets = fine_bucket(max(sum(len(r.target_ids) for r in c[g * per_group:(g + 1) * per_group])
                              for c in chunks for g in range(row_multiple)), MIN_TARGETS)
    for chunk in chunks:
      filled = chunk + [_Row() for _ in range(n_rows - len(chunk))]
      arrays, offsets = _fill(filled, length, row_multiple, targets, encoder_length)
      slots = [Slot(req, br, row, row // per_group, offsets[row // per_group][row % per_group] + s, n)
               for row, r in enumerate(chunk) for req, br, s, n in r.slots]
      n_tokens = sum(len(r.tokens) + len(r.encoder_tokens) for r in chunk)
      yield Batch(arrays, slots, n_tokens)
