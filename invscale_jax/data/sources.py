"""Where the SeqIO tasks read their examples: the release files, or the TFDS dataset.

Chosen by the gin macro INVSCALE_DATA_SOURCE, else $INVSCALE_DATA_SOURCE: `files` (the
default: the task files of the data dir, `datadir`) or `tfds` (the `inverse_scaling_prize`
dataset prepared by `invscale data tfds-build` or `tfds build`, read through
`seqio.TfdsDataSource` from INVSCALE_TFDS_DATA_DIR / $INVSCALE_TFDS_DATA_DIR, else TFDS's
default data dir). Both give the same examples, so the same prompts and requests.
"""

from __future__ import annotations

import os

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


def tfds_examples(spec: catalog.TaskSpec, tfds_data_dir: str | None = None) -> list[loader.Example]:
  """The examples of a task from the prepared TFDS dataset, in file order."""
  import seqio  # pylint: disable=g-import-not-at-top

  from invscale_jax.data import inverse_scaling_prize as dataset  # pylint: disable=g-import-not-at-top
  name = f"{dataset.NAME}/{spec.seqio_name}:{dataset.VERSION}"
  rows = seqio.TfdsDataSource(tfds_name=name, tfds_data_dir=tfds_data_dir).get_dataset(
      split=dataset.SPLIT, shuffle=False)
  return sorted((dataset.example(spec, r) for r in rows.as_numpy_iterator()),
                key=lambda e: e.example_id)


def load_examples(spec: task_registry.Task, data_dir: str | None = None) -> list[loader.Example]:
  """The examples of a task from the configured source (`data_dir`: the files' dir)."""
  if source() == TFDS and spec.prize:  # your own tasks are read from their directories
    return tfds_examples(spec, _setting(gin_macros.TFDS_DATA_DIR))
  return datadir.load_task(datadir.resolve(data_dir), spec.name)
