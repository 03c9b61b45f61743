"""Position information from explicit per-token positions.

T5 adds a learned bias per (bucketed) key-minus-query offset to the attention logits;
GPT-NeoX and Llama rotate queries and keys (rotary embeddings); OPT and GPT-2 add a
learned embedding of each token's position (a `layers.Embed` indexed by position, in
models/decoder.py). All take positions as arrays, so packed rows whose branches restart
or continue their positions are handled exactly.
"""

from __future__ import annotations

import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from invscale_jax.models.config import Rotary
from invscale_jax.models.masks import pad_to

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


def saturation(bidirectional: bool, num_buckets: int, max_distance: int) -> int | None:
  """An offset from which `relative_position_bucket` is the last bucket of its side: every
  key at least this many positions before the query (or after it, when bidirectional)
  has the same bias. None when the buckets do not saturate.

  The bucket saturates once log(n / max_exact) / log(max_distance / max_exact) reaches
  (buckets - 1 - max_exact) / (buckets - max_exact); the 0.1% margin keeps float32
  rounding of the logarithm far from the boundary (tests check the buckets beyond it).
  """
  buckets = num_buckets // 2 if bidirectional else num_buckets
  max_exact = buckets // 2
  if max_distance <= max_exact or max_exact < 1:
    return None
  ratio = (buckets - 1 - max_exact) / (buckets - max_exact)
  return int(max_exact * (max_distance / max_exact)**ratio * 1.001) + 1


@flax.struct.dataclass
class RelativeBias:
  """T5's relative position bias of queries at `positions` [B, Q] and keys at
  `key_positions` [B, K]: `table` [heads, buckets] read at each pair's offset bucket.
  `dense()` gives the whole [B, H, Q, K] bias, `block(...)` one block of it."""

  table: Array
  positions: Array
  key_positions: Array
  bidirectional: bool = flax.struct.field(pytree_node=False)
  max_distance: int = flax.struct.field(pytree_node=False)

  def padded(self, queries: int, keys: int) -> RelativeBias:
    return self.replace(positions=pad_to(self.positions, queries),
                        key_positions=pad_to(self.key_positions, keys))

  def block(self, q_start: Array | int, q_size: int, k_start: Array | int,
            k_size: int) -> Array:
    """float32 [B, H, q_size, k_size]: the bias of queries q_start.. and keys k_start.."""
    q = jax.lax.dynamic_slice_in_dim(self.positions, q_start, q_size, axis=1)
    k = jax.lax.dynamic_slice_in_dim(self.key_positions, k_start, k_size, axis=1)
    buckets = relative_position_bucket(k[:, None, :] - q[:, :, None], self.bidirectional,
                                       self.table.shape[1], self.max_distance)
    return jnp.moveaxis(jnp.take(self.table, buckets, axis=1), 0, 1)

  def dense(self) -> Array:
    return self.block(0, self.positions.shape[1], 0, self.key_positions.shape[1])

  def constant(self, q_min: Array, q_max: Array, k_min: Array,
               k_max: Array) -> tuple[Array, Array]:
    """Where all pairs of queries with positions in [q_min, q_max] and keys in [k_min,
    k_max] share one bias (their offsets all saturate on one side): bool [...] and that
    bias [..., H] (meaningful where the bool holds). Arguments broadcast together."""
    n_sat = saturation(self.bidirectional, self.table.shape[1], self.max_distance)
    if n_sat is None:
      return jnp.zeros(jnp.broadcast_shapes(q_min.shape, k_max.shape), bool), None
    before = q_min - k_max >= n_sat
    last = lambda offset: relative_position_bucket(jnp.int32(offset), self.bidirectional,
                                                   self.table.shape[1], self.max_distance)
    value = jnp.broadcast_to(self.table[:, last(-n_sat)], before.shape + self.table.shape[:1])
    if not self.bidirectional:
      return before, value
    after = k_min - q_max >= n_sat
    value = jnp.where(after[..., None], self.table[:, last(n_sat)], value)
    return before | after, value


class RelativePositionBias(nn.Module):
  """The learned bias per head and offset bucket: `rel_embedding [heads, buckets]`."""

  num_heads: int
  bidirectional: bool
  num_buckets: int = 32
  max_distance: int = 128

  @nn.compact
  def __call__(self, positions: Array, key_positions: Array) -> RelativeBias:
    table = self.param(
        "rel_embedding",
        nn.with_logical_partitioning(nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                                     ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets), jnp.float32)
    return RelativeBias(table, positions, key_positions, self.bidirectional, self.max_distance)


def rotate(rotary: Rotary, x: Array, positions: Array) -> Array:
  """Rotates the first `rotary.dims` of x [B, L, H, D] by positions [B, L]."""
  angles = positions[..., None].astype(jnp.float32) * rotary.frequencies()  # [B, L, dims/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  rot = x[..., :rotary.dims].astype(jnp.float32)
  half = rotary.dims // 2
  rotated_half = jnp.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
  rot = rot * jnp.cos(angles) + rotated_half * jnp.sin(angles)
  return jnp.concatenate([rot.astype(x.dtype), x[..., rotary.dims:]], axis=-1)
