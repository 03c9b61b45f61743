"""Blockwise attention equals dense attention: on random packed rows (segments, padding,
branches, causal, sliding window, T5 relative-position bias, grouped-query heads), and
through the whole engine against the dense brute-force reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqio

import seqio_tasks
from invscale_jax.engine import partitioning, reference, requests
from invscale_jax.engine.scorer import Scorer
from invscale_jax.models.model import Model
from invscale_jax.models import attention, position
from invscale_jax.models.masks import Mask

ATOL = 1e-5
BLOCK = 16  # small blocks: every kind of block (skipped, plain, masked, general) occurs


def packed_ids(rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, ...]:
  """segments, branches, positions [batch, length] of rows packed with 1-3 examples, each
  a prompt (branch 0) then 1-3 branches whose positions continue the prompt's; padding
  (segment 0) at the end of some rows."""
  segments, branches, positions = (np.zeros((batch, length), np.int32) for _ in range(3))
  for b in range(batch):
    i, segment = 0, 1
    while i < length - 8 and segment <= 3:
      prompt = int(rng.integers(4, length // 3))
      end = min(length, i + prompt)
      segments[b, i:end], positions[b, i:end] = segment, np.arange(end - i)
      i = end
      for branch in range(1, int(rng.integers(1, 4)) + 1):
        n = min(length - i, int(rng.integers(1, 12)))
        segments[b, i:i + n], branches[b, i:i + n] = segment, branch
        positions[b, i:i + n] = prompt + np.arange(n)
        i += n
      segment += 1
  return segments, branches, positions


@pytest.mark.parametrize("bias_kind", [None, "causal", "bidirectional"])
@pytest.mark.parametrize("window", [0, 20])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_blockwise_equals_dense(bias_kind, window, kv_heads):
  rng = np.random.default_rng(0)
  batch, length, heads, dims = 3, 150, 4, 8
  segments, branches, positions = map(jnp.asarray, packed_ids(rng, batch, length))
  q = jnp.asarray(rng.standard_normal((batch, length, heads, dims)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((batch, length, kv_heads, dims)), jnp.float32)
          for _ in range(2))
  causal = bias_kind != "bidirectional"
  mask = Mask(segments, segments, branches if causal else None, branches if causal else None,
              causal=causal).with_window(window, positions, positions)
  bias = None
  if bias_kind:
    table = jnp.asarray(rng.standard_normal((heads, 32)), jnp.float32)
    # max_distance 24: buckets saturate within the rows, so constant-bias blocks occur.
    bias = position.RelativeBias(table, positions, positions, bias_kind == "bidirectional", 24)
  want = attention.dense_attention(q, k, v, mask.dense(), None if bias is None else bias.dense(),
                                   0.3)
  got = jax.jit(lambda q, k, v, mask, bias: attention.blockwise_attention(
      q, k, v, mask, bias, 0.3, BLOCK))(q, k, v, mask, bias)
  valid = np.asarray(segments > 0)
  np.testing.assert_allclose(np.asarray(got)[valid], np.asarray(want)[valid], atol=ATOL)


def test_policy_chooses_dense_for_short_rows_and_single_queries():
  assert not attention.AUTO.blockwise(1, 100_000)  # one decoding step
  assert not attention.AUTO.blockwise(256, 256)
  assert attention.AUTO.blockwise(512, 512)
  assert not attention.DENSE.blockwise(8192, 8192)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("buckets,max_distance", [(32, 128), (32, 24), (64, 500), (8, 16)])
def test_bias_buckets_are_constant_beyond_saturation(bidirectional, buckets, max_distance):
  n_sat = position.saturation(bidirectional, buckets, max_distance)
  assert n_sat is not None
  offsets = jnp.arange(n_sat, 20 * max_distance + n_sat)
  for sign in ((-1, 1) if bidirectional else (-1,)):
    b = np.asarray(position.relative_position_bucket(sign * offsets, bidirectional, buckets,
                                                     max_distance))
    assert (b == b[0]).all(), (sign, b)
    # ...and not much later than where they truly saturate (within the 0.1% margin + 1).
    upto = np.asarray(position.relative_position_bucket(sign * jnp.arange(n_sat + 1),
                                                        bidirectional, buckets, max_distance))
    true = int(np.argmax(upto == b[0]))
    assert true <= n_sat <= true * 1.002 + 1, (true, n_sat)


def test_saturation_is_none_when_buckets_cover_the_distance():
  assert position.saturation(False, 32, 10) is None


@pytest.fixture(scope="module")
def mixed_requests(shared_data) -> list[requests.Request]:
  """Short 0-shot prompts, long prompts cut to 512 tokens, and 1-shot prompts."""
  vocabulary = seqio.ByteVocabulary()
  options = seqio_tasks.tasks.PromptOptions(seed=0, max_length=512)
  out = []
  for task, variant, n in (("memo-trap", "zero_shot", 6), ("hindsight-neglect", "zero_shot", 2),
                           ("neqa", "1_shot", 3)):
    t = seqio_tasks.build_task(task, variant, vocabulary, options, str(shared_data))
    out += requests.from_task(t, vocabulary, max_length=512, bos_id=0)[:n]
  return out


@pytest.mark.parametrize("architecture", ["encoder_decoder", "llama", "gpt_neox"])
def test_engine_blockwise_everywhere_equals_dense_reference(architecture, small_model,
                                                            mixed_requests):
  """Every row of the engine attends in blocks of 16 (T5's bias, Mistral's window and
  grouped-query heads included); the reference attends densely, one row per class."""
  dense_model, params = small_model(architecture)
  blockwise = Model(dense_model.config, attention=attention.Policy(block=BLOCK, dense_below=1))
  dense = Model(dense_model.config, attention=attention.DENSE)
  want = reference.score(dense, params, mixed_requests, batch_size=8)
  got = Scorer(blockwise, params, partitioning.make_mesh(), 2048).score(mixed_requests)
  for x, y in zip(got, want):
    for a, b in zip(x, y):
      np.testing.assert_allclose(a, b, rtol=2e-6, atol=ATOL)
