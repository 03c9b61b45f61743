"""`invscale score --dry_run`: what a score command would do, without loading a model.

For each planned run: complete, partial (n of m examples) or to do; the tokens left to
compute (each prompt once and every class or completion, plus the tokens to generate for
chain of thought); and a time estimate from the throughput this model reached on runs it
completed in the same results directory (recorded in their COMPLETE markers). A run with
nothing done whose model, task and variant were run before in the same results directory
under another key is followed by the parts of run.json that differ (e.g. `max_length:
2048 there, 1024 here`), so it is clear why the earlier run does not count. Reads task
data and results; writes nothing and takes no lease.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator, Sequence

from invscale_jax import results
from invscale_jax import tokenizer as tokenizer_lib
from invscale_jax.engine import plan as plan_lib


@dataclasses.dataclass(frozen=True)
class Planned:
  run: plan_lib.Run
  n_examples: int
  n_done: int
  tokens_left: int

  @property
  def status(self) -> str:
    return "complete" if self.n_done == self.n_examples else (
        f"partial ({self.n_done} of {self.n_examples})" if self.n_done else "to do")


def _planned(run: plan_lib.Run, options: plan_lib.ScoringOptions, data_dir: str,
             out: str) -> Planned:
  vocabulary = tokenizer_lib.from_spec(run.entry.vocabulary)
  reqs = plan_lib.requests_for(run, vocabulary, options, data_dir, store=False)  # writes nothing
  info = plan_lib.run_info(run, options, reqs)
  directory = run.dir(out)
  if results.verify_complete(directory, info) is None:
    done = {r.example_id for r in reqs}
  else:
    done = results.scan(directory, info).done
  left = [r for r in reqs if r.example_id not in done]
  return Planned(run, len(reqs), len(reqs) - len(left), plan_lib.work_tokens(options, run, left))


# run.json fields not compared: the key itself, and the family, its seed group and manifest
# entry (the model is matched by name; the entry's compute figures are not part of the key).
_NOT_COMPARED = ("run_key", "family", "model", "seed_group")
_ABSENT = object()


def _flat(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _flat(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def _short(value: Any) -> str:
  text = "absent" if value is _ABSENT else json.dumps(value)
  return text if len(text) <= 24 else text[:20] + "...\""


def differences(planned: dict[str, Any], earlier: dict[str, Any]) -> list[str]:
  """'field: X there, Y here' for each key part of a planned run's run.json (`planned`)
  that an earlier run's run.json (`earlier`) has otherwise."""
  compared = [k for k in planned if k not in _NOT_COMPARED]
  ours = dict(_flat({k: planned[k] for k in compared}))
  theirs = dict(_flat({k: earlier.get(k, _ABSENT) for k in compared}))
  return [f"{field}: {_short(theirs.get(field, _ABSENT))} there, "
          f"{_short(ours.get(field, _ABSENT))} here"
          for field in sorted(ours.keys() | theirs.keys())
          if ours.get(field, _ABSENT) != theirs.get(field, _ABSENT)]


def _earlier_runs(out: str) -> dict[tuple[str, str, str], list[tuple[str, dict[str, Any]]]]:
  """(model, task, variant) -> [(run key, run.json)] of the runs under `out`."""
  found: dict[tuple[str, str, str], list[tuple[str, dict[str, Any]]]] = {}
  for directory in results.run_dirs(out):
    try:
      info = results.read_run_info(directory)
    except (ValueError, OSError):
      continue  # the table of `invscale results` reports unreadable runs
    model = info.get("model")
    name = model.get("name") if isinstance(model, dict) else model
    found.setdefault((str(name), str(info.get("task")), str(info.get("variant"))), []).append(
        (str(info.get("run_key")), info))
  return found


def _mismatch_notes(planned: Sequence[Planned], out: str) -> list[str]:
  """For each run with nothing done: why the closest earlier run of the same model, task
  and variant does not count (the run.json parts that differ)."""
  earlier = _earlier_runs(out)
  notes = []
  for p in planned:
    if p.n_done:
      continue
    run = p.run
    others = [(key, differences(run.info, info)) for key, info in
              earlier.get((run.entry.name, run.task.name, run.variant.name), [])
              if key != run.key]
    if not others:
      continue
    key, diffs = min(others, key=lambda o: len(o[1]))
    more = f" (and {len(others) - 1} other earlier runs)" if len(others) > 1 else ""
    notes.append(f"{run.entry.name} {run.task.name}.{run.variant.name}: earlier run {key}"
                 f"{more} does not match: {'; '.join(diffs) or 'run key only'}")
  return notes


def _rates(planned: Sequence[Planned], out: str) -> dict[str, float]:
  """Tokens per second per model, from the COMPLETE markers of its runs under `out`."""
  totals: dict[str, list[float]] = {}
  for p in planned:
    stats = results.completion_stats(p.run.dir(out))
    if stats.get("seconds") and stats.get("tokens"):
      total = totals.setdefault(p.run.entry.name, [0.0, 0.0])
      total[0] += stats["tokens"]
      total[1] += stats["seconds"]
  return {model: tokens / seconds for model, (tokens, seconds) in totals.items()}


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f"~{seconds:.0f} s"
  return f"~{seconds / 60:.0f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"


def describe(family, models: Sequence[str] | None, tasks: Sequence[str],
             variants: Sequence[str], data_dir: str, out: str,
             options: plan_lib.ScoringOptions) -> str:
  """The dry run's report: a line per run and a total."""
  runs = plan_lib.plan(family, models, tasks, variants, data_dir, options)
  planned = [_planned(run, options, data_dir, out) for run in runs]
  rates = _rates(planned, out)
  rows = [["model", "task.variant", "status", "tokens to compute", "estimate"]]
  total_tokens, total_seconds, unknown = 0, 0.0, set()
  for p in planned:
    rate = rates.get(p.run.entry.name)
    estimate = "-" if not p.tokens_left else (
        _duration(p.tokens_left / rate) if rate else "unknown")
    if p.tokens_left and rate:
      total_seconds += p.tokens_left / rate
    elif p.tokens_left:
      unknown.add(p.run.entry.name)
    total_tokens += p.tokens_left
    rows.append([p.run.entry.name, f"{p.run.task.name}.{p.run.variant.name}", p.status,
                 f"{p.tokens_left:,}", estimate])
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  counts = [sum(p.status == "complete" for p in planned),
            sum(p.status.startswith("partial") for p in planned),
            sum(p.status == "to do" for p in planned)]
  total = (f"{counts[0]} complete, {counts[1]} partial, {counts[2]} to do; "
           f"{total_tokens:,} tokens to compute")
  if total_tokens:
    total += f", {_duration(total_seconds)}" if not unknown else (
        f" (no earlier complete run of {', '.join(sorted(unknown))} in {out} to time it)")
  notes = _mismatch_notes(planned, out)
  return "\n".join([f"dry run: nothing is loaded or written ({out})", *lines, *notes,
                    total]) + "\n"
