"""Where task files live, and what state they are in.

The data directory is chosen by, in order: the `--data_dir` flag, the gin macro
`INVSCALE_DATA_DIR`, the environment variable INVSCALE_DATA_DIR, and the default
`~/.cache/invscale_jax/inverse_scaling`. It may be a `gs://` URL: files are read through
`storage`. A declared task's file is where its declaration says, whatever the data directory.
"""

from __future__ import annotations

import dataclasses
import os

from typing import Any

from invscale_jax import catalog, content_hash, gin_macros, storage, task_registry
from invscale_jax.data import cot, loader
from invscale_jax.data.variants import Variant

ENV_VAR = gin_macros.DATA_DIR  # the environment variable has the gin macro's name
DEFAULT = "~/.cache/invscale_jax/inverse_scaling"

PRESENT_VERIFIED = "verified"
PRESENT_DIFFERS = "differs"  # present, but not the official file (e.g. a fixture)
MISSING = "missing"


def resolve(flag: str | None = None) -> str:
  """The data directory: flag, then gin, then $INVSCALE_DATA_DIR, then the default."""
  for candidate in (flag, gin_macros.value(gin_macros.DATA_DIR), os.environ.get(ENV_VAR),
                    DEFAULT):
    if candidate:
      return candidate if storage.is_url(candidate) else os.path.expanduser(candidate)
  raise AssertionError("unreachable")


def sha256_of(path: os.PathLike | str) -> str:
  """sha256 of a file's contents, cached while the file is unchanged (`content_hash`)."""
  return content_hash.file_sha256(path)


def task_path(data_dir: os.PathLike | str, spec: task_registry.Task) -> str:
  """A prize task's file in the data directory, or a declared task's own file."""
  return storage.join(data_dir, spec.filename) if spec.prize else spec.file_path()


@dataclasses.dataclass(frozen=True)
class TaskStatus:
  spec: catalog.TaskSpec
  state: str  # PRESENT_VERIFIED, PRESENT_DIFFERS or MISSING
  rows: int | None = None
  problems: int = 0


def status(data_dir: os.PathLike | str) -> list[TaskStatus]:
  """The state of every catalog task in `data_dir`, with row and problem counts."""
  result = []
  for spec in catalog.TASKS:
    path = task_path(data_dir, spec)
    if not storage.is_file(path):
      result.append(TaskStatus(spec, MISSING))
      continue
    examples, problems = loader.check(path, spec.metric, spec.name)
    state = PRESENT_VERIFIED if sha256_of(path) == spec.sha256 else PRESENT_DIFFERS
    result.append(TaskStatus(spec, state, len(examples), len(problems)))
  return result


def present_tasks(data_dir: os.PathLike | str) -> list[catalog.TaskSpec]:
  """Catalog tasks whose file exists in `data_dir`."""
  return [spec for spec in catalog.TASKS if storage.is_file(task_path(data_dir, spec))]


def load_task(data_dir: os.PathLike | str, task: str) -> list[loader.Example]:
  """Loads one task from the data directory (a declared task from its own file), with a
  clear error when it is absent."""
  spec = task_registry.get(task)
  path = task_path(data_dir, spec)
  if not spec.prize and not storage.is_file(path):
    raise FileNotFoundError(f"{spec.source}: file: {path} not found")
  if not storage.is_file(path):
    raise FileNotFoundError(f"{path}: task file for {spec.name} not found; run "
                            f"`invscale data download --data_dir {data_dir}` or point "
                            f"--data_dir / {ENV_VAR} at a directory holding it")
  return loader.load(path, spec.metric, spec.name)


def key_parts(spec: task_registry.Task, variant: Variant, data_dir: str) -> dict[str, Any]:
  """What of a task goes into the run key of a run on it: everything that builds its
  prompts. The task file's content; a declared task's declaration; and for a variant whose
  prompts hold the worked CoT exemplar, the exemplar's content."""
  parts: dict[str, Any] = {"task": spec.name,
                           "data_sha256": sha256_of(task_path(data_dir, spec))}
  if not spec.prize:
    parts["task_spec"] = spec.declaration()
  if variant.worked_exemplar:
    cot.load_exemplar(spec.name)  # a bad exemplar fails here, before any model is loaded
    parts["cot_exemplar_sha256"] = sha256_of(cot.exemplar_path(spec.name))
  return parts
