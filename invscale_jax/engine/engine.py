"""One loaded model at work: requests in, records out (scoring, and decoding for CoT).

`Engine.records_for` scores a run's requests with the packed, prefix-sharing `Scorer`, or
for chain-of-thought runs decodes with the cached `Generator`, parses the answers and (by
default) rank-classifies the classes after the generated rationale.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from invscale_jax import records
from invscale_jax.engine import chain_of_thought, loading
from invscale_jax.engine import plan as plan_lib
from invscale_jax.engine.generate import DecodeOptions, Generator
from invscale_jax.engine.plan import Run, ScoringOptions
from invscale_jax.engine.requests import Request
from invscale_jax.engine.scorer import Scorer


def _record(run: Run, r: Request, **fields) -> records.Record:
  is_class = r.kind == records.CLASS
  return records.Record(run_key=run.key, model=run.entry.name, task=run.task.name,
                        variant=run.variant.name, example_id=r.example_id,
                        n_classes=len(r.branches) if is_class else 1,
                        answer_index=r.answer_index, n_truncated=r.n_truncated,
                        n_demos_dropped=r.n_demos_dropped, **fields)


def score_records(run: Run, requests: Sequence[Request], scores: Sequence[list[np.ndarray]],
                  keep_tokens: bool) -> list[records.Record]:
  """One CLASS or SEQUENCE record per branch."""
  out = []
  for r, branch_scores in zip(requests, scores):
    is_class = r.kind == records.CLASS
    for j, (b, lp) in enumerate(zip(r.branches, branch_scores)):
      out.append(_record(
          run, r, kind=r.kind, class_index=j if is_class else None,
          logprob=float(np.sum(lp, dtype=np.float64)), n_tokens=len(lp), n_bytes=b.n_bytes,
          is_correct=(j == r.answer_index) if is_class else None,
          token_logprobs=tuple(float(x) for x in lp) if keep_tokens else None))
  return out


def generation_records(run: Run, requests: Sequence[Request],
                       generations: Sequence[chain_of_thought.Generation]) -> list[records.Record]:
  """One GENERATION record per example."""
  return [_record(run, r, kind=records.GENERATION, class_index=g.class_index, logprob=None,
                  n_tokens=g.n_tokens, n_bytes=len(g.text.encode("utf-8")),
                  is_correct=g.class_index == r.answer_index, generation=g.text,
                  parsed=g.class_index is not None)
          for r, g in zip(requests, generations)]


class Engine:
  """One loaded model's scorer and (built on first use) generator."""

  def __init__(self, loaded: loading.LoadedModel, options: ScoringOptions):
    self.loaded, self.options = loaded, options
    self.scorer = Scorer(loaded.model, loaded.params, loaded.mesh, options.tokens_per_batch,
                         options.pack)
    self._generator: Generator | None = None

  @property
  def generator(self) -> Generator:
    if self._generator is None:
      o = self.options
      # The batch sizer measures the scoring step; decoding with `tokens_per_batch` 0 uses
      # the default budget. Each decoding step reads every weight once, so decoding takes
      # twice the scoring budget (8,192 tokens by default): more rows share each read.
      budget = 2 * (o.tokens_per_batch or ScoringOptions.tokens_per_batch)
      self._generator = Generator(self.loaded.model, self.loaded.params, self.loaded.mesh,
                                  DecodeOptions(o.generation_length, o.temperature, o.seed),
                                  budget)
    return self._generator

  def records_for(self, run: Run, requests: Sequence[Request],
                  progress: Callable[[int], None]) -> list[records.Record]:
    """The records of `requests` (`plan.n_records` of them, each reported to `progress`)."""
    o = self.options
    if not plan_lib.generates(o, run):
      return score_records(run, requests, self.scorer.score(requests, progress), o.token_logprobs)
    vocabulary = self.loaded.vocabulary
    generations = chain_of_thought.generate(requests, run.task.name, self.generator, vocabulary,
                                            progress)
    out = generation_records(run, requests, generations)
    if plan_lib.scores_after_generating(o):
      rescored = chain_of_thought.scoring_requests(requests, generations, vocabulary, run.max_length,
                                                   run.bos_id, plan_lib.eos_id(run, vocabulary))
      out += score_records(run, rescored, self.scorer.score(rescored, progress), o.token_logprobs)
    return out
