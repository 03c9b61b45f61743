"""Your own tasks: a task directory holds one declaration per task, `<name>.task.json`::

  {"name": "lab-conflict", "type": "classification", "metric": "accuracy",
   "file": "lab-conflict.jsonl", "cot_exemplars": "lab-conflict.cot.json",
   "description": "free text", "demos_in_prompt": false}

- name: `[a-z][a-z0-9-]*`, at most 64 characters, the file's own name, not a prize task's;
  its SeqIO tasks are `invscale:<name with - as _>.<variant>`.
- type: `classification` or `sequence_probability`: the task file is in that prize format
  (checked by `loader`, like the release files).
- metric: the headline metric, `accuracy` or `loss` (classification; default accuracy),
  `loss` (sequence probability).
- file, cot_exemplars: paths relative to the declaration's directory (no `..`, not
  absolute); cot_exemplars (optional) is in the format of `seqio_tasks/cot_exemplars/`,
  and without it the task has no chain-of-thought variants.
- description (optional text), demos_in_prompt (optional bool: prompts already hold
  demonstrations). Any other key is an error.

A bad declaration raises `DeclarationError`, one line `FILE: FIELD: reason`.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from typing import Any, ClassVar, NoReturn, Sequence

from invscale_jax import catalog, storage

SUFFIX = ".task.json"
NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")
TYPES = (catalog.CLASSIFICATION, catalog.SEQUENCE_PROBABILITY)
METRICS = {catalog.CLASSIFICATION: ("accuracy", "loss"), catalog.SEQUENCE_PROBABILITY: ("loss",)}
FIELDS = ("name", "type", "metric", "file", "cot_exemplars", "description", "demos_in_prompt")


class DeclarationError(ValueError):
  """A task declaration or directory that cannot be used; the message is one line."""


@dataclasses.dataclass(frozen=True)
class UserTask:
  """A declared task. `metric` is its kind, as in `catalog.TaskSpec` (the declaration's
  `type`); `headline` is the declaration's `metric`."""

  name: str
  metric: str  # catalog.CLASSIFICATION or catalog.SEQUENCE_PROBABILITY
  headline: str  # "accuracy" or "loss"
  file: str  # as declared: relative to `directory`
  cot_exemplars: str | None = None
  description: str = ""
  demos_in_prompt: bool = False
  directory: str = ""  # the task directory ("" for a task read back from results)

  prize: ClassVar[bool] = False
  changed_after_evaluation: ClassVar[bool] = False

  @property
  def seqio_name(self) -> str:
    return self.name.replace("-", "_")

  @property
  def source(self) -> str:
    """The declaration file."""
    return storage.join(self.directory, self.name + SUFFIX)

  def file_path(self) -> str:
    return storage.join(self.directory, self.file)

  @property
  def exemplar_path(self) -> str | None:
    return None if self.cot_exemplars is None else storage.join(self.directory,
                                                                  self.cot_exemplars)

  def declaration(self) -> dict[str, Any]:
    """The declaration's content, defaults filled in (a run key part, kept in run.json)."""
    return {"name": self.name, "type": self.metric, "metric": self.headline,
            "file": self.file, "cot_exemplars": self.cot_exemplars,
            "description": self.description, "demos_in_prompt": self.demos_in_prompt}


def _fail(where: str, field: str, reason: str) -> NoReturn:
  raise DeclarationError(" ".join(f"{where}: {field}: {reason}".split()))


def _relative_path(where: str, field: str, value: Any) -> str:
  if not isinstance(value, str) or not value.strip():
    _fail(where, field, f"must be a non-empty relative path, got {value!r}")
  if value.startswith(("/", "~", "\\")) or "://" in value or re.match(r"[A-Za-z]:", value):
    _fail(where, field, f"must be relative to the declaration's directory, got {value!r}")
  if ".." in re.split(r"[/\\]", value):
    _fail(where, field, f"must not leave the declaration's directory ('..'), got {value!r}")
  return posixpath.normpath(value.replace("\\", "/"))


