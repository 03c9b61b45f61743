"""External results (e.g. published PaLM numbers) read from CSV and drawn beside the runs.

Columns: model, compute, task, metric, value; optional ci_low, ci_high, variant (default
zero_shot), family (default: the file's stem), n_params. `compute` may be blank when
n_params is given. `task` is a task name or "average". Values must lie in their metric's
range (accuracies and rates 0 to 1, losses >= 0, total_logprob <= 0), with ci_low <= value
<= ci_high; compute and n_params are positive; a field holds at most 128 KiB (csv's limit).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import pathlib

from invscale_jax import storage
from invscale_jax.report import metrics as metrics_lib
from invscale_jax.report.errors import ReportError
from invscale_jax.report.load import task_name

REQUIRED = ("model", "compute", "task", "metric", "value")
AVERAGE = "average"


@dataclasses.dataclass(frozen=True)
class ExternalPoint:
  family: str
  model: str
  compute: float | None
  n_params: float | None
  task: str
  variant: str
  metric: str
  value: float
  ci_low: float | None
  ci_high: float | None
  source: str  # FILE:LINE


def value_range(metric: str) -> tuple[float, float]:
  """The values a metric can take."""
  if metric.startswith("loss"):
    return 0.0, math.inf
  return (-math.inf, 0.0) if metric == "total_logprob" else (0.0, 1.0)


def _check_point(p: ExternalPoint) -> None:
  low, high = value_range(p.metric)
  for column in ("value", "ci_low", "ci_high"):
    v = getattr(p, column)
    if v is not None and not low <= v <= high:
      raise ReportError(f"{p.source}: {column}: {v:g} is outside the range of {p.metric} "
                        f"({low:g} to {high:g})")
  if not (p.ci_low if p.ci_low is not None else p.value) <= p.value <= (
      p.ci_high if p.ci_high is not None else p.value):
    raise ReportError(f"{p.source}: value: {p.value:g} is outside [ci_low, ci_high]")
  for column in ("compute", "n_params"):
    v = getattr(p, column)
    if v is not None and v <= 0:
      raise ReportError(f"{p.source}: {column}: must be positive, got {v:g}")


def _number(text: str | None, where: str, column: str, required: bool) -> float | None:
  if text is None or not text.strip():
    if required:
      raise ReportError(f"{where}: {column}: missing")
    return None
  try:
    value = float(text)
  except ValueError:
    raise ReportError(f"{where}: {column}: not a number: {text!r}") from None
  if not math.isfinite(value):
    raise ReportError(f"{where}: {column}: not finite: {text!r}")
  return value


def read_external(path: str | pathlib.Path) -> list[ExternalPoint]:
  """Reads one external CSV; every problem raises ReportError naming FILE:LINE and column."""
  path = os.fspath(path)
  try:
    reader = csv.DictReader(io.StringIO(storage.read_text(path), newline=""))
    rows = list(reader)
    columns = rows[0].keys() if rows else []
  except (OSError, storage.StorageError) as e:
    raise ReportError(f"{path}: unreadable: {e}") from None
  except csv.Error as e:  # e.g. a field over the 128 KiB limit
    raise ReportError(f"{path}:{reader.line_num + 1}: not valid CSV: {e}") from None
  missing = [c for c in REQUIRED if c not in columns]
  if not rows or missing:
    raise ReportError(f"{path}: needs a header and rows with columns {', '.join(REQUIRED)}"
                      + (f" (missing {', '.join(missing)})" if rows else ""))
  points = []
  for line, row in enumerate(rows, 2):
    where = f"{path}:{line}"
    if row["metric"] not in metrics_lib.METRICS:
      raise ReportError(f"{where}: metric: unknown {row['metric']!r}; known: "
                        f"{', '.join(metrics_lib.METRICS)}")
    task = AVERAGE if row["task"] == AVERAGE else task_name(row["task"], where)
    compute = _number(row["compute"], where, "compute", required=False)
    n_params = _number(row.get("n_params"), where, "n_params", required=False)
    if compute is None and n_params is None:
      raise ReportError(f"{where}: compute: missing (and no n_params)")
    point = ExternalPoint(
        family=(row.get("family") or os.path.splitext(storage.basename(path))[0]).strip(),
        model=row["model"].strip(),
        compute=compute, n_params=n_params, task=task,
        variant=(row.get("variant") or "zero_shot").strip(), metric=row["metric"],
        value=_number(row["value"], where, "value", required=True),
        ci_low=_number(row.get("ci_low"), where, "ci_low", required=False),
        ci_high=_number(row.get("ci_high"), where, "ci_high", required=False), source=where)
    _check_point(point)
    points.append(point)
  return points
