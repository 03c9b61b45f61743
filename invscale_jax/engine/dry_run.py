"""`invscale score --dry_run`: what a score command would do, without loading a model.

For each planned run: complete, partial (n of m examples) or to do; the tokens left to
compute (each prompt once and every class or completion, plus the tokens to generate for
chain of thought); and a time estimate from the throughput this model reached on runs it
completed in the same results directory (recorded in their COMPLETE markers). Reads
task data and results; writes nothing and takes no lease.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

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
  return "\n".join([f"dry run: nothing is loaded or written ({out})", *lines, total]) + "\n"
