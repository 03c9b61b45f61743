"""Model hyperparameters (`ModelConfig`) and reading them from gin files (or from a
Hugging Face config.json).

A model gin file binds the fields of `ModelConfig`, composed with `include` as in T5X::

  include 'models/t5_1_1/_t5_1_1.gin'
  ModelConfig.emb_dim = 768

Relative `include` paths are looked up in the project's `gin/` folder; a model file and
its includes may be `gs://` URLs (read through `storage`). Model files are
read with gin's parser but not into gin's global configuration: one process loads many
models (a family) next to the run's own gin settings, and they must never mix. So a
model file holds only `include` and `ModelConfig.<field> = <literal>` statements.

A T5X gin file (a model dir's `config.gin`, or t5x/examples/... model files) is read too,
by `t5x_gin`: any other statement marks a file as T5X's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Sequence

import ml_dtypes
import numpy as np
from gin import config_parser

from invscale_jax import checks, family, storage
from invscale_jax.models import t5x_gin


# The stacks of models/decoder.py; T5X's own decoder_only and encoder_decoder are in t5.py.
DECODER_ARCHITECTURES = ("gpt_neox", "opt", "llama", "gpt2")
# Learned absolute positions: the table's row of position p is p + offset (OPT's 2).
POSITION_OFFSETS = {"opt": 2, "gpt2": 0}
# What the fields left at None mean, per architecture (the rest: `_NONE_MEANS`). A value
# equal to the architecture's is stored as None, so that configs compare and hash (run
# keys leave out default-valued fields) the same however they were written.
_ARCHITECTURE_VALUES: dict[str, dict[str, Any]] = {
    "gpt_neox": dict(rotary_pct=0.25, parallel_residual=True, qkv_bias=True, out_bias=True,
                     mlp_bias=True),
    "opt": dict(qkv_bias=True, out_bias=True, mlp_bias=True),
    "llama": dict(rotary_pct=1.0),
    "gpt2": dict(qkv_bias=True, out_bias=True, mlp_bias=True),
}
_NONE_MEANS = dict(rotary_pct=0.0, parallel_residual=False, qkv_bias=False, out_bias=False,
                   mlp_bias=False)
# Fields only the stacks of models/decoder.py read, with the values that mean "not used".
_DECODER_ONLY_FIELDS = dict(dict.fromkeys(_NONE_MEANS), num_kv_heads=0, rotary_scaling=(),
                            max_positions=0, embed_proj_dim=0, post_norm=False,
                            sliding_window=0)
# Former defaults of every architecture, found in gin files `to_gin` wrote for T5 models.
_LEGACY_T5_VALUES = dict(rotary_pct=0.25, parallel_residual=True)
# The largest value of each size field: far above any published model, low enough that a
# network is built (its shapes traced) in bounded time and memory. Checked before building.
LIMITS = dict(vocab_size=1 << 22, emb_dim=1 << 17, num_heads=1 << 12, head_dim=1 << 12,
              mlp_dim=1 << 19, num_layers=1 << 10, num_encoder_layers=1 << 10,
              num_decoder_layers=1 << 10, num_kv_heads=1 << 12, max_positions=1 << 21,
              embed_proj_dim=1 << 17, sliding_window=1 << 24, relpos_buckets=1 << 12,
              relpos_max_distance=1 << 24)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of one network; names follow T5X's network configs."""

  architecture: str  # one of family.ARCHITECTURES
  vocab_size: int
  emb_dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  num_layers: int = 0  # decoder-only architectures
  num_encoder_layers: int = 0  # encoder_decoder
  num_decoder_layers: int = 0  # encoder_decoder
  # One activation: a plain MLP `wi`; several: gated `wi_0`, `wi_1`, ... multiplied together.
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  # logits = embedding.attend(y), divided by sqrt(emb_dim) in the T5 architectures.
  logits_via_embedding: bool = False
  norm_eps: float = 1e-6  # RMSNorm (T5 architectures, llama) or LayerNorm epsilon
  relpos_buckets: int = 32  # T5 relative position bias
  relpos_max_distance: int = 128
  # The fields below are read by the stacks of models/decoder.py only. Those that may be
  # None take the architecture's value then (read them with `value`).
  num_kv_heads: int = 0  # grouped-query attention: key/value heads; 0 = num_heads
  rotary_pct: float | None = None  # fraction of each head's dims rotated (gpt_neox, llama)
  rotary_base: float = 10000.0  # rotary theta
  # Rotary scaling as Hugging Face's rope_scaling items, e.g. (('factor', 8.0),
  # ('rope_type', 'linear')); () = none. Types: ROTARY_SCALING_TYPES.
  rotary_scaling: tuple[tuple[str, Any], ...] = ()
  parallel_residual: bool | None = None  # gpt_neox: x + attn(ln1(x)) + mlp(ln2(x))
  qkv_bias: bool | None = None  # biases of the query, key and value projections
  out_bias: bool | None = None  # bias of the attention output projection
  mlp_bias: bool | None = None
  max_positions: int = 0  # opt, gpt2: positions of the learned position table
  embed_proj_dim: int = 0  # opt (350m): token embeddings this wide, projected in and out
  post_norm: bool = False  # opt (350m): LayerNorm after each residual, no final norm
  sliding_window: int = 0  # llama (Mistral): attend to the last this many positions; 0 = all
  dtype: str = "bfloat16"  # activations; params are float32, logits float32
  # T5 stacks: one relative position bias per layer (t5x/examples/scalable_t5), not one
  # shared by the layers of a stack (t5x/examples/t5 and decoder_only).
  relpos_per_layer: bool = False

  def __post_init__(self):
    _check_types(self)
    set_field = functools.partial(object.__setattr__, self)
    set_field("mlp_activations", tuple(self.mlp_activations))
    set_field("rotary_scaling", tuple(sorted(tuple(item) for item in self.rotary_scaling)))
    sizes = ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim")
    if any(getattr(self, name) <= 0 for name in sizes):
      raise ValueError(f"ModelConfig: {', '.join(sizes)} must be positive")
    for name, limit in LIMITS.items():
      if getattr(self, name) > limit:
        raise ValueError(f"ModelConfig.{name}: {getattr(self, name)} is more than {limit}, "
                         f"the most this program builds")
    checks.positive_finite(self.norm_eps, "ModelConfig.norm_eps (the norm epsilon)")
    checks.positive_finite(self.rotary_base, "ModelConfig.rotary_base (rotary theta)")
    if self.relpos_buckets < 4 or self.relpos_max_distance <= self.relpos_buckets // 2:
      raise ValueError(f"ModelConfig: relpos_buckets must be >= 4 and relpos_max_distance "
                       f"more than half of it, got {self.relpos_buckets} and "
                       f"{self.relpos_max_distance}")
    if self.architecture not in family.ARCHITECTURES:
      raise ValueError(f"ModelConfig.architecture: {self.architecture!r} is not one of "
                       f"{', '.join(family.ARCHITECTURES)}")
    if self.architecture not in DECODER_ARCHITECTURES:
      for name, value in _LEGACY_T5_VALUES.items():
        if getattr(self, name) == value:
          set_field(name, None)
    for name, value in self._architecture_values.items():
      if getattr(self, name) == value:
        set_field(name, None)
    encoder_decoder = self.architecture == "encoder_decoder"
    layers = (self.num_encoder_layers, self.num_decoder_layers) if encoder_decoder else (
        self.num_layers,)
    if min(layers) <= 0:
      fields = "num_encoder_layers and num_decoder_layers" if encoder_decoder else "num_layers"
      raise ValueError(f"ModelConfig: {self.architecture} needs positive {fields}")
    if self.architecture not in DECODER_ARCHITECTURES:
      unused = [name for name, value in _DECODER_ONLY_FIELDS.items()
                if getattr(self, name) != value]
      if unused:
        raise ValueError(f"ModelConfig: {self.architecture} does not use {', '.join(unused)}")
    if self.num_heads % self.kv_heads:
      raise ValueError(f"ModelConfig: num_heads {self.num_heads} is not a multiple of "
                       f"num_kv_heads {self.kv_heads}")
    if self.rotary_scaling and self.rotary is None:  # building the rotary checks its type
      raise ValueError("ModelConfig: rotary_scaling without rotary embeddings (rotary_pct 0)")
    if (self.architecture in POSITION_OFFSETS) != (self.max_positions > 0):
      raise ValueError("ModelConfig: max_positions (learned positions) must be positive for "
                       f"{' and '.join(POSITION_OFFSETS)} and 0 otherwise")

  @property
  def _architecture_values(self) -> dict[str, Any]:
    return {**_NONE_MEANS, **_ARCHITECTURE_VALUES.get(self.architecture, {})}

  def value(self, name: str) -> Any:
    """The value of field `name`: the architecture's where the field holds None."""
    value = getattr(self, name)
    return self._architecture_values[name] if value is None else value

  @property
  def activation_dtype(self) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16 if self.dtype == "bfloat16" else self.dtype)

  @property
  def decoder_layers(self) -> int:
    """Layers of the (only or second) stack, the one that is decoded with a cache."""
    return self.num_decoder_layers if self.architecture == "encoder_decoder" else self.num_layers

  @property
  def kv_heads(self) -> int:
    """Heads of the keys and values (fewer than num_heads with grouped-query attention)."""
    return self.num_kv_heads or self.num_heads

  @property
  def rotary(self) -> Rotary | None:
    """The rotary embedding of the leading int(head_dim * rotary_pct) dims, if any."""
    dims = int(self.head_dim * self.value("rotary_pct"))
    return Rotary(dims, self.rotary_base, self.rotary_scaling) if dims else None

  @property
  def position_offset(self) -> int | None:
    """Row of position 0 in the learned position table; None without one."""
    return POSITION_OFFSETS.get(self.architecture)


