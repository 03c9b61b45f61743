"""The attention mask shared by every architecture, for packed and branched rows.

`visible` is the rule; `Mask` keeps it as per-token ids, materialised for whole rows
(`dense`) or block by block for long rows (`block`, models/attention.py).
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
NONE = 2**29  # block_range of a block without valid tokens: (NONE, -NONE)


@dataclasses.dataclass(frozen=True)
class Policy:
  """When attention goes blockwise (models/attention.py): in blocks of `block` tokens once
  queries x keys reach `dense_below`**2 (and there is more than one query); dense below."""

  block: int = 128
  dense_below: int = 512

  def blockwise(self, queries: int, keys: int) -> bool:
    return queries > 1 and queries * keys >= self.dense_below**2


def visible(q_segments: Array, k_segments: Array, q_index: Array, k_index: Array, *,
            causal: bool, q_branches: Array | None = None, k_branches: Array | None = None,
            q_positions: Array | None = None, k_positions: Array | None = None,
            window: int = 0) -> Array:
  """Whether each query sees each key, from broadcastable per-query and per-key ids.

  A key is visible iff it has the query's segment id and that id is nonzero (0 is
  padding); when `causal`, it is not after the query in row order (query i and key i
  share a slot); when branch ids are given, it is in the shared prompt (branch 0) or in
  the query's own branch; with a `window`, its position is less than `window` before the
  query's (Mistral's sliding window).
  """
  mask = (q_segments == k_segments) & (q_segments > 0)
  if causal:
    mask &= k_index <= q_index
  if q_branches is not None:
    mask &= (k_branches == 0) | (k_branches == q_branches)
  if window:
    mask &= q_positions - k_positions < window
  return mask


def block_range(x: Array, valid: Array, size: int) -> tuple[Array, Array]:
  """Min and max of x [B, L] over the valid tokens of each block of `size` tokens:
  [B, L // size] each, (NONE, -NONE) for a block without valid tokens."""
  x = x.reshape(x.shape[0], -1, size)
  valid = valid.reshape(x.shape)
  return jnp.where(valid, x, NONE).min(-1), jnp.where(valid, x, -NONE).max(-1)


def column(x: Array | None) -> Array | None:
  """[B, L] -> [B, L, 1]: per-query ids against keys (None stays None)."""
  return None if x is None else x[:, :, None]


def row(x: Array | None) -> Array | None:
  """[B, L] -> [B, 1, L]: per-key ids against queries (None stays None)."""
  return None if x is None else x[:, None, :]


def pad_to(x: Array | None, size: int) -> Array | None:
  """x [B, L, ...] padded with zeros to [B, size, ...] (None stays None)."""
  if x is None:
    return None
  return jnp.pad(x, [(0, 0), (0, size - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def _slice(x: Array | None, start: Array | int, size: int) -> Array | None:
  return None if x is None else jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)


@flax.struct.dataclass
class Mask:
  """Which keys each query sees, as per-token ids: segments [B, Q] and key segments [B, K]
  (0 = padding), optional branch ids, and positions where a window applies.

  `dense()` gives the whole [B, 1, Q, K] mask, `block(...)` one block of it, so that
  blockwise attention never builds a [Q, K] array. `policy` says when attention goes
  blockwise (None: attention.AUTO).
  """

  segments: Array
  key_segments: Array
  branches: Array | None = None
  key_branches: Array | None = None
  positions: Array | None = None
  key_positions: Array | None = None
  causal: bool = flax.struct.field(pytree_node=False, default=False)
  window: int = flax.struct.field(pytree_node=False, default=0)
  policy: Policy | None = flax.struct.field(pytree_node=False, default=None)

  def with_window(self, window: int, positions: Array, key_positions: Array) -> Mask:
    """This mask, keys also limited to the `window` positions up to the query's (0: none)."""
    if not window:
      return self
    return self.replace(window=window, positions=positions, key_positions=key_positions)

  def padded(self, queries: int, keys: int) -> Mask:
    """The mask of rows padded to `queries` and `keys` tokens; padding sees nothing."""
    return self.replace(
        segments=pad_to(self.segments, queries), key_segments=pad_to(self.key_segments, keys),
        branches=pad_to(self.branches, queries), key_branches=pad_to(self.key_branches, keys),
        positions=pad_to(self.positions, queries), key_positions=pad_to(self.key_positions, keys))

  def block(self, q_start: Array | int, q_size: int, k_start: Array | int,
            k_size: int) -> Array:
    """bool [B, q_size, k_size]: the mask of queries q_start.. and keys k_start.."""
    return visible(
        column(_slice(self.segments, q_start, q_size)),
        row(_slice(self.key_segments, k_start, k_size)),
        (q_start + jnp.arange(q_size))[:, None], (k_start + jnp.arange(k_size))[None, :],
        causal=self.causal, q_branches=column(_slice(self.branches, q_start, q_size)),
        k_branches=row(_slice(self.key_branches, k_start, k_size)),
        q_positions=column(_slice(self.positions, q_start, q_size)),
        k_positions=row(_slice(self.key_positions, k_start, k_size)), window=self.window)

  def blocks(self, q_size: int, k_size: int) -> tuple[Array, Array]:
    """Which blocks of q_size x k_size tokens may hold a visible (query, key) pair, and
    which are visible throughout, in every row: bool [Q // q_size, K // k_size] each.

    Decided from each block's range of ids, so a "may" can be a false alarm (the block is
    then computed and masked), never a miss.
    """
    q_valid, k_valid = self.segments > 0, self.key_segments > 0
    q_min, q_max = block_range(self.segments, q_valid, q_size)
    k_min, k_max = block_range(self.key_segments, k_valid, k_size)
    some = (column(q_max) >= row(k_min)) & (row(k_max) >= column(q_min))
    every = ((column(q_min) == column(q_max)) & (column(q_max) == row(k_min))
             & (row(k_min) == row(k_max)) & column(q_valid.reshape(q_min.shape + (q_size,)).all(-1))
             & row(k_valid.reshape(k_min.shape + (k_size,)).all(-1)))
    if self.causal:
      q_first = np.arange(q_min.shape[1])[:, None] * q_size
      k_first = np.arange(k_min.shape[1])[None, :] * k_size
      some &= k_first <= q_first + q_size - 1
      every &= k_first + k_size - 1 <= q_first
    if self.key_branches is not None:
      shared = self.key_branches.reshape(k_min.shape + (k_size,)).max(-1) == 0
      every &= row(shared)
    if self.window:
      qp_min, qp_max = block_range(self.positions, q_valid, q_size)
      kp_min, kp_max = block_range(self.key_positions, k_valid, k_size)
      some &= column(qp_min) - row(kp_max) < self.window
      every &= column(qp_max) - row(kp_min) < self.window
    return some.any(0), every.all(0)

  def dense(self) -> Array:
    """bool [B, 1, Q, K]: the whole mask."""
    return self.block(0, self.segments.shape[1], 0, self.key_segments.shape[1])[:, None]
