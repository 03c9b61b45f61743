"""The naive path: what T5X's score mode does, used as exactness reference and baseline.

One row per (prompt, class): `prefix + context + class` (decoder-only; the prefix holds the
model's BOS, if any) or encoder `prefix` / decoder `DECODER_START + class`
(encoder-decoder), logits and log-softmax at EVERY position, no prefix sharing, no packing. With `length=None` each row is its own batch at
its exact length (the brute-force reference); with a fixed `length` rows are padded to it
and batched (the T5X-style baseline).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from invscale_jax.engine.packing import DECODER_START
from invscale_jax.engine.requests import Request


def _row(r: Request, branch: int, encoder_decoder: bool) -> tuple[list[int], list[int], int]:
  """(decoder tokens incl. the last target, encoder tokens, number of target tokens)."""
  b = r.branches[branch]
  if encoder_decoder:
    return [DECODER_START, *b.target.tolist()], r.prefix.tolist(), len(b.target)
  return [*r.prefix.tolist(), *b.context.tolist(), *b.target.tolist()], [], len(b.target)


def _arrays(rows: Sequence[tuple[list[int], list[int], int]], length: int,
            encoder_length: int) -> dict[str, np.ndarray]:
  """Full-sequence batch: targets are every next token; `target_mask` marks the class."""
  n = len(rows)
  a = {k: np.zeros((n, length), np.int32) for k in (
      "tokens", "positions", "segment_ids", "branch_ids", "target_index", "target_ids",
      "target_mask")}
  if encoder_length:
    a["encoder_tokens"] = np.zeros((n, encoder_length), np.int32)
    a["encoder_segment_ids"] = np.zeros((n, encoder_length), np.int32)
  for i, (seq, enc, n_target) in enumerate(rows):
    m = len(seq) - 1
    a["tokens"][i, :m] = seq[:-1]
    a["positions"][i, :m] = np.arange(m)
    a["segment_ids"][i, :m] = 1
    a["target_index"][i, :m] = np.arange(m)
    a["target_ids"][i, :m] = seq[1:]
    a["target_mask"][i, m - n_target:m] = 1
    if encoder_length:
      a["encoder_tokens"][i, :len(enc)] = enc
      a["encoder_segment_ids"][i, :len(enc)] = 1
  return a


def score(model: Any, params: Any, requests: Sequence[Request], length: int | None = None,
          batch_size: int = 1) -> list[list[np.ndarray]]:
  """Per-token target log-probabilities per branch, computed the naive way."""
  encoder_decoder = model.architecture == "encoder_decoder"
  rows = [(i, j, _row(r, j, encoder_decoder))
          for i, r in enumerate(requests) for j in range(len(r.branches))]
  fn = jax.jit(model.score)
  result: list[list[np.ndarray]] = [[None] * len(r.branches) for r in requests]
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    L = length or max(len(seq) - 1 for _, _, (seq, _, _) in chunk)
    Le = (length or max(len(enc) for _, _, (_, enc, _) in chunk)) if encoder_decoder else 0
    arrays = _arrays([row for _, _, row in chunk], L, Le)
    out = np.asarray(fn(params, arrays))
    for k, (i, j, (seq, _, n_target)) in enumerate(chunk):
      m = len(seq) - 1
      result[i][j] = out[k, m - n_target:m].astype(np.float32)
  return result
