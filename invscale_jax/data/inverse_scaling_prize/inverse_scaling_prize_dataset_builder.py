"""`inverse_scaling_prize`: the prize's released task files as a TFDS dataset.

One config per task (its SeqIO name: `memo_trap`, `neqa`, ...), one `test` split in file
order (`example_id` is the row index). Classification configs have `prompt`, `classes`,
`answer_index`; prompt-injection has `prompt` and `completion`; every config `round` and
`part` (-1 where a row has none). Built from the official files only: each is read from
the manual dir (local or `gs://`: the directory `invscale data download` fills) and its
sha256 must be the catalog's, so a dataset built here holds exactly the release. Nothing
is downloaded:

  tfds build invscale_jax/data/inverse_scaling_prize --manual_dir DATA_DIR \
      [--config memo_trap] [--data_dir TFDS_DATA_DIR]

The SeqIO tasks read it with `INVSCALE_DATA_SOURCE = 'tfds'` (see `data.sources`).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from invscale_jax import catalog, storage
from invscale_jax.data import datadir, loader

NAME = "inverse_scaling_prize"
VERSION = "1.0.0"
SPLIT = "test"


def features(metric: str) -> tfds.features.FeaturesDict:
  """The features of a task with this metric."""
  common = {"example_id": tfds.features.Scalar(np.int32), "prompt": tfds.features.Text(),
            "round": tfds.features.Scalar(np.int32), "part": tfds.features.Scalar(np.int32)}
  if metric == catalog.CLASSIFICATION:
    common.update(classes=tfds.features.Sequence(tfds.features.Text()),
                  answer_index=tfds.features.Scalar(np.int32))
  else:
    common.update(completion=tfds.features.Text())
  return tfds.features.FeaturesDict(common)


def row(example: loader.Example) -> dict:
  """The features of one example."""
  out = {"example_id": example.example_id, "prompt": example.prompt,
         "round": -1 if example.round is None else example.round,
         "part": -1 if example.part is None else example.part}
  if example.completion is None:
    out.update(classes=list(example.classes), answer_index=example.answer_index)
  else:
    out.update(completion=example.completion)
  return out


def example(spec: catalog.TaskSpec, features_row: dict) -> loader.Example:
  """The `Example` of one row as TFDS gives it (numpy values, text as bytes)."""
  text = lambda v: v.decode("utf-8")
  optional = lambda v: None if int(v) < 0 else int(v)
  common = dict(task=spec.name, example_id=int(features_row["example_id"]),
                prompt=text(features_row["prompt"]), round=optional(features_row["round"]),
                part=optional(features_row["part"]))
  if spec.metric == catalog.CLASSIFICATION:
    return loader.Example(**common, classes=tuple(map(text, features_row["classes"])),
                          answer_index=int(features_row["answer_index"]))
  return loader.Example(**common, completion=text(features_row["completion"]))


class InverseScalingPrize(tfds.core.GeneratorBasedBuilder):
  """The Inverse Scaling Prize tasks, one config per task."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "The prize's released files (catalog sha256)."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=spec.seqio_name, description=spec.name)
                     for spec in catalog.TASKS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the release's task files in the manual dir (`invscale data download --data_dir "
      "DIR`, then `--manual_dir DIR`; a gs:// URL works too).")

  @property
  def spec(self) -> catalog.TaskSpec:
    return catalog.get(self.builder_config.name)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features(self.spec.metric),
        homepage="https://github.com/inverse-scaling/prize",
        description=f"Inverse Scaling Prize task {self.spec.name} ({self.spec.metric}).")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    path = datadir.task_path(str(dl_manager.manual_dir), self.spec)
    if not storage.is_file(path):
      raise FileNotFoundError(f"{path}: no such file; {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    digest = datadir.sha256_of(path)
    if digest != self.spec.sha256:
      raise ValueError(f"{path}: sha256 {digest} is not the release's {self.spec.sha256}: "
                       f"only the official file is built into {NAME}")
    return {SPLIT: self._generate_examples(path)}

  def _generate_examples(self, path: str):
    for e in loader.load(path, self.spec.metric, self.spec.name):
      yield e.example_id, row(e)


Builder = InverseScalingPrize  # the name `tfds build DIR` looks for
