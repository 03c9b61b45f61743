"""Reads and validates task files: the official JSONL release and the Round-1 CSV format.

Every problem in a file is collected and reported as one line `FILE:LINE: FIELD: reason`;
`load` raises `DataError` carrying all of them, so callers write nothing from a bad file.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import json
import os
from typing import Any

from invscale_jax import catalog, storage


@dataclasses.dataclass(frozen=True)
class Example:
  """One row of a task file. Classification rows have `classes`; sequence rows `completion`."""

  task: str
  example_id: int  # 0-based row index in the file
  prompt: str
  classes: tuple[str, ...] = ()
  answer_index: int | None = None
  completion: str | None = None
  round: int | None = None
  part: int | None = None

  @property
  def answer(self) -> str:
    """The correct continuation: the right class, or the completion."""
    return self.completion if self.completion is not None else self.classes[self.answer_index]


@dataclasses.dataclass(frozen=True)
class Problem:
  file: str
  line: int
  field: str
  reason: str

  def __str__(self) -> str:
    return f"{self.file}:{self.line}: {self.field}: {self.reason}"


class DataError(ValueError):
  """A file with problems; `str()` is one line per problem."""

  def __init__(self, problems: list[Problem]):
    self.problems = problems
    super().__init__("\n".join(map(str, problems)))


def _parse_classes(value: Any) -> list[Any]:
  """`classes` is a Python list literal in a string, or a JSON list."""
  if isinstance(value, list):
    return value
  if not isinstance(value, str):
    raise ValueError(f"must be a list or a string holding one, got {type(value).__name__}")
  try:
    parsed = ast.literal_eval(value)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    try:
      parsed = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
      raise ValueError(f"not a Python or JSON list literal: {value[:40]!r}") from None
  if not isinstance(parsed, (list, tuple)):
    raise ValueError(f"must hold a list, got {type(parsed).__name__}")
  return list(parsed)


def _text_problem(text: str) -> str | None:
  """Why `text` is not valid Unicode (a lone surrogate, e.g. from a JSON "\\ud800"), or None."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    return f"lone surrogate {text[e.start]!r} at character {e.start} (not valid Unicode)"
  return None


def _optional_int(row: dict[str, Any], key: str, problems: list[tuple[str, str]]) -> int | None:
  value = row.get(key)
  if value in (None, ""):
    return None
  try:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
      raise ValueError
    return int(value)
  except (TypeError, ValueError):
    problems.append((key, f"must be an integer, got {value!r}"))
    return None


