"""T5X scalable_t5 checkpoints, read into the per-layer parameter tree of our networks.

t5x/examples/scalable_t5 stores two things differently from t5x/examples/t5 (its per-layer
relative position biases are a network difference: `ModelConfig.relpos_per_layer`):

- Attention kernels keep their head axes: `query`/`key`/`value` [emb, heads, head_dim] and
  `out` [heads, head_dim, emb], where t5 stores [emb, heads*head_dim] / [heads*head_dim, emb]
  (the same values in C order).
- With `scan_layers` (its default) the layers of a stack are one scanned module named
  like the stack: `encoder/encoder/...` (`decoder/decoder/...`) holds each layer
  parameter once, the layers stacked along `param_scan_axis` (default 1). E.g.
  `encoder/encoder/attention/query/kernel` [emb, layers, heads, head_dim] holds what
  `encoder/layers_{i}/attention/query/kernel` [emb, heads*head_dim] would.

`arrange(stored, expected)` finds where each expected parameter is stored; `LayerSource`
reads one layer of a stacked parameter (only that slice is read) as the per-layer one.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import numpy as np

from invscale_jax import checkpoint_layout as layout
from invscale_jax.checkpoint_errors import CheckpointError
from invscale_jax.checkpoints.legacy import ArraySource

Shape = tuple[int, ...]
DEFAULT_SCAN_AXIS = 1  # T5X's T5Config.param_scan_axis
_LAYER = re.compile(r"layers_(\d+)")
_HEADS_LAST = ("query", "key", "value")  # kernels [emb, heads, head_dim]


def _unsplit(key: layout.Key, stored: Shape) -> Shape:
  """The t5 (2-D) shape of a scalable_t5 attention kernel; other shapes unchanged."""
  if len(stored) == 3 and len(key) >= 2 and key[-1] == "kernel":
    if key[-2] in _HEADS_LAST:
      return stored[0], stored[1] * stored[2]
    if key[-2] == "out":
      return stored[0] * stored[1], stored[2]
  return stored


def _stacked_key(key: layout.Key) -> tuple[layout.Key, int] | None:
  """(key of the scanned parameter, layer) for `.../<stack>/layers_<i>/...`, else None."""
  for position in range(1, len(key)):
    match = _LAYER.fullmatch(key[position])
    if match:
      return (*key[:position], key[position - 1], *key[position + 1:]), int(match.group(1))
  return None


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where an expected parameter is stored: `key`, and its `layer` along `axis` if
  stacked; read, it has `shape`."""

  key: layout.Key
  shape: Shape
  layer: int | None = None
  axis: int | None = None


def _scan_axis(path: str, stacked: Mapping[layout.Key, tuple[Shape, int, Shape]]) -> int:
  """The one axis along which every stacked parameter holds its layers.

  `stacked` maps a scanned key to (stored shape, number of layers, per-layer shape).
  """
  def fits(stored: Shape, layers: int, want: Shape, key: layout.Key, axis: int) -> bool:
    return (axis < len(stored) and stored[axis] == layers and
            _unsplit(key, stored[:axis] + stored[axis + 1:]) == want)

  axes = None
  for key, (stored, layers, want) in stacked.items():
    fitting = {a for a in range(len(stored)) if fits(stored, layers, want, key, a)}
    if not fitting:
      raise CheckpointError(path, f"parameter {layout.param_name(key)} has shape {stored}, "
                            f"which is not {layers} layers of shape {want} stacked on one axis")
    axes = fitting if axes is None else axes & fitting
  if not axes:
    raise CheckpointError(path, "the scanned layers are stacked along different axes")
  if DEFAULT_SCAN_AXIS in axes or len(axes) == 1:
    return DEFAULT_SCAN_AXIS if DEFAULT_SCAN_AXIS in axes else axes.pop()
  raise CheckpointError(path, f"cannot tell the scan axis of the stacked layers (any of "
                        f"{sorted(axes)})")


def arrange(path: str, stored: Mapping[layout.Key, Shape],
            expected: Mapping[layout.Key, Shape]) -> dict[layout.Key, Placement] | None:
  """Where each expected parameter is in a scalable_t5 checkpoint; None when the
  checkpoint is not one (every expected parameter is stored under its own name and shape,
  or cannot be found either way: the caller reports what is missing)."""
  placements: dict[layout.Key, Placement] = {}
  stacked: dict[layout.Key, tuple[Shape, int, Shape]] = {}
  for key, want in expected.items():
    if key in stored:  # a mismatch that is not a kernel's head axes is reported later
      fits = want != stored[key] and _unsplit(key, stored[key]) == want
      placements[key] = Placement(key, want if fits else stored[key])
      continue
    found = _stacked_key(key)
    if found is None or found[0] not in stored:
      continue
    scanned, layer = found
    placements[key] = Placement(scanned, want, layer)
    layers = max(stacked.get(scanned, ((), 0, ()))[1], layer + 1)
    stacked[scanned] = (stored[scanned], layers, want)
  if not stacked and all(p.shape == stored[p.key] for p in placements.values()):
    return None
  axis = _scan_axis(path, stacked) if stacked else None
  return {key: p if p.layer is None else dataclasses.replace(p, axis=axis)
          for key, p in placements.items()}


@dataclasses.dataclass(frozen=True)
class LayerSource:
  """An expected parameter read from where `Placement` says it is stored."""

  stored: ArraySource
  placement: Placement

  @property
  def shape(self) -> Shape:
    return self.placement.shape

  @property
  def dtype(self) -> np.dtype:
    return self.stored.dtype

  def read(self, index: tuple[slice, ...] = ()) -> np.ndarray:
    axis, layer = self.placement.axis, self.placement.layer
    if axis is None:
      if self.shape == self.stored.shape:
        return self.stored.read(index)
      array = self.stored.read()
    else:  # only this layer's slice is read
      window = [slice(None)] * len(self.stored.shape)
      window[axis] = slice(layer, layer + 1)
      array = np.squeeze(self.stored.read(tuple(window)), axis)
    return array.reshape(self.shape)[index]
