"""The examples of a prize task from the prepared TFDS dataset `inverse_scaling_prize`
(`invscale data tfds-build`), read through `seqio.TfdsDataSource`: the `tfds` data source
(`data.sources`)."""

from __future__ import annotations

import seqio

from invscale_jax import catalog
from invscale_jax.data import inverse_scaling_prize as dataset
from invscale_jax.data import loader


def examples(spec: catalog.TaskSpec, tfds_data_dir: str | None = None) -> list[loader.Example]:
  """The examples of a task from the prepared TFDS dataset, in file order."""
  name = f"{dataset.NAME}/{spec.seqio_name}:{dataset.VERSION}"
  rows = seqio.TfdsDataSource(tfds_name=name, tfds_data_dir=tfds_data_dir).get_dataset(
      split=dataset.SPLIT, shuffle=False)
  return sorted((dataset.example(spec, r) for r in rows.as_numpy_iterator()),
                key=lambda e: e.example_id)
