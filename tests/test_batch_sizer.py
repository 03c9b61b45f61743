"""`--tokens_per_batch 0`: batches as large as fit in device memory, sized from XLA's own
memory analysis once per shape and remembered; scores do not change."""

from __future__ import annotations

import pytest

from invscale_jax.engine import batch_sizer, partitioning
from invscale_jax.engine.scorer import Scorer
from test_engine_exact import assert_same, mixed_requests  # pylint: disable=unused-import

SHAPE = (256, 16, 0)  # row length, target slots, encoder length


@pytest.fixture
def sizer_parts(small_model):
  model, params = small_model("decoder_only")
  scorer = Scorer(model, params, partitioning.make_mesh(), 1024)
  return model, params, scorer


def make_sizer(parts, limit_bytes=None, identity="tiny"):
  model, params, scorer = parts
  return batch_sizer.BatchSizer(scorer._score, params, partitioning.make_mesh(), identity,
                                encoder_decoder=False, limit_bytes=limit_bytes)


def test_rows_fit_the_budget_and_come_close_to_it(sizer_parts):
  probe = make_sizer(sizer_parts, limit_bytes=1 << 40)
  limit = probe._bytes(10, SHAPE) + 1000  # room for 10 rows
  sizer = make_sizer(sizer_parts, limit_bytes=limit)
  rows = sizer.rows(*SHAPE)
  assert sizer._bytes(rows, SHAPE) <= limit and rows >= 8, rows
  # Never fewer than one row per device, never more than the token cap.
  assert make_sizer(sizer_parts, limit_bytes=1).rows(*SHAPE) == 1
  huge = make_sizer(sizer_parts, limit_bytes=1 << 50).rows(*SHAPE)
  assert huge == batch_sizer.MAX_TOKENS_PER_DEVICE // SHAPE[0]


def test_measurements_are_remembered(sizer_parts, monkeypatch):
  first = make_sizer(sizer_parts, limit_bytes=1 << 30, identity="remembered").rows(*SHAPE)

  def no_compile(*args):
    raise AssertionError("compiled again")

  monkeypatch.setattr(batch_sizer.BatchSizer, "_bytes", no_compile)
  assert make_sizer(sizer_parts, limit_bytes=1 << 30, identity="remembered").rows(*SHAPE) == first


def test_sized_batches_score_the_same(small_model, mixed_requests):
  model, params = small_model("decoder_only")
  mesh = partitioning.make_mesh()
  fixed = Scorer(model, params, mesh, 512).score(mixed_requests)
  sized = Scorer(model, params, mesh, 0)
  assert callable(sized.tokens_per_batch)
  assert_same(sized.score(mixed_requests), fixed)
  assert batch_sizer.free_bytes(mesh.devices.flat[0]) > 0
