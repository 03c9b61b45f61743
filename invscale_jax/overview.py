"""A results directory at a glance: one line per run, as a terminal table and as INDEX.md.

`invscale score` prints the table when it ends and rewrites `RESULTS/INDEX.md`, so a
person finds "tiny-4, memo-trap, 1_shot" without opening run.json files; `invscale results
RESULTS` does both for existing results. The run key stays the identity (the directory
under runs/); the index only points at it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from invscale_jax import caveats as caveats_lib
from invscale_jax import records as records_lib
from invscale_jax import checks, results, storage, task_registry
from invscale_jax.data import declarations
from invscale_jax.report import intervals
from invscale_jax.report import metrics as metrics_lib
from invscale_jax.report.errors import ReportError

INDEX = "INDEX.md"
COMPLETE, PARTIAL, TODO = "complete", "partial", "to do"


@dataclasses.dataclass(frozen=True)
class RunLine:
  """One run: what it is, how far it got and its headline number."""

  model: str
  task: str
  variant: str
  key: str
  status: str  # COMPLETE, PARTIAL or TODO
  n_done: int  # examples with records
  n_examples: int | None
  metric: str  # "accuracy", "loss" (classification, when the task declares it) or "sequence loss"
  value: float | None
  unparseable: float | None  # chain of thought: share of answers not parsed
  note: str = ""  # why a run is not complete, when something is wrong
  interval: tuple[float, float] | None = None  # 95% interval of `value`
  caveats: caveats_lib.RunCaveats | None = None  # subset, truncation, dtype, BOS (run.json)

  @property
  def where(self) -> str:
    return f"{results.RUNS}/{self.key}"


@dataclasses.dataclass(frozen=True)
class _Headline:
  metric: str = "accuracy"
  value: float | None = None
  interval: tuple[float, float] | None = None
  unparseable: float | None = None


def _declared_metric(info: dict) -> str:
  """The metric the run's task is judged by, "accuracy" or "loss": the declaration run.json
  keeps for your own tasks (`task_spec`), else the task's in the registry."""
  try:
    if "task_spec" in info:
      return declarations.parse(info["task_spec"], "run.json: task_spec").headline
    return task_registry.get(str(info.get("task"))).headline
  except (declarations.DeclarationError, KeyError):
    return "accuracy"


def _headline(recs: Sequence[records_lib.Record], declared: str = "accuracy") -> _Headline:
  """The metric (the task's `declared` one: accuracy, or classification loss), its value
  and 95% interval, and the unparseable rate, of the examples with all their records."""
  if not recs:
    return _Headline()
  try:
    m = metrics_lib.example_metrics(recs, strict=False)
  except ReportError:
    return _Headline()
  if m.answers is None:
    name, shown = "loss", "sequence loss"
  else:
    name = "loss" if declared == "loss" and "loss" in m.values else "accuracy"
    shown = name
  if not len(m.example_ids):
    return _Headline(shown)
  values = m.values[name]
  unparseable = m.values.get("unparseable_rate")
  return _Headline(shown, float(np.mean(values)), intervals.mean_interval(values),
                   None if unparseable is None else float(np.mean(unparseable)))


def run_line(directory: str) -> RunLine:
  """The line of one run directory (damaged chunks are left out and named in `note`)."""
  info = results.read_run_info(directory)
  problem = results.verify_complete(directory, info)
  found = results.scan(directory, info, quiet=True)
  notes = [] if problem in (None, results.NO_MARKER) else [problem]
  notes += [f"{name}: {why}" for name, why in found.bad]
  status = COMPLETE if problem is None else PARTIAL if found.done else TODO
  head = _headline(found.records, _declared_metric(info))
  model = info.get("model", {})
  return RunLine(model=str(model.get("name", "?")) if isinstance(model, dict) else "?",
                 task=str(info.get("task")), variant=str(info.get("variant")),
                 key=storage.basename(directory), status=status, n_done=len(found.done),
                 n_examples=info.get("n_examples"), metric=head.metric, value=head.value,
                 unparseable=head.unparseable, note="; ".join(notes),
                 interval=head.interval, caveats=caveats_lib.from_run_info(info))


