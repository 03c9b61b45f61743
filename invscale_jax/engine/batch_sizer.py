"""How many rows of a batch shape fit in device memory (`--tokens_per_batch 0`).

For a batch shape (row length, target slots, encoder length), XLA's memory analysis of
the scoring step compiled for r rows per device gives its bytes per device (parameters,
inputs, outputs and temporaries). They grow about linearly in r, with steps where XLA
lays buffers out differently, so the sizer fits a line through r = 1 and 8, takes the
rows that line puts at the budget (a share of the device's free memory, capped at
`MAX_TOKENS_PER_DEVICE` tokens per device: more only adds latency), and checks them by
compiling that size, shrinking until they fit. Every measurement depends on the program
alone, so it is remembered in the cache directory by (network, activation dtype, device
kind, mesh, shape): a later run with the same budget compiles nothing; the free memory is
read afresh each time.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

import jax
import numpy as np
import psutil

from invscale_jax import storage
from invscale_jax.engine import hosts, partitioning

SHARE = 0.7  # of the free memory a batch may use (the rest: XLA's own slack, other buffers)
MAX_TOKENS_PER_DEVICE = 65536
Shape = tuple[int, int, int]  # (row length, most target slots per row, encoder length)


def free_bytes(device: jax.Device) -> int:
  """Free memory of one device: the accelerator's own count, or on CPU the host's
  available memory shared by its devices."""
  stats = device.memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  return int(psutil.virtual_memory().available // max(1, jax.local_device_count()))


class BatchSizer:
  """Rows per batch for each shape, for one model's scoring step on its mesh."""

  def __init__(self, step: Callable, params: Any, mesh: jax.sharding.Mesh, identity: str,
               encoder_decoder: bool, limit_bytes: int | None = None):
    """`step`: the jitted scoring function; `identity`: what determines its program (the
    network config and dtype); `limit_bytes`: per-device budget (default: a share of the
    free memory)."""
    self._step, self._params, self._mesh = step, params, mesh
    self._encoder_decoder = encoder_decoder
    self._data = mesh.shape[partitioning.DATA]
    device = mesh.devices.flat[0]
    self._limit = limit_bytes if limit_bytes is not None else int(SHARE * free_bytes(device))
    key = json.dumps([identity, device.device_kind, dict(mesh.shape)], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    self._path = os.path.join(storage.user_cache_dir(), "batch_sizes", f"{digest}.json")
    self._known: dict[str, list[int]] | None = None

  def _bytes(self, rows: int, shape: Shape) -> int:
    length, targets, encoder_length = shape
    sharding = partitioning.batch_sharding(self._mesh)
    struct = lambda width: jax.ShapeDtypeStruct((rows, width), np.int32, sharding=sharding)
    batch = {k: struct(length) for k in ("tokens", "positions", "segment_ids", "branch_ids")}
    # Targets of the data-parallel groups: at most `targets` per row.
    groups = jax.ShapeDtypeStruct((self._data, rows // self._data * targets), np.int32,
                                  sharding=sharding)
    batch.update({k: groups for k in ("target_index", "target_ids", "target_mask")})
    if self._encoder_decoder:
      batch.update({k: struct(encoder_length) for k in ("encoder_tokens", "encoder_segment_ids")})
    m = self._step.lower(self._params, batch).compile().memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)

  def _measured(self, rows: int, shape: Shape) -> int:
    """Bytes per device of the step with `rows` rows per device (remembered)."""
    if self._known is None:
      try:
        self._known = json.loads(storage.read_text(self._path))
      except (FileNotFoundError, ValueError):
        self._known = {}
    name = f"{'x'.join(map(str, shape))}:{rows}"
    if name not in self._known:
      self._known[name] = self._bytes(rows * self._data, shape)
      storage.write_text(self._path, json.dumps(self._known))
    return self._known[name]

  def rows(self, length: int, targets: int, encoder_length: int) -> int:
    """Close to the most rows (a multiple of the data-parallel size) of this shape that
    fit the budget, and never more; process 0's answer on every host (their free memory
    differs, and every host must build the same batches)."""
    shape = (length, targets, encoder_length)
    one, eight = self._measured(1, shape), self._measured(8, shape)
    per_row = max(1, (eight - one) / 7)
    cap = max(1, MAX_TOKENS_PER_DEVICE // (length + encoder_length))
    rows = int(min(cap, max(1, 1 + (self._limit - one) // per_row)))
    while rows > 1:  # shrink until the compiled size fits
      used = self._measured(rows, shape)
      if used <= self._limit:
        break
      rows = max(1, min(rows - 1, int(rows * self._limit / used)))
    return int(hosts.from_leader(np.array([rows * self._data]))[0])
