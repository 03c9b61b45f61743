"""Model hyperparameters (`ModelConfig`) and reading them from gin files.

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
import math
import os
from typing import Any, Sequence

import ml_dtypes
import numpy as np
from gin import config_parser

from invscale_jax import family, storage
from invscale_jax.models import t5x_gin


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of one network; names follow T5X's network configs."""

  architecture: str  # one of family.ARCHITECTURES
  vocab_size: int
  emb_dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  num_layers: int = 0  # decoder_only and gpt_neox
  num_encoder_layers: int = 0  # encoder_decoder
  num_decoder_layers: int = 0  # encoder_decoder
  # One activation: a plain MLP `wi`; several: gated `wi_0`, `wi_1`, ... multiplied together.
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  logits_via_embedding: bool = False  # logits = embedding.attend(y) / sqrt(emb_dim)
  norm_eps: float = 1e-6  # RMSNorm (T5 architectures) or LayerNorm (gpt_neox) epsilon
  relpos_buckets: int = 32  # T5 relative position bias
  relpos_max_distance: int = 128
  rotary_pct: float = 0.25  # gpt_neox: fraction of each head's dims that are rotated
  rotary_base: float = 10000.0
  parallel_residual: bool = True  # gpt_neox: x + attn(ln1(x)) + mlp(ln2(x))
  dtype: str = "bfloat16"  # activations; params are float32, logits float32
  # T5 stacks: one relative position bias per layer (t5x/examples/scalable_t5), not one
  # shared by the layers of a stack (t5x/examples/t5 and decoder_only).
  relpos_per_layer: bool = False

  def __post_init__(self):
    _check_types(self)
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    sizes = ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim")
    if any(getattr(self, name) <= 0 for name in sizes):
      raise ValueError(f"ModelConfig: {', '.join(sizes)} must be positive")
    if self.architecture not in family.ARCHITECTURES:
      raise ValueError(f"ModelConfig.architecture: {self.architecture!r} is not one of "
                       f"{', '.join(family.ARCHITECTURES)}")
    encoder_decoder = self.architecture == "encoder_decoder"
    layers = (self.num_encoder_layers, self.num_decoder_layers) if encoder_decoder else (
        self.num_layers,)
    if min(layers) <= 0:
      fields = "num_encoder_layers and num_decoder_layers" if encoder_decoder else "num_layers"
      raise ValueError(f"ModelConfig: {self.architecture} needs positive {fields}")
    if self.architecture == "gpt_neox" and self.logits_via_embedding:
      raise ValueError("ModelConfig: gpt_neox has an untied output layer (logits_via_embedding)")

  @property
  def activation_dtype(self) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16 if self.dtype == "bfloat16" else self.dtype)

  @property
  def decoder_layers(self) -> int:
    """Layers of the (only or second) stack, the one that is decoded with a cache."""
    return self.num_decoder_layers if self.architecture == "encoder_decoder" else self.num_layers

  @property
  def rotary_dims(self) -> int:
    """Leading dims of each head rotated by position (GPT-NeoX: int(head_dim * rotary_pct))."""
    return int(self.head_dim * self.rotary_pct) if self.architecture == "gpt_neox" else 0


def _check_types(config: ModelConfig) -> None:
  """Every field holds a value of its annotated type (ints are not bools or floats)."""
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if f.type == "tuple[str, ...]":
      ok = isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
    else:
      kind = {"int": int, "float": (int, float), "bool": bool, "str": str}[f.type]
      ok = isinstance(value, kind) and (f.type == "bool" or not isinstance(value, bool))
      ok = ok and (f.type != "float" or math.isfinite(value))
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


def _read_bindings(text: str, where: str, values: dict[str, Any]) -> None:
  """Adds the `ModelConfig` bindings of gin text (and of the files it includes) to values."""
  for statement in _statements(text, where):
    if isinstance(statement, config_parser.IncludeStatement):
      path = storage.resolve(family.GIN_DIR, statement.filename)
      if not storage.is_file(path):
        raise FileNotFoundError(f"{where}: include {statement.filename!r}: no such file "
                                f"(relative includes are looked up in {family.GIN_DIR})")
      _read_bindings(_read_text(path), path, values)
    elif (isinstance(statement, config_parser.BindingStatement) and not statement.scope
          and statement.selector == "ModelConfig"):
      values[statement.arg_name] = statement.value
    else:
      line = statement.location.line_num
      raise ValueError(f"{where}:{line}: a model gin file may only `include` files and bind "
                       f"`ModelConfig.<field> = <value>`")


def load_config(gin_file: str | os.PathLike, bindings: Sequence[str] = ()) -> ModelConfig:
  """The `ModelConfig` bound by a model gin file (ours or T5X's), then by extra
  `bindings` lines."""
  values: dict[str, Any] = {}
  path = os.fspath(gin_file)
  if t5x_gin.is_t5x_gin(path):
    values.update(t5x_gin.read(path).fields)
  else:
    _read_bindings(_read_text(path), path, values)
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
