"""Dot-product attention over packed rows: dense for short rows, blockwise for long ones.

The dense path materialises the [B, H, Q, K] logits with the whole mask and bias. The
blockwise path (flash-attention style, in plain JAX so it runs on every backend) walks
query blocks x key blocks with an online softmax and never builds anything larger than
one block: the mask and the relative-position bias are made per block from per-token ids
(masks.Mask, position.RelativeBias). Each block is, from cheap per-block id ranges:
- skipped, when no query of it can see a key of it (the causal upper triangle, other
  segments, keys out of the window);
- plain, when every pair is visible and the bias is one value per head (every offset
  saturates its bucket, or no bias): no mask and no bias gather;
- masked, when some pairs are hidden but the bias is one value per head;
- general: mask and gathered bias.
Scores equal the dense path's up to float32 summation order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from invscale_jax.models.masks import Mask, Policy, block_range, column, pad_to, row
from invscale_jax.models.position import RelativeBias

Array = jax.Array
MIN = jnp.finfo(jnp.float32).min
SKIP, PLAIN, MASKED, GENERAL = range(4)


AUTO = Policy()
DENSE = Policy(dense_below=2**31)
# Smaller blocks on CPUs: 647-token rows of the Pythia-70M shape score 1.08x faster on 2
# cores than with 128 (accelerators keep 128, their matrix units' width).
CPU = Policy(block=64)


def for_platform(platform: str) -> Policy:
  """The attention policy of a device platform ("cpu", "tpu", "gpu")."""
  return CPU if platform == "cpu" else AUTO


def dense_attention(q: Array, k: Array, v: Array, mask: Array, bias: Array | None,
                    scale: float) -> Array:
  """softmax(q.k * scale + bias) over the keys `mask` allows, applied to v.

  q [B, Q, H, D], k and v [B, K, G, D] with G dividing H (grouped-query attention: query
  head h reads key/value head h // (H / G); G = H is plain multi-head attention), mask
  bool [B, 1, Q, K], bias [B, H, Q, K].
  """
  (batch, length, heads, dims), groups = q.shape, k.shape[2]
  q = q.reshape(batch, length, groups, heads // groups, dims)
  logits = jnp.einsum("bqgrd,bkgd->bgrqk", q, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.reshape(batch, groups, heads // groups, *bias.shape[2:])
  logits = jnp.where(mask[:, :, None], logits, MIN)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bgrqk,bkgd->bqgrd", weights, v).reshape(batch, length, heads, dims)


def _block_kinds(mask: Mask, bias: RelativeBias | None, block: int) -> tuple[Array, Array | None]:
  """int32 [nq, nk] kind of each block (SKIP..GENERAL) and the per-head bias of the
  blocks with one ([nq, nk, H]; None without a bias)."""
  some, every = mask.blocks(block, block)
  if bias is None:
    return jnp.where(some, jnp.where(every, PLAIN, MASKED), SKIP), None
  q_min, q_max = block_range(bias.positions, mask.segments > 0, block)
  k_min, k_max = block_range(bias.key_positions, mask.key_segments > 0, block)
  constant, value = bias.constant(column(q_min), column(q_max), row(k_min), row(k_max))  # [B, nq, nk]
  if value is None:
    return jnp.where(some, GENERAL, SKIP), None
  # One value for the whole batch: every row's block saturates on the same side.
  constant = constant.all(0) & (value == value[:1]).all(axis=(0, 3))
  kinds = jnp.where(constant, jnp.where(every, PLAIN, MASKED), GENERAL)
  return jnp.where(some, kinds, SKIP), value[0]


def blockwise_attention(q: Array, k: Array, v: Array, mask: Mask, bias: RelativeBias | None,
                        scale: float, block: int) -> Array:
  """What `dense_attention` computes, block by block (see the module docstring); the
  mask and bias are given as `Mask` and `RelativeBias`."""
  (batch, length, heads, dims), (keys, groups) = q.shape, k.shape[1:3]
  rep = heads // groups
  n_q, n_k = -(-length // block), -(-keys // block)
  mask = mask.padded(n_q * block, n_k * block)
  bias = None if bias is None else bias.padded(n_q * block, n_k * block)
  kinds, constants = _block_kinds(mask, bias, block)
  # [n_q, B, G, R, block, D] query blocks; keys and values [B, G, K, D].
  q = pad_to(q, n_q * block).reshape(batch, n_q, block, groups, rep, dims).transpose(1, 0, 3, 4, 2, 5)
  k, v = (pad_to(x, n_k * block).transpose(0, 2, 1, 3) for x in (k, v))
  visited = jnp.arange(n_k)[None, :]
  first = jnp.min(jnp.where(kinds != SKIP, visited, n_k), axis=1)
  last = jnp.max(jnp.where(kinds != SKIP, visited + 1, 0), axis=1)

  def query_block(_, xs):
    i, q_block, lo, hi = xs

    def key_block(kind: int, j: Array, carry: tuple[Array, Array, Array]):
      m, l, acc = carry
      k_block, v_block = (lax.dynamic_slice_in_dim(x, j * block, block, axis=2) for x in (k, v))
      s = jnp.einsum("bgrqd,bgkd->bgrqk", q_block, k_block,
                     preferred_element_type=jnp.float32) * scale
      if kind == GENERAL:
        s = s + bias.block(i * block, block, j * block, block).reshape(s.shape)
      elif bias is not None:
        s = s + constants[i, j].reshape(1, groups, rep, 1, 1)
      if kind != PLAIN:
        s = s + jnp.where(mask.block(i * block, block, j * block, block), 0.0, MIN)[:, None, None]
      m_new = jnp.maximum(m, s.max(-1))
      p = jnp.exp(s - m_new[..., None])
      alpha = jnp.exp(m - m_new)
      pv = jnp.einsum("bgrqk,bgkd->bgrqd", p.astype(v.dtype), v_block,
                      preferred_element_type=jnp.float32)
      return m_new, alpha * l + p.sum(-1), alpha[..., None] * acc + pv

    branches = [lambda c, j: c] + [
        lambda c, j, kind=kind: key_block(kind, j, c) for kind in (PLAIN, MASKED, GENERAL)]
    if bias is None:
      branches = branches[:GENERAL]
    shape = (batch, groups, rep, block)
    init = (jnp.full(shape, MIN), jnp.zeros(shape), jnp.zeros(shape + (dims,)))
    _, l, acc = lax.fori_loop(lo, hi, lambda j, c: lax.switch(kinds[i, j], branches, c, j), init)
    # Padding queries see nothing (l = 0): 0, not 0 / 0.
    return None, jnp.where(l[..., None] > 0, acc / jnp.where(l > 0, l, 1)[..., None], 0.0)

  _, out = lax.scan(query_block, None, (jnp.arange(n_q), q, first, last))
  out = out.transpose(1, 0, 4, 2, 3, 5).reshape(batch, n_q * block, heads, dims)
  return out[:, :length].astype(v.dtype)


def dot_product_attention(q: Array, k: Array, v: Array, mask: Mask, bias: RelativeBias | None,
                          scale: float) -> Array:
  """softmax(q.k * scale + bias) over the keys `mask` allows, applied to v: densely for
  short rows, blockwise for long ones (the mask's policy). Shapes as in `dense_attention`."""
  policy = mask.policy or AUTO
  if policy.blockwise(q.shape[1], k.shape[1]):
    return blockwise_attention(q, k, v, mask, bias, scale, policy.block)
  return dense_attention(q, k, v, mask.dense(), None if bias is None else bias.dense(), scale)