def lines(results_dir: str) -> list[RunLine]:
  """Every run under RESULTS, sorted by model, task and variant."""
  found = [run_line(d) for d in results.run_dirs(results_dir)]
  return sorted(found, key=lambda r: (r.model, r.task, r.variant, r.key))


def _value(line: RunLine) -> str:
  if line.value is None:
    return "-"
  return f"{100 * line.value:.1f}%" if line.metric == "accuracy" else f"{line.value:.3f}"


def _interval(line: RunLine) -> str:
  if line.interval is None or not all(np.isfinite(line.interval)):
    return "-"
  low, high = line.interval
  if line.metric == "accuracy":
    return f"{100 * low:.1f}-{100 * high:.1f}%"
  return f"{low:.3f}-{high:.3f}"


def _caveats(line: RunLine) -> tuple[str, str]:
  """(setup, caveats) cells: dtype and BOS; subset, truncation, untrained."""
  if line.caveats is None:
    return "-", "-"
  return (caveats_lib.setup(line.caveats),
          "; ".join(caveats_lib.short_notes(line.caveats)) or "-")


def _examples(line: RunLine) -> str:
  return f"{line.n_done}" if line.n_examples in (None, line.n_done) else (
      f"{line.n_done}/{line.n_examples}")


def _cells(line: RunLine) -> list[str]:
  unparseable = "-" if line.unparseable is None else f"{100 * line.unparseable:.0f}%"
  metric = {"accuracy": "acc", "sequence loss": "seq loss"}.get(line.metric, line.metric)
  return [line.model, f"{line.task}.{line.variant}", line.status, _examples(line),
          f"{metric} {_value(line)}", _interval(line), unparseable, *_caveats(line),
          line.where]


HEADER = ["model", "task.variant", "status", "examples", "result", "95%-interval",
          "unparseable", "setup", "caveats", "records"]


def table(found: Sequence[RunLine], results_dir: str) -> str:
  """A fixed-width table for the terminal (records paths relative to RESULTS)."""
  rows = [HEADER] + [[checks.printable(c) for c in _cells(line)] for line in found]
  widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
  text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
  notes = [checks.printable(f"  {line.model} {line.task}.{line.variant}: {line.note}")
           for line in found if line.note]
  return "\n".join([checks.printable(f"results in {results_dir}"), *text, *notes]) + "\n"


def index_markdown(found: Sequence[RunLine]) -> str:
  head = ["# Results index", "",
          "One line per run (model x task x prompt variant); `records` is the run's directory, "
          "named by its run key. Rewritten by `invscale score` and `invscale results`. "
          "`result`: the task's headline metric (accuracy; loss for sequence tasks and for "
          "your own tasks that declare it). "
          "`95%-interval`: Wilson's for accuracy, mean +/- 1.96 SE for losses; `setup`: "
          "activation dtype and what precedes each prompt (BOS); `caveats`: a `--limit` "
          "subset (N of the task's M examples), prompts truncated or demonstrations dropped "
          "to fit `max_length`, untrained models.", "",
          "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
  body = []
  for line in found:
    cells = [checks.markdown_text(c) for c in _cells(line)]
    cells[-1] = f"[{cells[-1]}]({line.where}/)"
    body.append("| " + " | ".join(cells) + " |")
  return "\n".join(head + body) + "\n"


def write_index(results_dir: str, found: Sequence[RunLine]) -> str:
  """Rewrites RESULTS/INDEX.md in one write (readers see the old or the new index)."""
  path = storage.join(results_dir, INDEX)
  storage.write_text(path, index_markdown(found))
  return path


def show(results_dir: str, quiet: bool = False) -> list[RunLine]:
  """Writes INDEX.md and (unless `quiet`) prints the table to stdout."""
  results_dir = storage.absolute(results_dir)
  if not storage.is_dir(storage.join(results_dir, results.RUNS)):
    raise FileNotFoundError(f"{results_dir}: no results here (expected {results.RUNS}/)")
  found = lines(results_dir)
  write_index(results_dir, found)
  if not quiet:
    print(table(found, os.fspath(results_dir)), end="")
  return found
