"""benchmarks/score_throughput.py's essential-FLOP count, the numerator of its "share of
matmul peak": never more than the work the engine's compiled programs actually do (as XLA
counts it), so the reported share cannot be inflated, and not far below it on rows that
pack without waste."""

from __future__ import annotations

import jax
import pytest
import seqio

import seqio_tasks
from conftest import load_script
from invscale_jax.engine import packing, requests

bench = load_script("score_throughput")


def xla_flops(model, params, reqs: list[requests.Request], tokens_per_batch: int) -> float:
  """FLOPs of the engine's scoring programs over `reqs`, from XLA's cost analysis."""
  total = 0.0
  score = jax.jit(model.score)
  for batch in packing.make_batches(reqs, model.architecture, tokens_per_batch):
    cost = score.lower(params, batch.arrays).compile().cost_analysis()
    total += (cost[0] if isinstance(cost, list) else cost)["flops"]
  return total


@pytest.mark.parametrize("architecture", ["decoder_only", "llama"])
def test_essential_flops_bounded_by_what_xla_computes(architecture, small_model, shared_data):
  model, params = small_model(architecture)
  vocabulary = seqio.ByteVocabulary()
  options = seqio_tasks.tasks.PromptOptions(seed=0, max_length=512)
  task = seqio_tasks.build_task("memo-trap", "zero_shot", vocabulary, options, str(shared_data))
  reqs = requests.from_task(task, vocabulary, max_length=512, bos_id=0)[:32]
  essential = bench.essential_flops(model, reqs)
  computed = xla_flops(model, params, reqs, tokens_per_batch=1024)
  assert 0.2 * computed < essential <= computed, (essential, computed)


def test_essential_flops_refuses_encoder_decoder(small_model):
  model, _ = small_model("encoder_decoder")
  with pytest.raises(ValueError, match="decoder-only"):
    bench.essential_flops(model, [])


def test_matmul_bound_counts_no_more_than_the_engine_computes(small_model, shared_data):
  """The "bound" line times the engine's own batches' matmuls: their FLOPs are part of
  what XLA counts for the engine's programs (so the bound is never inflated), and most
  of it on these rows."""
  model, params = small_model("decoder_only")
  vocabulary = seqio.ByteVocabulary()
  options = seqio_tasks.tasks.PromptOptions(seed=0, max_length=512)
  task = seqio_tasks.build_task("memo-trap", "zero_shot", vocabulary, options, str(shared_data))
  reqs = requests.from_task(task, vocabulary, max_length=512, bos_id=0)[:32]
  seconds, flops = bench.matmul_bound(model, params, reqs, tokens_per_batch=1024)
  computed = xla_flops(model, params, reqs, tokens_per_batch=1024)
  assert seconds > 0
  assert 0.3 * computed < flops <= computed, (flops, computed)