def parse(raw: Any, where: str, directory: str = "") -> UserTask:
  """A declaration's JSON value -> UserTask; `where` names it in errors."""
  if not isinstance(raw, dict):
    _fail(where, "file", f"must hold a JSON object, got {type(raw).__name__}")
  if unknown := sorted(set(raw) - set(FIELDS)):
    _fail(where, unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
  for key in ("name", "type", "file"):
    if key not in raw:
      _fail(where, key, "missing")
  name = raw["name"]
  if not isinstance(name, str) or not NAME.fullmatch(name):
    _fail(where, "name", f"must match [a-z][a-z0-9-]* (at most 64 characters), got {name!r}")
  if name in {t.name for t in catalog.TASKS}:
    _fail(where, "name", f"{name!r} is a prize task's name; choose another")
  kind = raw["type"]
  if kind not in TYPES:
    _fail(where, "type", f"must be one of {', '.join(TYPES)}, got {kind!r}")
  headline = raw.get("metric", METRICS[kind][0])
  if headline not in METRICS[kind]:
    _fail(where, "metric", f"must be one of {', '.join(METRICS[kind])} for a {kind} task, "
                           f"got {headline!r}")
  exemplars = raw.get("cot_exemplars")
  if exemplars is not None:
    exemplars = _relative_path(where, "cot_exemplars", exemplars)
  description = raw.get("description", "")
  if not isinstance(description, str):
    _fail(where, "description", f"must be a string, got {description!r}")
  demos = raw.get("demos_in_prompt", False)
  if not isinstance(demos, bool):
    _fail(where, "demos_in_prompt", f"must be true or false, got {demos!r}")
  return UserTask(name=name, metric=kind, headline=headline,
                  file=_relative_path(where, "file", raw["file"]), cot_exemplars=exemplars,
                  description=description, demos_in_prompt=demos, directory=directory)


def read(path: str) -> UserTask:
  """Reads and checks one `<name>.task.json`, and that the files it names exist."""
  try:
    raw = json.loads(storage.read_text(path))
  except FileNotFoundError:
    _fail(path, "file", "not found")
  except json.JSONDecodeError as e:
    _fail(path, "file", f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})")
  except storage.StorageError as e:  # not UTF-8 text, unreadable
    _fail(path, "file", e.detail)
  except RecursionError:
    _fail(path, "file", "invalid JSON: nested too deeply")
  task = parse(raw, path, storage.parent(path))
  if storage.basename(path) != task.name + SUFFIX:
    _fail(path, "name", f"{task.name!r} differs from the file's name (expected "
                        f"{task.name}{SUFFIX})")
  for field, target in (("file", task.file_path()), ("cot_exemplars", task.exemplar_path)):
    if target is not None and not storage.is_file(target):
      _fail(path, field, f"{target} not found")
  return task


def read_dir(directory: str) -> list[UserTask]:
  """Every declaration in a task directory (a local path or gs:// URL), by name."""
  directory = storage.absolute(directory)
  if not storage.is_dir(directory):
    raise DeclarationError(f"{directory}: task directory not found")
  names = [n for n in storage.children(directory) if n.endswith(SUFFIX)]
  if not names:
    raise DeclarationError(f"{directory}: no task declarations (<name>{SUFFIX}) in the "
                           f"task directory")
  return [read(storage.join(directory, n)) for n in names]


def read_dirs(directories: Sequence[str]) -> list[UserTask]:
  """The tasks of several directories (each read once); a name declared twice is an error."""
  tasks: dict[str, UserTask] = {}
  for directory in dict.fromkeys(storage.absolute(d) for d in directories):
    for task in read_dir(directory):
      if task.name in tasks:
        raise DeclarationError(f"{task.source}: name: task {task.name!r} is also declared "
                               f"in {tasks[task.name].source}")
      tasks[task.name] = task
  return list(tasks.values())
