"""Every task the project knows: the 11 prize tasks (`catalog`) and your own, declared in
task directories (`data.declarations`). Code that takes a task name looks it up here.

Task directories come from, in this order (a task name declared twice is an error):
`--task_dirs` on the command line, a family manifest's `task_dirs`, the gin macro
`INVSCALE_TASK_DIRS` (a list of strings) and the environment variable of that name
(comma-separated). Commands call `use` with theirs; `import seqio_tasks` adds those of
gin and the environment (`environment_dirs`), and so does `get` for a name it does not
know yet (gin bound after the import).

Names are accepted in every spelling the project prints: the release name (`memo-trap`),
the SeqIO name (`memo_trap`), either with a variant (`memo_trap.zero_shot`), and the
SeqIO task name (`invscale:memo_trap.zero_shot`).
"""

from __future__ import annotations

import difflib
import os
from typing import Iterable, Sequence, Union

from invscale_jax import catalog, gin_macros
from invscale_jax.data import declarations
from invscale_jax.data.declarations import DeclarationError, UserTask

PREFIX = "invscale"  # SeqIO task names are `invscale:<seqio name>.<variant>`
ENV_VAR = gin_macros.TASK_DIRS  # the environment variable has the gin macro's name
Task = Union[catalog.TaskSpec, UserTask]

_declared: dict[str, UserTask] = {}


def use(directories: Sequence[str]) -> list[UserTask]:
  """Makes the tasks declared in `directories` the declared tasks (replacing any before:
  a process may run several commands); returns them."""
  tasks = declarations.read_dirs(directories)
  _declared.clear()
  add(tasks)
  return tasks


def add(tasks: Iterable[UserTask]) -> None:
  """Declares more tasks. The same declaration again changes nothing; another declaration
  with a name already taken is an error."""
  for task in tasks:
    old = _declared.get(task.name)
    if old is not None and old.declaration() != task.declaration():
      raise DeclarationError(f"{task.source or task.name}: task {task.name!r} is also "
                             f"declared, differently, in {old.source or 'the results'}")
    if old is None or not old.directory:
      _declared[task.name] = task


def declared() -> tuple[UserTask, ...]:
  return tuple(sorted(_declared.values(), key=lambda t: t.name))


def known() -> tuple[Task, ...]:
  """The prize tasks, then the declared ones by name."""
  return catalog.TASKS + declared()


def environment_dirs() -> list[str]:
  """The task directories named by the gin macro INVSCALE_TASK_DIRS, then by the
  environment variable INVSCALE_TASK_DIRS."""
  bound = gin_macros.value(gin_macros.TASK_DIRS, [])
  if isinstance(bound, str):
    bound = [bound]
  if not isinstance(bound, (list, tuple)) or not all(isinstance(d, str) for d in bound):
    raise DeclarationError(f"gin macro {gin_macros.TASK_DIRS}: must be a list of "
                           f"directories, got {bound!r}")
  return [*bound, *(d.strip() for d in os.environ.get(ENV_VAR, "").split(",") if d.strip())]


def _unknown(name: str) -> KeyError:
  names = [t.name for t in known()]
  close = difflib.get_close_matches(name.replace("_", "-"), names, n=1)
  hint = f"; did you mean {close[0]}?" if close else ""
  return KeyError(f"unknown task {name!r}{hint} (known: {', '.join(names)}; your own tasks "
                  f"come from --task_dirs, a manifest's task_dirs or ${ENV_VAR})")


def _find(name: str) -> Task | None:
  return next((t for t in known() if name in (t.name, t.seqio_name)), None)


def get(name: str) -> Task:
  """A task by release name ("memo-trap") or SeqIO name ("memo_trap"). A name not declared
  yet is looked for in the directories gin and the environment name now: a gin file may
  bind INVSCALE_TASK_DIRS after it imports `seqio_tasks`, or a flag after that file."""
  task = _find(name)
  if task is None:
    add(declarations.read_dirs(environment_dirs()))
    task = _find(name)
  if task is None:
    raise _unknown(name)
  return task


def parse(name: str) -> tuple[Task, str | None]:
  """(task, variant or None) of a name in any spelling; the variant is not checked here
  (`data.variants.parse` does)."""
  text = name.strip()
  prefix, colon, rest = text.partition(":")
  if colon:
    if prefix != PREFIX:
      raise KeyError(f"unknown task {name!r}: SeqIO task names start with {PREFIX}:")
    text = rest
  task, dot, variant = text.partition(".")
  if dot and not variant:
    raise KeyError(f"task {name!r}: no variant after '.'")
  try:
    return get(task), variant or None
  except KeyError:
    raise _unknown(name) from None
