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
import math
import pathlib
import sys
from typing import Any, Callable, Sequence

import gin
import jax
import numpy as np
from jax.experimental import multihost_utils

from invscale_jax import catalog, records, results, storage
from invscale_jax.models import load_config
from invscale_jax import vocab as vocab_lib
from invscale_jax.data import datadir
from invscale_jax.data import variants as variants_lib
from invscale_jax.engine import chain_of_thought, loading, partitioning, progress, runkey
from invscale_jax.engine.generate import DecodeOptions, Generator
from invscale_jax.engine.requests import Request, from_task
from invscale_jax.engine.scorer import Scorer
from invscale_jax.family import Family, ModelEntry


TOKENIZATIONS = ("separate", "joint")
DTYPES = ("float32", "bfloat16")


def _is_int(value: Any, minimum: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _option_problems(o: "ScoringOptions") -> list[tuple[str, str]]:
  """(field, what is wrong) for every invalid option."""
  checks = [
      ("tokenization", o.tokenization in TOKENIZATIONS, f"must be one of {TOKENIZATIONS}"),
      ("bos", isinstance(o.bos, str) and (o.bos in ("model", "none") or o.bos.isdigit()),
       "must be 'model' (the model's convention), 'none' or a token id"),
      ("max_length", _is_int(o.max_length, 2), "must be an integer >= 2"),
      ("seed", _is_int(o.seed, 0), "must be an integer >= 0"),
      ("dtype", o.dtype in DTYPES, f"must be one of {DTYPES}"),
      ("generation_length", _is_int(o.generation_length, 1), "must be an integer >= 1"),
      ("temperature", isinstance(o.temperature, (int, float)) and not isinstance(
          o.temperature, bool) and math.isfinite(o.temperature) and o.temperature >= 0,
       "must be a number >= 0 (0: greedy)"),
      ("chunk_size", _is_int(o.chunk_size, 1), "must be an integer >= 1"),
      ("tokens_per_batch", _is_int(o.tokens_per_batch, 1), "must be an integer >= 1"),
  ] + [(name, isinstance(getattr(o, name), bool), "must be true or false")
       for name in ("token_logprobs", "cot_score", "generate", "pack")]
  return [(name, problem) for name, ok, problem in checks if not ok]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ScoringOptions:
  """Options of a scoring run (bind in gin/runs/score.gin; flags override)."""

  tokenization: str = "separate"  # or "joint" (the prize pipeline's convention)
  bos: str = "model"  # token before each prompt: the model's convention, "none" or an id
  max_length: int = 2048  # tokens, BOS + prompt + target (+ generation for CoT)
  seed: int = 0  # few-shot sampling and generation sampling seed
  dtype: str = "float32"  # activation dtype: float32 or bfloat16
  token_logprobs: bool = False  # keep per-token log-probabilities in the records
  generation_length: int = 128  # CoT: tokens generated per example
  temperature: float = 0.0  # CoT: 0 = greedy
  cot_score: bool = True  # CoT: also rank-classify the classes after the generated rationale
  generate: bool = False  # decode and parse every classification run, no scoring (`generate`)
  chunk_size: int = 256  # examples per result chunk (speed only)
  tokens_per_batch: int = 8192  # speed only
  pack: bool = True  # speed only: several examples per row

  def __post_init__(self):
    for name, problem in _option_problems(self):
      raise ValueError(f"--{name} (ScoringOptions.{name}): {problem}, got "
                       f"{getattr(self, name)!r}")

  def bos_id(self, entry: ModelEntry) -> int | None:
    """The token put before each prompt of `entry`'s model (None: nothing). Encoder-decoder
    prompts go to the encoder unchanged."""
    if entry.architecture == "encoder_decoder":
      return None
    if self.bos == "model":
      return entry.bos_id
    return None if self.bos == "none" else int(self.bos)

  def key_parts(self, variant: variants_lib.Variant) -> dict:
    """The options that determine a run's numbers (CoT options only for CoT variants)."""
    d = dataclasses.asdict(self)
    drop = ["bos", "chunk_size", "tokens_per_batch", "pack"]  # bos: resolved per model
    if not (variant.chain_of_thought or self.generate):
      drop += ["generation_length", "temperature", "cot_score"]
    if self.generate:
      drop += ["cot_score", "token_logprobs"]
    return {k: v for k, v in d.items() if k not in drop}


@dataclasses.dataclass(frozen=True)
class Run:
  entry: ModelEntry
  task: catalog.TaskSpec
  variant: variants_lib.Variant
  key: str
  info: dict
  bos_id: int | None

  def dir(self, out: str) -> str:
    return results.run_dir(out, self.key)

  @property
  def label(self) -> str:
    return f"{self.entry.name} {self.task.name}.{self.variant.name} (run {self.key})"


def plan(family: Family, models: Sequence[str] | None, tasks: Sequence[str],
         variants: Sequence[str], data_dir: pathlib.Path, options: ScoringOptions) -> list[Run]:
  """The runs to do, each with its content-hashed key and run.json contents."""
  entries = [family.get(m) for m in models] if models else list(family.models)
  specs = [catalog.get(t) for t in tasks]
  parsed = [variants_lib.parse(v) for v in variants]
  missing = [s.name for s in specs if not storage.is_file(datadir.task_path(data_dir, s))]
  if missing:
    raise FileNotFoundError(f"{data_dir}: no task file for {', '.join(missing)}; "
                            f"run `invscale data download --data_dir {data_dir}`")
  data_hash = {s.name: datadir.sha256_of(datadir.task_path(data_dir, s)) for s in specs}
  runs = []
  for entry in entries:
    checkpoint = runkey.checkpoint_identity(entry.checkpoint)
    vocabulary = vocab_lib.spec_id(entry.vocabulary)
    network = dataclasses.asdict(load_config(entry.gin))
    network.pop("dtype")  # the run's activation dtype is an option (ScoringOptions.dtype)
    bos_id = options.bos_id(entry)
    for spec in specs:
      for variant in parsed:
        parts = {"model": entry.name, "checkpoint": checkpoint, "network": network,
                 "vocabulary": vocabulary, "bos_id": bos_id,
                 "task": spec.name, "data_sha256": data_hash[spec.name],
                 "variant": variant.name, "options": options.key_parts(variant)}
        key = runkey.run_key(parts)
        info = dict(parts, run_key=key, engine_version=runkey.ENGINE_VERSION,
                    family=family.name, model=entry.to_dict())
        runs.append(Run(entry, spec, variant, key, info, bos_id))
  return runs


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

  def generates(self, run: Run) -> bool:
    """Whether a run decodes: CoT variants (or every run with `generate`) of
    classification tasks; sequence-probability tasks are always scored."""
    return ((run.variant.chain_of_thought or self.options.generate)
            and run.task.metric == catalog.CLASSIFICATION)

  def _scores_after(self) -> bool:
    return self.options.cot_score and not self.options.generate

  def record_kinds(self, run: Run) -> list[str]:
    """The records every example of `run` gets."""
    if self.generates(run):
      return [records.GENERATION] + ([records.CLASS] if self._scores_after() else [])
    return [records.CLASS if run.task.metric == catalog.CLASSIFICATION else records.SEQUENCE]

  def work(self, run: Run, requests: Sequence[Request]) -> int:
    """Records that `records_for` makes for these requests (= its progress units)."""
    rows = sum(len(r.branches) for r in requests)
    if self.generates(run):
      return len(requests) + (rows if self._scores_after() else 0)
    return rows

  def records_for(self, run: Run, requests: Sequence[Request],
                  progress: Callable[[int], None]) -> list[records.Record]:
    o = self.options
    if not self.generates(run):
      return score_records(run, requests, self.scorer.score(requests, progress), o.token_logprobs)
    vocabulary = self.loaded.vocabulary
    generations = chain_of_thought.generate(requests, run.task.name, self.generator, vocabulary,
                                            progress)
    out = generation_records(run, requests, generations)
    if self._scores_after():
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
        results.warn(f"{run.label}: marked complete, but {problem}; resuming it")
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
  o, vocabulary = engine.options, engine.loaded.vocabulary
  task = loading.seqio_task(run.task.name, run.variant.name, vocabulary, o.seed, o.max_length,
                            o.generation_length if engine.generates(run) else 0, data_dir)
  reqs = from_task(task, vocabulary, o.tokenization, o.max_length, run.bos_id)
  info = dict(run.info, n_examples=len(reqs), n_rows=sum(len(r.branches) for r in reqs),
              n_records=engine.work(run, reqs), record_kinds=engine.record_kinds(run),
              n_truncated=sum(r.n_truncated > 0 for r in reqs),
              n_demos_dropped=sum(r.n_demos_dropped for r in reqs))
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
  runs = plan(family, models, tasks, variants, data_dir, options)
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
      total = sum(engine.work(p.run, reqs) for p in prepared for reqs in p.pending)
      with progress.Bar(entry.name, total) as bar:
        for p in prepared:
          bar.describe(f"{entry.name} {p.run.task.name}.{p.run.variant.name}")
          for reqs in p.pending:
            recs = engine.records_for(p.run, reqs, bar.update)
            records.check_finite(recs, p.run.label)
            _on_leader(lambda: p.writer.write_chunk(recs))
          _on_leader(lambda: p.writer.finish())
          if p.info["n_truncated"] or p.info["n_demos_dropped"]:
            results.warn(f"{p.run.task.name}.{p.run.variant.name}: {p.info['n_truncated']} "
                         f"prompts truncated, {p.info['n_demos_dropped']} demonstrations "
                         f"dropped to fit max_length={options.max_length}")
  return runs
