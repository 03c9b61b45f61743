"""The family runner: every model x task x variant, scored into resumable result chunks.

For each (model, task, variant) the run directory `RESULTS/runs/<run_key>/` (see
`results`) holds run.json, chunks of up to `chunk_size` whole examples each, written once,
and, when every example is there, COMPLETE. A re-run skips complete runs (verified, not
trusted, and checked to be the plan's run) and the examples already in good chunks,
whatever chunk size wrote them; a `kill -9` loses at most the chunks in flight:
consecutive chunks of up to GROUP_TOKENS ($INVSCALE_GROUP_TOKENS) work tokens in all are
scored together (their rows share batches, so a run of short examples is not padded once
per chunk), then written one by one. Only process 0 reads and writes results and holds the runs' leases;
what remains to do, and any error it meets, is broadcast, so hosts without a shared file
system stay in step.

Several processes (TPU slices, machines) may share one results directory: a model's runs
are claimed (their leases taken) before the model is loaded, runs another live process
holds are left to it, and once a pass over the models has nothing left to claim the
process waits (`INVSCALE_POLL_SECONDS`, 30 by default, between looks) until every run is
complete, taking over a run whose holder stopped. The model (and with it JAX, Flax and
SeqIO) is loaded only for a model with runs claimed: a re-run of complete runs reads
results and returns.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from invscale_jax import console, records, results
from invscale_jax.engine import hosts, progress
from invscale_jax.engine import plan as plan_lib
from invscale_jax.engine.plan import Run, ScoringOptions
from invscale_jax.engine.requests import Request
from invscale_jax.family import Family, ModelEntry


def _poll_seconds() -> float:
  """Seconds between looks at runs other processes hold ($INVSCALE_POLL_SECONDS)."""
  value = os.environ.get("INVSCALE_POLL_SECONDS", "30")
  try:
    seconds = float(value)
  except ValueError:
    seconds = math.nan
  if not 0 <= seconds <= 86400:
    raise ValueError(f"INVSCALE_POLL_SECONDS: must be a number of seconds (0 to 86400), "
                     f"got {value!r}")
  return seconds


def _key_parts(run: Run) -> dict:
  """What run.json must hold for a directory to be this run: the plan's key parts (the
  family's name, seed group and the model's paths may differ: they are not in the key)."""
  return {k: v for k, v in run.info.items() if k not in ("family", "model", "seed_group")}


def _complete(runs: Sequence[Run], out: str, warn: bool = True) -> list[bool]:
  """Which runs are complete (verified, not only marked), as process 0 sees them."""
  def check() -> np.ndarray:
    done = np.zeros(len(runs), np.int32)
    for i, run in enumerate(runs):
      problem = results.verify_complete(run.dir(out), expected=_key_parts(run))
      done[i] = problem is None
      if done[i]:
        results.drop_stale_lease(run.dir(out), run.label)
      if warn and problem is not None and problem != results.NO_MARKER:
        console.warn(f"{run.label}: marked complete, but {problem}; resuming it")
    return done
  done = hosts.on_leader(check)
  return hosts.from_leader(np.zeros(len(runs), np.int32) if done is None else done
                      ).astype(bool).tolist()


GROUP_TOKENS = 65536  # work tokens of the chunks scored together (at least one chunk)


def _group_tokens() -> int:
  """$INVSCALE_GROUP_TOKENS, else GROUP_TOKENS: less is slower, but a kill loses less."""
  value = os.environ.get("INVSCALE_GROUP_TOKENS", str(GROUP_TOKENS))
  if not value.isascii() or not value.isdigit() or int(value) < 1:
    raise ValueError(f"INVSCALE_GROUP_TOKENS: must be a whole number >= 1, got {value!r}")
  return int(value)


def scoring_groups(chunks: Sequence[list[Request]], tokens: Callable[[list[Request]], int],
                   budget: int | None = None) -> list[list[list[Request]]]:
  """Consecutive chunks, in order, grouped while a group's `tokens` stay within `budget`
  (default: `_group_tokens()`)."""
  budget = _group_tokens() if budget is None else budget
  groups: list[list[list[Request]]] = []
  used = 0
  for chunk in chunks:
    n = tokens(chunk)
    if not groups or used + n > budget:
      groups.append([])
      used = 0
    groups[-1].append(chunk)
    used += n
  return groups


class _Claims:
  """The leases this process holds (process 0) and, on every host, which runs it claimed;
  `busy` says why the others could not be (RunBusy messages, process 0)."""

  def __init__(self, out: str, keeper: results.LeaseKeeper):
    self.out, self.keeper = out, keeper
    self.leases: dict[str, results.Lease] = {}
    self.busy: dict[str, str] = {}

  def take(self, runs: Sequence[Run]) -> list[Run]:
    """Claims what it can of `runs` (neither held by a live writer nor complete by now);
    returns those claimed."""
    def claim() -> np.ndarray:
      claimed = np.zeros(len(runs), np.int32)
      for i, run in enumerate(runs):
        try:
          lease = results.claim(run.dir(self.out), run.label, _key_parts(run))
        except results.RunBusy as e:
          self.busy[run.key] = str(e)
          continue
        self.busy.pop(run.key, None)
        if lease is not None:
          self.leases[run.key] = lease
          self.keeper.leases.append(lease)
          claimed[i] = 1
      return claimed
    claimed = hosts.on_leader(claim)
    claimed = hosts.from_leader(np.zeros(len(runs), np.int32) if claimed is None else claimed)
    return [run for run, c in zip(runs, claimed) if c]


@dataclasses.dataclass
class _Prepared:
  run: Run
  pending: list[list[Request]]  # chunks still to score
  info: dict
  writer: results.RunWriter | None  # process 0 only


def _prepare(run: Run, engine, data_dir: str, claims: _Claims) -> _Prepared:
  """A claimed run's requests, run.json written, and the chunks still to do."""
  o = engine.options
  reqs = plan_lib.requests_for(run, engine.loaded.vocabulary, o, data_dir)
  info = plan_lib.run_info(run, o, reqs)
  writer = hosts.on_leader(lambda: results.open_run(
      run.dir(claims.out), info, run.label, claims.keeper, claims.leases[run.key]))
  done = np.zeros(len(reqs), np.int32)
  if writer is not None:
    done[:] = [r.example_id in writer.done for r in reqs]
  todo = [r for r, d in zip(reqs, hosts.from_leader(done)) if not d]
  pending = [todo[s:s + o.chunk_size] for s in range(0, len(todo), o.chunk_size)]
  return _Prepared(run, pending, info, writer)


