"""Position information from explicit per-token positions.

T5 adds a learned bias per (bucketed) key-minus-query offset to the attention logits;
GPT-NeoX and Llama rotate queries and keys (rotary embeddings); OPT and GPT-2 add a
learned embedding of each token's position (a `layers.Embed` indexed by position, in
models/decoder.py). All take positions as arrays, so packed rows whose branches restart
or continue their positions are handled exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def relative_position_bucket(offset: Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
  """T5's bucket of each offset (key - query): exact when small, log-spaced up to max_distance."""
  n = -offset
  bucket = 0
  if bidirectional:
    num_buckets //= 2
    bucket = (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  log_ratio = jnp.log(n.astype(jnp.float32) / max_exact + jnp.finfo(jnp.float32).eps)
  large = max_exact + (log_ratio / math.log(max_distance / max_exact) *
                       (num_buckets - max_exact)).astype(jnp.int32)
  return bucket + jnp.where(n < max_exact, n, jnp.minimum(large, num_buckets - 1))


class RelativePositionBias(nn.Module):
  """Learned bias [B, H, Q, K] per head and offset bucket: `rel_embedding [heads, buckets]`."""

  num_heads: int
  bidirectional: bool
  num_buckets: int = 32
  max_distance: int = 128

  @nn.compact
  def __call__(self, positions: Array, key_positions: Array) -> Array:
    table = self.param(
        "rel_embedding",
        nn.with_logical_partitioning(nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                                     ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets), jnp.float32)
    offset = key_positions[:, None, :] - positions[:, :, None]  # [B, Q, K]
    buckets = relative_position_bucket(offset, self.bidirectional, self.num_buckets,
                                       self.max_distance)
    return jnp.moveaxis(table[:, buckets], 0, 1)


ROTARY_SCALING_TYPES = ("linear", "llama3")


@dataclasses.dataclass(frozen=True)
class Rotary:
  """Rotary embeddings of the first `dims` of each head, in Hugging Face's convention:
  dimension i < dims/2 is paired with i + dims/2 ("rotate half"), inverse frequency
  base ** (-2i / dims), changed by `scaling` (rope_scaling items: rope_type "linear"
  divides every frequency by factor; "llama3" divides the low ones by factor and blends
  the middle band, from factor, low_freq_factor, high_freq_factor and
  original_max_position_embeddings). Other types depend on the sequence length or scale
  the attention logits; they are rejected.
  """

  dims: int
  base: float = 10000.0
  scaling: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    kind = self.scaling_dict.get("rope_type", self.scaling_dict.get("type", "default"))
    if self.scaling and kind not in ROTARY_SCALING_TYPES:
      raise ValueError(f"rotary scaling {kind!r} is not supported (supported: none, "
                       f"{', '.join(ROTARY_SCALING_TYPES)})")

  @property
  def scaling_dict(self) -> dict[str, Any]:
    return dict(self.scaling)

  def frequencies(self) -> np.ndarray:
    """Inverse frequencies, float32 [dims/2], computed in float32 as transformers does."""
    exponents = np.arange(0, self.dims, 2).astype(np.float32) / np.float32(self.dims)
    inv_freq = np.float32(1.0) / np.float32(self.base)**exponents
    scaling = self.scaling_dict
    factor = np.float32(scaling.get("factor", 1.0))
    if scaling.get("rope_type", scaling.get("type")) == "linear":
      return inv_freq / factor
    if scaling:  # llama3
      context = scaling["original_max_position_embeddings"]
      low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
      wavelength = 2 * np.pi / inv_freq
      scaled = np.where(wavelength > context / low, inv_freq / factor, inv_freq)
      smooth = (context / wavelength - low) / (high - low)
      middle = (wavelength >= context / high) & (wavelength <= context / low)
      blended = (1 - smooth) * scaled / factor + smooth * scaled
      return np.where(middle, blended, scaled).astype(np.float32)
    return inv_freq

  def __call__(self, x: Array, positions: Array) -> Array:
    """Rotates x [B, L, H, D] by positions [B, L]."""
    angles = positions[..., None].astype(jnp.float32) * self.frequencies()  # [B, L, dims/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    rot = x[..., :self.dims].astype(jnp.float32)
    half = self.dims // 2
    rotated_half = jnp.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    rot = rot * jnp.cos(angles) + rotated_half * jnp.sin(angles)
    return jnp.concatenate([rot.astype(x.dtype), x[..., self.dims:]], axis=-1)
