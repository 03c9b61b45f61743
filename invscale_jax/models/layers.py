"""Building blocks with T5X parameter names and logical axis names.

Every parameter is float32 and annotated with T5X logical axis names through
`nn.with_logical_partitioning`; activations use the module's `dtype`. Norms, attention
logits and softmax run in float32.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from invscale_jax.models import attention, position
from invscale_jax.models.config import Rotary
from invscale_jax.models.masks import Mask

Array = jax.Array
Initializer = Callable[..., Array]
KV = tuple[Array, Array]  # keys and values, each [batch, length, heads, head_dim]

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": nn.relu,
    "silu": nn.silu,
    "gelu": functools.partial(nn.gelu, approximate=True),  # T5X "gelu", HF "gelu_new"
    "gelu_exact": functools.partial(nn.gelu, approximate=False),  # HF "gelu" (GPT-NeoX)
}


def param(module: nn.Module, name: str, init: Initializer, shape: tuple[int, ...],
          axes: tuple[str, ...]) -> Array:
  """A float32 parameter of `module` annotated with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class Dense(nn.Module):
  """`x @ kernel (+ bias)`; kernel [in, features] with logical axes `axes`."""

  features: int
  axes: tuple[str, str]
  use_bias: bool = False
  dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = param(self, "kernel", self.kernel_init, (x.shape[-1], self.features), self.axes)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = param(self, "bias", nn.initializers.zeros, (self.features,), self.axes[1:])
      y = y + bias.astype(self.dtype)
    return y


class Embed(nn.Module):
  """An embedding table `embedding [rows, features]` (tokens, or learned positions with
  axes ("abspos_buckets", "embed")); `attend` gives float32 logits against it. Ids out of
  the table give NaN (jnp.take's fill mode), never another row."""

  vocab_size: int
  features: int
  dtype: Any = jnp.float32
  axes: tuple[str, str] = ("vocab", "embed")

  def setup(self):
    self.embedding = param(self, "embedding", nn.initializers.normal(1.0),
                           (self.vocab_size, self.features), self.axes)

  def __call__(self, ids: Array) -> Array:
    return jnp.take(self.embedding, ids, axis=0, mode="fill",
                    fill_value=jnp.nan).astype(self.dtype)

  def attend(self, x: Array) -> Array:
    return jnp.dot(x.astype(jnp.float32), self.embedding.T)


class RMSNorm(nn.Module):
  """T5's "LayerNorm": x / rms(x) * scale, no mean subtraction and no bias."""

  eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = x.astype(jnp.float32)
    scale = param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    y = x * lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return (y * scale).astype(self.dtype)


class LayerNorm(nn.Module):
  """Standard LayerNorm with `scale` and `bias` (GPT-NeoX, OPT, GPT-2)."""

  eps: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = x.astype(jnp.float32)
    scale = param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    bias = param(self, "bias", nn.initializers.zeros, (x.shape[-1],), ("embed",))
    x = x - jnp.mean(x, axis=-1, keepdims=True)
    y = x * lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return (y * scale + bias).astype(self.dtype)


class MLP(nn.Module):
  """Feed-forward block `wo(prod_i act_i(wi_i(x)))`; one activation uses `wi` alone."""

  mlp_dim: int
  activations: Sequence[str]
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dense = functools.partial(Dense, use_bias=self.use_bias, dtype=self.dtype)
    names = ["wi"] if len(self.activations) == 1 else [
        f"wi_{i}" for i in range(len(self.activations))]
    hidden = [ACTIVATIONS[act](dense(self.mlp_dim, ("embed", "mlp"), name=name)(x))
              for name, act in zip(names, self.activations)]
    return dense(x.shape[-1], ("mlp", "embed"), name="wo")(functools.reduce(operator.mul, hidden))


class Attention(nn.Module):
  """Multi-head attention: `query` kernel [emb, heads*head_dim], `key`/`value` kernels
  [emb, kv_heads*head_dim] (fewer key/value heads: grouped-query attention), `out`.

  `kv` projects keys and values, `__call__` attends to them: a caller may cache the
  projections in between. Rotary embeddings (gpt_neox, llama) are applied to queries and
  keys at attention time, from the given query and key positions.
  """

  emb_dim: int
  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  num_kv_heads: int | None = None  # None: num_heads
  qkv_bias: bool = False
  out_bias: bool = False
  # False (T5): 1/sqrt(head_dim) is folded into the query initialiser, logits are not scaled.
  # True (GPT-NeoX, OPT, Llama, GPT-2): logits are scaled by 1/sqrt(head_dim) at run time.
  runtime_scaling: bool = False
  rotary: Rotary | None = None

  def setup(self):
    dense = functools.partial(Dense, use_bias=self.qkv_bias, dtype=self.dtype)
    query_init = default_kernel_init
    if not self.runtime_scaling:
      query_init = lambda *args: default_kernel_init(*args) / self.head_dim**0.5
    self.query = dense(self.num_heads * self.head_dim, ("embed", "joined_kv"),
                       kernel_init=query_init)
    self.key = dense(self._kv_heads * self.head_dim, ("embed", "joined_kv"))
    self.value = dense(self._kv_heads * self.head_dim, ("embed", "joined_kv"))
    self.out = Dense(self.emb_dim, ("joined_kv", "embed"), use_bias=self.out_bias,
                     dtype=self.dtype)

  @property
  def _kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  def _heads(self, x: Array) -> Array:
    return x.reshape(*x.shape[:-1], -1, self.head_dim)

  def kv(self, x: Array) -> KV:
    """Keys and values [B, L, kv_heads, D] of the inputs x [B, L, emb]."""
    return self._heads(self.key(x)), self._heads(self.value(x))

  def __call__(self, x: Array, kv: KV, mask: Mask, bias: position.RelativeBias | None = None,
               positions: Array | None = None, key_positions: Array | None = None) -> Array:
    """Attends from x [B, Q, emb] to kv; positions [B, Q] and [B, K] are for rotary."""
    q, (k, v) = self._heads(self.query(x)), kv
    if self.rotary is not None:
      q = position.rotate(self.rotary, q, positions)
      k = position.rotate(self.rotary, k, key_positions)
    scale = self.head_dim**-0.5 if self.runtime_scaling else 1.0
    y = attention.dot_product_attention(q, k, v, mask, bias, scale)
    return self.out(y.reshape(*y.shape[:2], -1))


def write_kv(cache: KV | None, kv: KV, index: Array | int) -> KV:
  """Writes kv at slot `index` of a [B, T, H, D] cache; without a cache returns kv."""
  if cache is None:
    return kv
  return tuple(lax.dynamic_update_slice_in_dim(c, x.astype(c.dtype), index, axis=1)
               for c, x in zip(cache, kv))