def _check_types(config: ModelConfig) -> None:
  """Every field holds a value of its annotated type (ints are not bools or floats; None
  where the type allows it)."""
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    kind = f.type.removesuffix(" | None")
    if value is None and kind != f.type:
      ok = True
    elif kind == "tuple[str, ...]":
      ok = isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
    elif kind == "tuple[tuple[str, Any], ...]":  # (key, value) items
      ok = isinstance(value, (tuple, list)) and all(
          isinstance(v, (tuple, list)) and len(v) == 2 and isinstance(v[0], str) for v in value)
    else:
      base = {"int": int, "float": (int, float), "bool": bool, "str": str}[kind]
      ok = isinstance(value, base) and (kind == "bool" or not isinstance(value, bool))
      ok = ok and (kind != "float" or math.isfinite(value))
    if not ok:
      raise ValueError(f"ModelConfig.{f.name}: must be of type {f.type}, got {value!r}")


class _LiteralsOnly(config_parser.ParserDelegate):
  """Rejects @references and %macros: model gin files hold literal values."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    raise ValueError(f"@{scoped_configurable_name}: model gin files take literal values only")

  def macro(self, macro_name):
    raise ValueError(f"%{macro_name}: model gin files take literal values only")


def _read_text(path: str) -> str:
  try:
    return storage.read_bytes(path).decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not a gin file (not UTF-8 text at byte {e.start})") from None


def _statements(text: str, where: str) -> list[Any]:
  try:
    return list(config_parser.ConfigParser(text, _LiteralsOnly()))
  except SyntaxError as e:  # gin's parse errors
    raise ValueError(f"{where}:{e.lineno}: not a valid gin file: {e.msg}") from None


def _read_bindings(text: str, where: str, values: dict[str, Any], depth: int = 0) -> None:
  """Adds the `ModelConfig` bindings of gin text (and of the files it includes) to values."""
  if depth > 32:
    raise ValueError(f"{where}: includes nest more than 32 deep (an include cycle?)")
  for statement in _statements(text, where):
    if isinstance(statement, config_parser.IncludeStatement):
      path = storage.resolve(family.GIN_DIR, statement.filename)
      if not storage.is_file(path):
        raise FileNotFoundError(f"{where}: include {statement.filename!r}: no such file "
                                f"(relative includes are looked up in {family.GIN_DIR})")
      _read_bindings(_read_text(path), path, values, depth + 1)
    elif (isinstance(statement, config_parser.BindingStatement) and not statement.scope
          and statement.selector == "ModelConfig"):
      values[statement.arg_name] = statement.value
    else:
      line = statement.location.line_num
      raise ValueError(f"{where}:{line}: a model gin file may only `include` files and bind "
                       f"`ModelConfig.<field> = <value>`")


def load_config(gin_file: str | os.PathLike, bindings: Sequence[str] = ()) -> ModelConfig:
  """The `ModelConfig` bound by a model gin file (ours or T5X's), then by extra
  `bindings` lines. (A manifest entry may name a Hugging Face `config.json` instead:
  `convert.configs.load_config` reads both.)"""
  values: dict[str, Any] = {}
  path = os.fspath(gin_file)
  if t5x_gin.is_t5x_gin(path):
    values.update(t5x_gin.read(path).fields)
  else:
    _read_bindings(_read_text(path), path, values)
  return with_bindings(values, bindings, path)


def with_bindings(values: dict[str, Any], bindings: Sequence[str], path: str) -> ModelConfig:
  """The `ModelConfig` of field `values` (read from `path`) updated by `bindings` lines."""
  values = dict(values)
  _read_bindings("\n".join(bindings), "bindings", values)
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(values.keys() - fields)
  if unknown:
    raise ValueError(f"{path}: ModelConfig has no field {', '.join(unknown)}")
  try:
    return ModelConfig(**values)
  except (TypeError, ValueError) as e:  # a required field is not bound, or a bad value
    raise ValueError(f"{path}: {e}") from None


def to_gin(config: ModelConfig, comment: str = "") -> str:
  """A self-contained gin file that `load_config` turns back into `config`."""
  lines = [f"# {line}" for line in comment.splitlines()]
  lines += [f"ModelConfig.{f.name} = {getattr(config, f.name)!r}"
            for f in dataclasses.fields(config)]
  return "\n".join(lines) + "\n"


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