def _check_row(row: dict[str, Any], metric: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
  """Validates one parsed row; returns its fields and its problems as (field, reason)."""
  problems: list[tuple[str, str]] = []
  fields: dict[str, Any] = {}
  prompt = row.get("prompt")
  if prompt is None:
    problems.append(("prompt", "missing"))
  elif not isinstance(prompt, str) or not prompt.strip():
    problems.append(("prompt", "must be a non-empty string"))
  elif reason := _text_problem(prompt):
    problems.append(("prompt", reason))
  else:
    fields["prompt"] = prompt
  if metric == catalog.SEQUENCE_PROBABILITY:
    completion = row.get("completion")
    if completion is None:
      problems.append(("completion", "missing"))
    elif not isinstance(completion, str) or not completion:
      problems.append(("completion", "must be a non-empty string"))
    elif reason := _text_problem(completion):
      problems.append(("completion", reason))
    else:
      fields["completion"] = completion
  else:
    classes = None
    if "classes" not in row:
      problems.append(("classes", "missing"))
    else:
      try:
        classes = _parse_classes(row["classes"])
      except ValueError as e:
        problems.append(("classes", f"{e}"))
    if classes is not None:
      if not all(isinstance(c, str) and c for c in classes):
        problems.append(("classes", "every class must be a non-empty string"))
        classes = None
      elif bad := [(i, r) for i, r in enumerate(map(_text_problem, classes)) if r]:
        problems += [("classes", f"class {i}: {reason}") for i, reason in bad]
        classes = None
      elif len(set(classes)) < 2:
        problems.append(("classes", f"needs at least 2 distinct classes, got {classes!r}"))
        classes = None
      else:
        fields["classes"] = tuple(classes)
    if "answer_index" not in row or row["answer_index"] in (None, ""):
      problems.append(("answer_index", "missing"))
    else:
      index = _optional_int(row, "answer_index", problems)
      if index is not None and classes is not None and not 0 <= index < len(classes):
        problems.append(("answer_index", f"{index} out of range for {len(classes)} classes"))
      elif index is not None:
        fields["answer_index"] = index
  for key in ("round", "part"):
    fields[key] = _optional_int(row, key, problems)
  return fields, problems


def _jsonl_rows(text: str) -> list[tuple[int, Any, str | None]]:
  rows = []
  # Only "\n" ends a JSONL line: str.splitlines() would also split inside JSON strings
  # holding U+2028, U+0085 and the like, which JSON allows unescaped.
  for lineno, line in enumerate(text.split("\n"), 1):
    if not line.strip():
      continue
    try:
      rows.append((lineno, json.loads(line), None))
    except json.JSONDecodeError as e:
      rows.append((lineno, None, f"invalid JSON: {e.msg} (column {e.colno})"))
    except RecursionError:
      rows.append((lineno, None, "invalid JSON: nested too deeply"))
  return rows


def _csv_rows(text: str) -> list[tuple[int, Any, str | None]]:
  reader = csv.reader(io.StringIO(text, newline=""))
  try:
    header = next(reader)
  except (StopIteration, csv.Error):
    return []
  header = [h.strip() for h in header]
  rows, start = [], reader.line_num + 1
  try:
    for values in reader:
      if not values:  # a blank line, skipped as in JSONL
        pass
      elif len(values) != len(header):
        rows.append((start, None, f"expected {len(header)} columns, got {len(values)}"))
      else:
        rows.append((start, {k: v for k, v in zip(header, values) if k}, None))
      start = reader.line_num + 1
  except csv.Error as e:
    rows.append((start, None, f"invalid CSV: {e}"))
  return rows


def infer_metric(path: os.PathLike | str, rows: list[tuple[int, Any, str | None]]) -> str:
  """The metric of a file: from the catalog by file name, else from its first row's fields."""
  spec = catalog.by_filename(storage.basename(path))
  if spec is not None:
    return spec.metric
  for _, row, _ in rows:
    if isinstance(row, dict):
      return catalog.SEQUENCE_PROBABILITY if "completion" in row else catalog.CLASSIFICATION
  return catalog.CLASSIFICATION


def task_name(path: os.PathLike | str) -> str:
  """The release task name of a file (catalog file name, else the name before '_' or '.')."""
  name = storage.basename(path)
  spec = catalog.by_filename(name)
  return spec.name if spec else name.split("_")[0].split(".")[0]


def check(path: os.PathLike | str, metric: str | None = None,
          task: str | None = None) -> tuple[list[Example], list[Problem]]:
  """Parses and validates a whole file (a path or gs:// URL); returns its examples and
  every problem found."""
  path = where = os.fspath(path)
  try:
    data = storage.read_bytes(path)
  except FileNotFoundError:
    return [], [Problem(where, 0, "file", "not found")]
  except OSError as e:  # a directory, ...
    return [], [Problem(where, 0, "file", f"cannot read: {e.strerror or e}")]
  except storage.StorageError as e:  # unreadable (e.g. permission denied)
    return [], [Problem(where, 0, "file", e.detail)]
  try:
    text = data.decode("utf-8").removeprefix("\ufeff")  # drop a byte-order mark (Excel CSVs)
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    return [], [Problem(where, line, "file", f"not UTF-8 text ({e.reason} at byte {e.start})")]
  rows = _csv_rows(text) if path.lower().endswith(".csv") else _jsonl_rows(text)
  if not rows:
    return [], [Problem(where, 1, "file", "no rows")]
  metric = metric or infer_metric(path, rows)
  task = task or task_name(path)
  examples, problems = [], []
  for lineno, row, error in rows:
    if error is not None:
      problems.append(Problem(where, lineno, "line", error))
      continue
    if not isinstance(row, dict):
      problems.append(Problem(where, lineno, "line", f"must be a JSON object, got {type(row).__name__}"))
      continue
    fields, row_problems = _check_row(row, metric)
    problems.extend(Problem(where, lineno, f, r) for f, r in row_problems)
    if not row_problems:
      examples.append(Example(task=task, example_id=len(examples), **fields))
  return examples, problems


def load(path: os.PathLike | str, metric: str | None = None, task: str | None = None) -> list[Example]:
  """Loads a task file, raising `DataError` with every problem if there is any."""
  examples, problems = check(path, metric, task)
  if problems:
    raise DataError(problems)
  return examples
