"""Scoring requests: packed batches through the model on the mesh, results per branch.

`Scorer.score(requests)` returns, for every request and branch, the per-token
log-probabilities of the branch's target. Scores do not depend on batch size, bucketing,
packing or device count: each target sees exactly its prefix (BOS + prompt) and its own earlier tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from invscale_jax.engine import batch_sizer, packing, partitioning
from invscale_jax.engine.requests import Request

BranchScores = list[np.ndarray]  # per branch: float32 [n_target_tokens]


@dataclasses.dataclass
class Throughput:
  rows: int = 0  # branches (class or completion rows) scored
  tokens: int = 0  # non-padding tokens computed
  seconds: float = 0.0


@functools.lru_cache(maxsize=None)
def scoring_step(model_type: type, config: Any, attention: Any, sharding: Any) -> Callable:
  """The jitted scoring step of a network configuration, shared by every model of it in
  the process (parameters are its argument): a second model of one configuration traces
  and compiles nothing again."""
  return jax.jit(model_type(config, attention).score, out_shardings=sharding)


class Scorer:
  """Scores requests with one model's parameters on a mesh."""

  def __init__(self, model: Any, params: Any, mesh: Mesh, tokens_per_batch: int = 4096,
               pack: bool = True):
    """`tokens_per_batch` 0: as many rows as fit in device memory (`BatchSizer`)."""
    self.model = model
    self.params = params
    self.mesh = mesh
    self.pack = pack
    self._sharding = partitioning.batch_sharding(mesh)
    self._score = scoring_step(type(model), model.config, model.attention, self._sharding)
    self.tokens_per_batch: int | packing.RowsFor = tokens_per_batch or batch_sizer.BatchSizer(
        self._score, params, mesh, json.dumps(dataclasses.asdict(model.config), sort_keys=True),
        model.architecture == "encoder_decoder").rows
    self.throughput = Throughput()

  def _run(self, batch: packing.Batch) -> np.ndarray:
    arrays = {k: partitioning.to_global(v, self._sharding) for k, v in batch.arrays.items()}
    return partitioning.to_host(self._score(self.params, arrays))

  def score(self, requests: Sequence[Request],
            progress: Callable[[int], None] | None = None) -> list[BranchScores]:
    """Per-token target log-probabilities for every branch of every request."""
    result: list[BranchScores] = [[None] * len(r.branches) for r in requests]
    data_parallel = self.mesh.shape[partitioning.DATA]
    batches = packing.make_batches(requests, self.model.architecture, self.tokens_per_batch,
                                   row_multiple=data_parallel, pack=self.pack)
    for batch in batches:
      start = time.perf_counter()
      out = self._run(batch)
      self.throughput.seconds += time.perf_counter() - start
      self.throughput.tokens += batch.n_tokens
      self.throughput.rows += len(batch.slots)
      for s in batch.slots:
        result[s.request][s.branch] = out[s.group, s.start:s.start + s.length].astype(np.float32)
      if progress:
        progress(len(batch.slots))
    return result