@dataclasses.dataclass(frozen=True)
class Backend:
  """What scoring needs JAX for (engine/backend.py), asked for only once a run is left."""
  load: Callable[[ModelEntry, ScoringOptions], Any]  # a model's engine
  prefetches: Callable[[ModelEntry, ScoringOptions], bool]  # load it while another scores?


class _Prefetch:
  """A model's engine, loaded in a background thread while another model scores: on a pod
  the restore of a large checkpoint from storage takes minutes, and reading it is I/O."""

  def __init__(self, entry, options: ScoringOptions, backend: Backend):
    self.entry, self._engine, self._error = entry, None, None
    self._thread = threading.Thread(target=self._run, args=(options, backend), daemon=True,
                                    name=f"invscale-prefetch-{entry.name}")
    self._thread.start()

  def _run(self, options: ScoringOptions, backend: Backend) -> None:
    try:
      self._engine = backend.load(self.entry, options)
    except Exception as e:  # raised by `get`, in the thread that scores
      self._error = e

  def get(self):
    self._thread.join()
    if self._error is not None:
      raise self._error
    return self._engine


def _score_model(engine, entry, runs: Sequence[Run], data_dir: str, claims: _Claims) -> None:
  """Scores the claimed `runs` of one model, each into its run directory."""
  options = engine.options
  prepared = [_prepare(run, engine, data_dir, claims) for run in runs]
  total = sum(plan_lib.n_records(options, p.run, reqs) for p in prepared for reqs in p.pending)
  with progress.Bar(entry.name, total) as bar:
    for p in prepared:
      bar.describe(f"{entry.name} {p.run.task.name}.{p.run.variant.name}")
      start = time.perf_counter()
      work = lambda reqs, run=p.run: plan_lib.work_tokens(options, run, reqs)
      for group in scoring_groups(p.pending, work):
        recs = engine.records_for(p.run, [r for chunk in group for r in chunk], bar.update)
        records.check_finite(recs, p.run.label)
        for chunk in group:
          ids = {r.example_id for r in chunk}
          part = [x for x in recs if x.example_id in ids]
          hosts.on_leader(lambda: p.writer.write_chunk(part))
      stats = {"tokens": sum(plan_lib.work_tokens(options, p.run, reqs) for reqs in p.pending),
               "seconds": round(time.perf_counter() - start, 3)}
      hosts.on_leader(lambda: p.writer.finish(stats))
      if hosts.index() == 0:
        console.say(f"{p.run.label}: complete ({sum(map(len, p.pending))} of "
                    f"{p.info['n_examples']} examples scored here)")
      if p.info["n_truncated"] or p.info["n_demos_dropped"]:
        console.warn(f"{entry.name} {p.run.task.name}.{p.run.variant.name}: "
                     f"{p.info['n_truncated']} "
                     f"prompts truncated, {p.info['n_demos_dropped']} demonstrations "
                     f"dropped to fit max_length={p.run.max_length}")


