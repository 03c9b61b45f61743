"""What scoring a family needs JAX for: each model's engine (network and parameters on a
mesh), whether to load the next model while one scores, and JAX's compilation cache.
`runner.score_family` asks for it only when a run is left to score."""

from __future__ import annotations

import jax

from invscale_jax.engine import batch_sizer, compile_cache, engine, loading, partitioning
from invscale_jax.engine.plan import ScoringOptions
from invscale_jax.engine.runner import Backend
from invscale_jax.family import ModelEntry


def start() -> Backend:
  """The backend, with the persistent compilation cache on (before any thread compiles)."""
  compile_cache.enable()
  return Backend(load, prefetches)


def load(entry: ModelEntry, options: ScoringOptions) -> engine.Engine:
  """The engine of one model: its network, parameters (sharded over the mesh) and vocabulary."""
  mesh = partitioning.make_mesh(options.model_parallel)
  return engine.Engine(loading.load_model(entry, options.dtype, mesh), options)


def prefetches(entry: ModelEntry, options: ScoringOptions) -> bool:
  """Whether to load `entry` while the current model scores: `--prefetch on`, or (auto)
  on accelerators when its parameters take at most half the free memory of a device (at
  most what the batch sizer leaves, with `--tokens_per_batch 0`). On
  a CPU, reading a checkpoint (decompression, casts) and scoring share the same cores:
  measured on 2 cores, overlapping them saved nothing, so auto leaves it off there."""
  if options.prefetch != "auto":
    return options.prefetch == "on"
  device = jax.local_devices()[0]
  if device.platform == "cpu":
    return False
  needed = loading.param_bytes(entry) / options.model_parallel
  room = 1 - batch_sizer.SHARE if options.tokens_per_batch == 0 else 0.5
  return needed <= room * batch_sizer.free_bytes(device)
