"""T5X infer's score-mode output files, read into result records (no T5X needed).

T5X's infer.py in mode 'score' writes, for each task of its run, into its output dir:

  <task name>-score.jsonl-SSSSS-of-NNNNN             one per input shard (00000-of-00001 usually)
  <task name>-score.jsonl-SSSSS-of-NNNNN.COMPLETED   empty, written when that file is whole

one JSON line per row: `{"inputs": {FEATURE: value, ...}, "score": log p(targets | inputs)}`.
`inputs` holds the task's `*_pretokenized` features and, when its write function is given
`input_fields_to_include`, those fields too: numbers as floats (an example id 3 is 3.0),
strings as text, token ids as lists padded with 0 to the longest row of their chunk.
gin/t5x/score_invscale.gin asks for `FIELDS`, which is what regroups rows into examples
(`example_id`, `class_index`) and makes the records `invscale score` writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from invscale_jax import catalog, records, storage
from invscale_jax.console import warn
from invscale_jax.data import variants as variants_lib

PREFIX = "invscale"  # the SeqIO tasks' names: invscale:<task>.<variant>
# The fields score_invscale.gin has T5X write (besides the *_pretokenized it always writes).
FIELDS = ("example_id", "class_index", "n_classes", "answer_index", "task", "variant",
          "n_demos_dropped", "targets")
_OUTPUT = re.compile(r"(?P<task>.+)-score\.jsonl-(?P<shard>\d{5})-of-(?P<shards>\d{5})")
_TMP = re.compile(r"tmp-(?P<task>.+)-\d{5}-of-\d{5}")  # T5X's chunks before they are merged
COMPLETED = ".COMPLETED"


@dataclasses.dataclass(frozen=True)
class Output:
  """The complete score-mode output of one task variant in an infer dir."""

  task: catalog.TaskSpec
  variant: variants_lib.Variant
  files: tuple[str, ...]  # its shards' paths, in shard order


def parse_task_name(name: str, where: str) -> tuple[catalog.TaskSpec, variants_lib.Variant]:
  """`invscale:<task>.<variant>` -> (task, variant); anything else raises naming `where`."""
  prefix, _, rest = name.partition(":")
  task, _, variant = rest.partition(".")
  try:
    if prefix != PREFIX or not variant:
      raise ValueError(f"not of the form {PREFIX}:<task>.<variant>")
    return catalog.get(task), variants_lib.parse(variant)
  except (KeyError, ValueError) as e:
    raise ValueError(f"{where}: task {name!r}: {e.args[0]}") from None


def find_outputs(directory: str) -> list[Output]:
  """The complete score-mode outputs of invscale tasks in a T5X infer output dir; a
  missing shard or `.COMPLETED` marker raises (T5X has not finished writing them)."""
  names = set(storage.children(directory))
  shards: dict[str, dict[int, tuple[int, str]]] = {}
  for name in sorted(names):
    match = _OUTPUT.fullmatch(name)
    if match and match["task"].startswith(PREFIX + ":"):
      shards.setdefault(match["task"], {})[int(match["shard"])] = (int(match["shards"]), name)
  for name in sorted(names):
    match = _TMP.fullmatch(name)
    if match and match["task"].startswith(PREFIX + ":") and match["task"] not in shards:
      warn(f"{storage.join(directory, name)}: {match['task']} is still being written by T5X "
           f"infer (chunks not merged yet); not imported")
  found = []
  for task_name, by_shard in shards.items():
    path = storage.join(directory, next(iter(by_shard.values()))[1])
    spec, variant = parse_task_name(task_name, path)
    n = {count for count, _ in by_shard.values()}
    if len(n) != 1 or set(by_shard) != set(range(n.pop())):
      raise ValueError(f"{path}: shards {sorted(by_shard)} of {task_name} are there, of "
                       f"{sorted(count for count, _ in by_shard.values())[-1]}: T5X infer "
                       f"has not written them all")
    files = [storage.join(directory, by_shard[s][1]) for s in sorted(by_shard)]
    for path in files:
      if storage.basename(path) + COMPLETED not in names:
        raise ValueError(f"{path}: no {COMPLETED} marker beside it: T5X infer has not "
                         f"finished writing it (re-run it; it resumes)")
    found.append(Output(spec, variant, tuple(files)))
  if not found:
    raise ValueError(f"{directory}: no T5X infer score output of an {PREFIX} task "
                     f"({PREFIX}:<task>.<variant>-score.jsonl-00000-of-00001 and its "
                     f"{COMPLETED} marker)")
  return found


def _integer(value: Any, field: str) -> int:
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
      or value != int(value)):
    raise ValueError(f"{field}: must be an integer, got {value!r}")
  return int(value)


def _row(line: str, output: Output) -> tuple[dict[str, Any], float]:
  """The pass-through fields and the score of one line."""
  try:
    data = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"invalid JSON: {e.msg}") from None
  if not isinstance(data, dict) or not isinstance(data.get("inputs"), dict) or "score" not in data:
    raise ValueError("not a T5X score line ({\"inputs\": {...}, \"score\": ...}); was T5X run "
                     "with infer.mode = 'score'?")
  score = data["score"]
  if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
    raise ValueError(f"score: must be a finite number, got {score!r}")
  inputs = data["inputs"]
  missing = [f for f in (*FIELDS, "targets_pretokenized") if f not in inputs]
  if missing:
    raise ValueError(f"inputs: no {', '.join(missing)}: T5X was not asked to write the task's "
                     f"pass-through fields; run infer with gin/t5x/score_invscale.gin "
                     f"(write_inferences_to_file.input_fields_to_include)")
  row = {f: _integer(inputs[f], f) for f in ("example_id", "class_index", "n_classes",
                                             "answer_index", "n_demos_dropped")}
  where = (inputs["task"], inputs["variant"])
  if where != (output.task.name, output.variant.name):
    raise ValueError(f"a row of {where[0]}.{where[1]} in the output of "
                     f"{output.task.name}.{output.variant.name} (a file of another task?)")
  targets = inputs["targets"]
  if not isinstance(targets, list) or not all(isinstance(t, (int, float)) for t in targets):
    raise ValueError(f"targets: must be a list of token ids, got {targets!r}")
  while targets and targets[-1] == 0:  # padding to the longest row of T5X's chunk
    targets = targets[:-1]
  row.update(text=str(inputs["targets_pretokenized"]), n_tokens=len(targets))
  return row, float(score)


def _record(row: dict[str, Any], score: float, output: Output, model: str,
            run_key: str) -> records.Record:
  is_class = output.task.metric == catalog.CLASSIFICATION
  return records.Record(
      run_key=run_key, model=model, task=output.task.name, variant=output.variant.name,
      example_id=row["example_id"], kind=records.CLASS if is_class else records.SEQUENCE,
      class_index=row["class_index"] if is_class else None,
      n_classes=row["n_classes"] if is_class else 1,
      answer_index=row["answer_index"] if is_class else None, logprob=score,
      n_tokens=row["n_tokens"], n_bytes=len(row["text"].encode("utf-8")),
      is_correct=row["class_index"] == row["answer_index"] if is_class else None,
      n_demos_dropped=row["n_demos_dropped"])


def _example_problem(recs: list[records.Record]) -> str | None:
  first = recs[0]
  if first.kind == records.SEQUENCE:
    return None
  if any((r.n_classes, r.answer_index) != (first.n_classes, first.answer_index) for r in recs):
    return "its rows disagree on n_classes or answer_index"
  indices = {r.class_index for r in recs}
  missing = sorted(set(range(first.n_classes)) - indices)
  if missing:
    return f"class {', '.join(map(str, missing))} of {first.n_classes} missing"
  if indices != set(range(first.n_classes)):
    return f"class indices {sorted(indices)} for {first.n_classes} classes"
  if not 0 <= first.answer_index < first.n_classes:
    return f"answer_index {first.answer_index} out of range for {first.n_classes} classes"
  return None


def read_output(output: Output, model: str, run_key: str) -> list[records.Record]:
  """The records of one task variant's files (sorted by example and class); a bad,
  duplicated or missing row raises naming the file and line."""
  recs: dict[tuple[int, int | None], records.Record] = {}
  lines: dict[tuple[int, int | None], str] = {}
  for path in output.files:
    text = storage.read_text(path)
    for lineno, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        record = _record(*_row(line, output), output, model, run_key)
      except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
      key = (record.example_id, record.class_index)
      if key in lines:
        raise ValueError(f"{where}: example {key[0]}"
                         f"{'' if key[1] is None else f' class {key[1]}'}: duplicated row "
                         f"(also at {lines[key]})")
      recs[key], lines[key] = record, where
  by_example: dict[int, list[records.Record]] = {}
  for key in sorted(recs, key=lambda k: (k[0], -1 if k[1] is None else k[1])):
    by_example.setdefault(key[0], []).append(recs[key])
  label = f"{output.files[0]}: {output.task.name}.{output.variant.name}"
  if not by_example:
    raise ValueError(f"{label}: no rows")
  missing = sorted(set(range(max(by_example) + 1)) - set(by_example))
  if missing or min(by_example) < 0:
    raise ValueError(f"{label}: examples {missing[:5] or [min(by_example)]} missing (example "
                     f"ids must be 0..{max(by_example)}): not every row of the task is there")
  for example, example_recs in by_example.items():
    problem = _example_problem(example_recs)
    if problem:
      raise ValueError(f"{label}: example {example}: {problem}")
  return [r for example_recs in by_example.values() for r in example_recs]
