"""Packing, checked without a model: every target must see exactly its own sequence.

For each target slot we apply the attention rule the models implement (same nonzero
segment, key index <= query index, key branch 0 or the query's branch) and check the
visible tokens and positions are prefix (BOS + prompt) + context + the earlier target
tokens, or for encoder-decoder the decoder start token + the earlier target tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

from invscale_jax import records
from invscale_jax.engine import packing
from invscale_jax.engine.requests import Branch, Request


def random_requests(n: int, seed: int, with_context: bool = False) -> list[Request]:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    k = int(rng.integers(1, 5))
    branches = tuple(
        Branch(context=rng.integers(3, 300, int(rng.integers(0, 3)) if with_context else 0).astype(np.int32),
               target=rng.integers(3, 300, int(rng.integers(1, 6))).astype(np.int32), text="x")
        for _ in range(k))
    prefix = rng.integers(3, 300, int(rng.integers(1, 120))).astype(np.int32)
    out.append(Request(i, records.CLASS, "", prefix, branches, answer_index=0))
  return out


def visible(arrays: dict[str, np.ndarray], row: int, q: int) -> tuple[list[int], list[int]]:
  seg, br = arrays["segment_ids"][row], arrays["branch_ids"][row]
  keys = [k for k in range(q + 1)
          if seg[k] == seg[q] != 0 and (br[k] == 0 or br[k] == br[q])]
  return arrays["tokens"][row, keys].tolist(), arrays["positions"][row, keys].tolist()


def check_batches(requests: list[Request], architecture: str, batches: list[packing.Batch]) -> None:
  seen = set()
  n_targets = sum(len(b.target) for r in requests for b in r.branches)
  assert sum(int(b.arrays["target_mask"].sum()) for b in batches) == n_targets
  for batch in batches:
    a = batch.arrays
    (rows, length), groups = a["tokens"].shape, a["target_index"].shape[0]
    assert rows % groups == 0
    for s in batch.slots:
      seen.add((s.request, s.branch))
      r, b = requests[s.request], requests[s.request].branches[s.branch]
      assert a["target_mask"][s.group, s.start:s.start + s.length].all()
      assert s.group == s.row // (rows // groups)
      for u in range(s.length):
        t = s.start + u
        assert a["target_ids"][s.group, t] == b.target[u]
        local_row, q = divmod(int(a["target_index"][s.group, t]), length)
        assert local_row == s.row % (rows // groups)
        tokens, positions = visible(a, s.row, q)
        if architecture == "encoder_decoder":
          expected = [packing.DECODER_START, *b.target[:u].tolist()]
          enc = a["encoder_tokens"][s.row][a["encoder_segment_ids"][s.row] > 0].tolist()
          assert enc == r.prefix.tolist()
        else:
          expected = [*r.prefix.tolist(), *b.context.tolist(), *b.target[:u].tolist()]
        assert tokens == expected
        assert positions == list(range(len(expected)))
  assert seen == {(i, j) for i, r in enumerate(requests) for j in range(len(r.branches))}


@pytest.mark.parametrize("architecture", ["decoder_only", "encoder_decoder"])
@pytest.mark.parametrize("tokens_per_batch", [64, 1024])
def test_every_target_sees_exactly_its_sequence(architecture: str, tokens_per_batch: int) -> None:
  requests = random_requests(40, seed=1, with_context=architecture == "decoder_only")
  batches = list(packing.make_batches(requests, architecture, tokens_per_batch, row_multiple=2))
  check_batches(requests, architecture, batches)


def test_packing_puts_several_requests_in_a_row_and_shapes_are_bounded() -> None:
  requests = random_requests(200, seed=2)
  batches = list(packing.make_batches(requests, "decoder_only", 2048))
  shapes = {tuple(b.arrays["tokens"].shape) + tuple(b.arrays["target_ids"].shape) for b in batches}
  assert len(shapes) <= 6  # one shape per length bucket
  rows_used = sum(len({s.row for s in b.slots}) for b in batches)
  assert rows_used < len(requests)  # short requests were packed together
  assert max(np.max(b.arrays["segment_ids"]) for b in batches) > 1


def test_unpacked_rows_hold_one_request() -> None:
  requests = random_requests(30, seed=3)
  for b in packing.make_batches(requests, "decoder_only", 512, pack=False):
    assert np.max(b.arrays["segment_ids"]) <= 1


def test_bucket_is_smallest_power_of_two() -> None:
  assert [packing.bucket(n) for n in (1, 32, 33, 64, 65, 1000)] == [32, 32, 64, 64, 128, 1024]


def test_short_requests_fill_rows_and_only_real_targets_get_slots() -> None:
  """Short prompts share rows sized to them, and target slots are the real targets plus
  at most a fine bucket's padding (not a fixed number per row)."""
  requests = random_requests(300, seed=4)
  for r in requests[:200]:  # mostly short, as memo-trap's
    object.__setattr__(r, "prefix", r.prefix[:20])
  batches = list(packing.make_batches(requests, "decoder_only", 8192))
  check_batches(requests, "decoder_only", batches)
  real = sum(packing.decoder_length(r) for r in requests)
  positions = sum(b.arrays["tokens"].size for b in batches)
  targets = sum(len(b.target) for r in requests for b in r.branches)
  slots = sum(b.arrays["target_ids"].size for b in batches)
  assert positions <= 1.3 * real
  assert slots <= 1.3 * targets + 8 * len(batches)
  assert len({b.arrays["tokens"].shape for b in batches}) <= 3


@pytest.mark.parametrize("n,want", [(1, 1), (8, 8), (9, 10), (17, 20), (100, 112), (647, 768),
                                    (1025, 1280), (2048, 2048)])
def test_fine_bucket_steps_a_quarter_of_a_power_of_two(n: int, want: int) -> None:
  assert packing.fine_bucket(n) == want


def test_rows_of_a_shape_split_evenly_into_batches() -> None:
  assert packing.balanced_rows(165, 64, 1) == (3, 56)
  assert packing.balanced_rows(44, 64, 1) == (1, 48)
  assert packing.balanced_rows(5, 64, 2) == (1, 6)
  batches, rows = packing.balanced_rows(1000, 64, 4)
  assert rows <= 64 and rows % 4 == 0 and batches * rows >= 1000