def _one_pass(family: Family, left: Sequence[Run], data_dir: str, options: ScoringOptions,
              claims: _Claims, backend: Backend) -> bool:
  """Scores every run of `left` that can be claimed, model by model (the next model with
  runs claimed loads in the background when `backend.prefetches` says so); True if any was."""
  names = list(dict.fromkeys(r.entry.name for r in left))
  claimed: dict[str, list[Run]] = {}

  def take(name: str) -> list[Run]:
    if name not in claimed:
      claimed[name] = claims.take([r for r in left if r.entry.name == name])
    return claimed[name]

  prefetch, scored = None, False
  for k, name in enumerate(names):
    if not take(name):
      continue
    entry = family.get(name)
    engine = (prefetch.get() if prefetch is not None and prefetch.entry.name == name
              else backend.load(entry, options))
    following = next((n for n in names[k + 1:] if take(n)), None)
    prefetch = (_Prefetch(family.get(following), options, backend) if following is not None
                and backend.prefetches(family.get(following), options) else None)
    _score_model(engine, entry, claimed[name], data_dir, claims)
    scored = True
  return scored


def score_family(family: Family, models: Sequence[str] | None, tasks: Sequence[str],
                 variants: Sequence[str], data_dir: str, out: str,
                 options: ScoringOptions, backend: Callable[[], Backend]) -> list[Run]:
  """Scores every selected run that is not complete, sharing the work with any other
  process on the same results (see the module docstring); returns the runs. `backend` is
  called once, and only when a run is left to score."""
  poll = _poll_seconds()
  runs = plan_lib.plan(family, models, tasks, variants, data_dir, options)
  left = [r for r, done in zip(runs, _complete(runs, out)) if not done]
  for name in dict.fromkeys(r.entry.name for r in runs):
    if not any(r.entry.name == name for r in left):
      print(f"{name}: all runs already complete", file=sys.stderr)
  loaded = backend() if left else None  # JAX stays unimported otherwise
  told: set[str] = set()
  with results.LeaseKeeper() as keeper:
    claims = _Claims(out, keeper)
    while left:
      scored = _one_pass(family, left, data_dir, options, claims, loaded)
      left = [r for r, done in zip(left, _complete(left, out, warn=False)) if not done]
      if left and not scored:
        waiting = {r.key: claims.busy[r.key] for r in left if r.key in claims.busy}
        if hosts.index() == 0 and not waiting.keys() <= told:  # a holder not yet named
          runs_word = "run" if len(left) == 1 else "runs"
          print(f"waiting for {len(left)} {runs_word} that other processes hold:\n  " +
                "\n  ".join(waiting.values()), file=sys.stderr)
          told |= waiting.keys()
        time.sleep(poll)
  return runs
