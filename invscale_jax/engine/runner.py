"""The family runner: every model x task x variant, scored into resumable result chunks.

For each (model, task, variant) the run directory `RESULTS/runs/<run_key>/` (see
`results`) holds run.json, chunks of up to `chunk_size` whole examples each, written once,
and, when every example is there, COMPLETE. A re-run skips complete runs (verified, not
trusted) and the examples already in good chunks, whatever chunk size wrote them; a
`kill -9` loses at most the chunk in flight. Only process 0 reads and writes results and
holds the runs' leases; what remains to do, and any error it meets, is broadcast, so
hosts without a shared file system stay in step.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from invscale_jax import console, records, results
from invscale_jax.engine import chain_of_thought, loading, partitioning, progress
from invscale_jax.engine.generate import DecodeOptions, Generator
from invscale_jax.engine.plan import Run, ScoringOptions
from invscale_jax.engine import plan as plan_lib
from invscale_jax.engine.requests import Request
from invscale_jax.engine.scorer import Scorer
from invscale_jax.family import Family


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
      self._generator = Generator(self.loaded.model, self.loaded.params, self.loaded.mesh,
                                  DecodeOptions(o.generation_length, o.temperature, o.seed),
                                  o.tokens_per_batch)
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
      rescored = chain_of_thought.scoring_requests(requests, generations, vocabulary, o.max_length,
                                                   run.bos_id)
      out += score_records(run, rescored, self.scorer.score(rescored, progress), o.token_logprobs)
    return out


def _from_leader(values: np.ndarray) -> np.ndarray:
  """Process 0's `values`, on every host."""
  if jax.process_count() > 1:
    values = np.asarray(multihost_utils.broadcast_one_to_all(values))
  return values


_MESSAGE_BYTES = 2048


def _on_leader(action: Callable[[], Any]) -> Any:
  """Runs `action` on process 0 only (the one host that touches results). An error there
  is raised on every host, with process 0's message, so no host waits for the others."""
  error, result = None, None
  if jax.process_index() == 0:
    try:
      result = action()
    except Exception as e:  # re-raised below, after the other hosts hear of it
      error = e
  if jax.process_count() > 1:
    text = np.zeros(_MESSAGE_BYTES, np.uint8)
    if error is not None:
      message = f"{type(error).__name__}: {error}".encode()[:_MESSAGE_BYTES - 1] or b"error"
      text[:len(message)] = np.frombuffer(message, np.uint8)
    text = _from_leader(text)
    if error is None and text.any():
      raise ValueError("process 0: " + bytes(text[text > 0]).decode(errors="replace"))
  if error is not None:
    raise error
  return result


def _complete(runs: Sequence[Run], out: str) -> list[bool]:
  """Which runs are complete (verified, not only marked), as process 0 sees them."""
  def check() -> np.ndarray:
    done = np.zeros(len(runs), np.int32)
    for i, run in enumerate(runs):
      problem = results.verify_complete(run.dir(out))
      done[i] = problem is None
      if problem is not None and problem != results.NO_MARKER:
        console.warn(f"{run.label}: marked complete, but {problem}; resuming it")
    return done
  done = _on_leader(check)
  return _from_leader(np.zeros(len(runs), np.int32) if done is None else done
                      ).astype(bool).tolist()


@dataclasses.dataclass
class _Prepared:
  run: Run
  pending: list[list[Request]]  # chunks still to score
  info: dict
  writer: results.RunWriter | None  # process 0 only


def _prepare(run: Run, engine: Engine, data_dir: pathlib.Path, out: str,
             keeper: results.LeaseKeeper) -> _Prepared:
  """A run's requests, its lease taken and run.json written, and the chunks still to do."""
  o = engine.options
  reqs = plan_lib.requests_for(run, engine.loaded.vocabulary, o, data_dir)
  info = plan_lib.run_info(run, o, reqs)
  writer = _on_leader(lambda: results.open_run(run.dir(out), info, run.label, keeper))
  done = np.zeros(len(reqs), np.int32)
  if writer is not None:
    done[:] = [r.example_id in writer.done for r in reqs]
  todo = [r for r, d in zip(reqs, _from_leader(done)) if not d]
  pending = [todo[s:s + o.chunk_size] for s in range(0, len(todo), o.chunk_size)]
  return _Prepared(run, pending, info, writer)


def score_family(family: Family, models: Sequence[str] | None, tasks: Sequence[str],
                 variants: Sequence[str], data_dir: pathlib.Path, out: str,
                 options: ScoringOptions) -> list[Run]:
  """Scores every selected run that is not complete; returns the runs."""
  runs = plan_lib.plan(family, models, tasks, variants, data_dir, options)
  mesh = partitioning.make_mesh()  # before model gin files replace the run's gin config
  complete = _complete(runs, out)
  for name in dict.fromkeys(r.entry.name for r in runs):
    entry = family.get(name)
    todo = [r for r, done in zip(runs, complete) if r.entry.name == name and not done]
    if not todo:
      print(f"{entry.name}: all runs already complete", file=sys.stderr)
      continue
    engine = Engine(loading.load_model(entry, options.dtype, mesh), options)
    with results.LeaseKeeper() as keeper:
      prepared = [_prepare(run, engine, data_dir, out, keeper) for run in todo]
      total = sum(plan_lib.n_records(options, p.run, reqs) for p in prepared for reqs in p.pending)
      with progress.Bar(entry.name, total) as bar:
        for p in prepared:
          bar.describe(f"{entry.name} {p.run.task.name}.{p.run.variant.name}")
          start = time.perf_counter()
          for reqs in p.pending:
            recs = engine.records_for(p.run, reqs, bar.update)
            records.check_finite(recs, p.run.label)
            _on_leader(lambda: p.writer.write_chunk(recs))
          stats = {"tokens": sum(plan_lib.work_tokens(options, p.run, reqs) for reqs in p.pending),
                   "seconds": round(time.perf_counter() - start, 3)}
          _on_leader(lambda: p.writer.finish(stats))
          if p.info["n_truncated"] or p.info["n_demos_dropped"]:
            console.warn(f"{entry.name} {p.run.task.name}.{p.run.variant.name}: "
                         f"{p.info['n_truncated']} "
                         f"prompts truncated, {p.info['n_demos_dropped']} demonstrations "
                         f"dropped to fit max_length={options.max_length}")
  return runs
