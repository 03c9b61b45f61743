"""Where the SeqIO tasks read their examples: the release files, or the TFDS dataset.

Chosen by the gin macro INVSCALE_DATA_SOURCE, else $INVSCALE_DATA_SOURCE: `files` (the
default: the task files of the data dir, `datadir`) or `tfds` (the `inverse_scaling_prize`
dataset prepared by `invscale data tfds-build` or `tfds build`, read through
`seqio.TfdsDataSource` from INVSCALE_TFDS_DATA_DIR / $INVSCALE_TFDS_DATA_DIR, else TFDS's
default data dir). Both give the same examples, so the same prompts and requests.
"""

from __future__ import annotations

import os
from typing import Callable

from invscale_jax import catalog, gin_macros, task_registry
from invscale_jax.data import datadir, loader

FILES = "files"
TFDS = "tfds"
SOURCES = (FILES, TFDS)


def _setting(name: str) -> str | None:
  return gin_macros.value(name) or os.environ.get(name)


def source() -> str:
  """The configured data source (see the module docstring)."""
  chosen = _setting(gin_macros.DATA_SOURCE) or FILES
  if chosen not in SOURCES:
    raise ValueError(f"{gin_macros.DATA_SOURCE}: must be one of {', '.join(SOURCES)}, got "
                     f"{chosen!r}")
  return chosen


# Reads a task's examples from the TFDS dataset: `tfds_source.examples`, which imports
# SeqIO and TFDS, so it is set (`use_tfds`) by those that choose this source: `invscale
# score` and the SeqIO tasks (seqio_tasks/tasks.py).
_tfds_examples: Callable[[catalog.TaskSpec, str | None], list[loader.Example]] | None = None


def use_tfds(examples: Callable[[catalog.TaskSpec, str | None], list[loader.Example]]) -> None:
  """Sets how the TFDS source is read (`tfds_source.examples`)."""
  global _tfds_examples
  _tfds_examples = examples


def load_examples(spec: task_registry.Task, data_dir: str | None = None) -> list[loader.Example]:
  """The examples of a task from the configured source (`data_dir`: the files' dir)."""
  if source() == TFDS and spec.prize:  # your own tasks are read from their directories
    if _tfds_examples is None:
      raise ValueError(f"{gin_macros.DATA_SOURCE} = {TFDS!r}: its reader is not set; call "
                       f"data.sources.use_tfds(data.tfds_source.examples) or import seqio_tasks")
    return _tfds_examples(spec, _setting(gin_macros.TFDS_DATA_DIR))
  return datadir.load_task(datadir.resolve(data_dir), spec.name)
