"""T5X's own gin files, read without t5x: the network config as `ModelConfig` fields.

Reads what T5X writes and ships:
- the `config.gin` T5X writes into a model dir (`gin.config_str()`: imports, a macros
  section, then one `selector.param = value` per line, `%MACRO` and `@configurable()`
  values, scoped bindings such as `train/utils.DatasetConfig.batch_size`);
- its example model files: t5x/examples/decoder_only/models/*.gin
  (`network.TransformerConfig`), t5x/examples/t5/{t5_1_1,byt5,mt5,...}/*.gin and
  t5x/examples/scalable_t5/*/*.gin (`network.T5Config`); Flan-T5 uses the t5_1_1 files.
  Size files `include` a base file and override a block of bindings.

Statements apply in order (a later binding wins; an included file's where it stands).
`include` paths are looked up beside the including file and in its parent directories
(so a file inside a t5x checkout finds `t5x/examples/...`), then in the working directory;
the files may be gs:// URLs (read through `storage`).
Imports map `network` to its module, which tells the three networks apart; without
imports `network.TransformerConfig` is decoder_only and `network.T5Config` is t5 unless a
scalable_t5-only parameter is bound.

Fields T5X leaves unbound take the defaults of T5X's config dataclasses (they are not
ours: e.g. `mlp_activations=('relu',)`, `logits_via_embedding=False` unless the gin file
binds True, as t5x/examples/decoder_only/models/base.gin does). A binding that would
change what the network computes and has no `ModelConfig` equivalent is an error naming
it; training-only ones (dropout, remat, the scan layout of the checkpoint) are ignored.
"""

from __future__ import annotations

import dataclasses
import os
import tokenize
from typing import Any, NamedTuple

from gin import config_parser

from invscale_jax import storage

_DECODER_ONLY = "t5x.examples.decoder_only.network.TransformerConfig"
_T5 = "t5x.examples.t5.network.T5Config"
_SCALABLE_T5 = "t5x.examples.scalable_t5.network.T5Config"
# Per network config: (architecture, per-layer position biases, its layer-count fields).
_NETWORKS = {_DECODER_ONLY: ("decoder_only", False, ("num_layers",)),
             _T5: ("encoder_decoder", False, ("num_encoder_layers", "num_decoder_layers")),
             _SCALABLE_T5: ("encoder_decoder", True, ("num_encoder_layers", "num_decoder_layers"))}
_SCALABLE_ONLY = frozenset({"scan_layers", "param_scan_axis", "remat_policy"})
# The defaults of T5X's config dataclasses (every network above has these fields, and 6
# layers per stack); `vocab_size` has none.
_T5X_DEFAULTS = {"dtype": "float32", "emb_dim": 512, "num_heads": 8, "head_dim": 64,
                 "mlp_dim": 2048, "mlp_activations": ("relu",), "logits_via_embedding": False}
_T5X_LAYERS = 6
# Bound in T5X configs, without effect on the scores of a float32 forward pass.
_IGNORED = frozenset({"dropout_rate", "float32_attention_logits", *_SCALABLE_ONLY})
# T5X takes activations by flax name (`getattr(flax.linen, name)`); ours by these names.
_ACTIVATIONS = {"linear": "linear", "relu": "relu", "gelu": "gelu", "silu": "silu",
                "swish": "silu"}
_SENTENCEPIECE_ARGS = frozenset({"sentencepiece_model_file", "extra_ids"})


class GinError(ValueError):
  """A T5X gin file this reader cannot use; the message is one line naming file and line."""


class Reference(NamedTuple):
  """A `@name` (or `@name()`, evaluate=True) value."""

  name: str
  evaluate: bool


class Macro(NamedTuple):
  """A `%NAME` value."""

  name: str


@dataclasses.dataclass(frozen=True)
class Binding:
  value: Any
  where: str  # "file:line"
  text: str  # the binding as written, for messages

  def error(self, why: str) -> GinError:
    return GinError(f"{self.where}: {self.text}: {why}")


@dataclasses.dataclass(frozen=True)
class T5xModel:
  """What a T5X gin file says about the model."""

  fields: dict[str, Any]  # ModelConfig keyword arguments
  vocabulary: dict[str, Any] | None  # a vocabulary spec; None when the file names none
  network: str  # the T5X config class read, e.g. "t5x.examples.t5.network.T5Config"


class _Symbolic(config_parser.ParserDelegate):
  """Keeps references and macros as values instead of resolving them."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return Reference(scoped_configurable_name, evaluate)

  def macro(self, macro_name):
    return Macro(macro_name)


def _statements(path: str) -> list[Any]:
  try:
    text = storage.read_bytes(path).decode("utf-8")
    return list(config_parser.ConfigParser(text, _Symbolic()))
  except SyntaxError as e:
    raise GinError(f"{path}:{e.lineno}: not a valid gin file: {e.msg}") from None
  except tokenize.TokenError as e:  # e.g. an unclosed bracket
    raise GinError(f"{path}:{e.args[1][0]}: not a valid gin file: {e.args[0]}") from None
  except UnicodeDecodeError as e:
    raise GinError(f"{path}: not a gin file (not UTF-8 text at byte {e.start})") from None
  except FileNotFoundError:
    raise GinError(f"{path}: cannot read: not found") from None
  except OSError as e:
    raise GinError(f"{path}: cannot read: {e.strerror}") from None
  except storage.StorageError as e:
    raise GinError(f"{path}: {e.detail}") from None


def is_t5x_gin(path: str | os.PathLike[str]) -> bool:
  """Whether a gin file is T5X's rather than ours (ours hold only `include` statements and
  `ModelConfig.<field> = <value>` bindings)."""
  ours = lambda s: isinstance(s, config_parser.IncludeStatement) or (
      isinstance(s, config_parser.BindingStatement) and s.selector == "ModelConfig")
  return not all(ours(s) for s in _statements(os.fspath(path)))


def _parents(path: str) -> list[str]:
  """The directories holding `path` (a local path or gs:// URL), innermost first."""
  parents, parent = [], storage.parent(path)
  while parent not in parents and storage.is_url(parent) == storage.is_url(path):
    parents.append(parent)
    parent = storage.parent(parent)
  return parents


def _find_include(including: str, name: str, where: str) -> str:
  candidates = [name] if os.path.isabs(name) or storage.is_url(name) else [
      *(storage.join(directory, name) for directory in _parents(including)), name]
  for candidate in candidates:
    if storage.is_file(candidate):
      return candidate
  raise GinError(f"{where}: include {name!r}: not found beside {including} nor in its "
                 "parent directories")


def _module_name(statement: config_parser.ImportStatement) -> str:
  """The name an import binds: `from a import b` and `import a.b` bind b and a.b."""
  if statement.alias:
    return statement.alias
  return statement.module.rsplit(".", 1)[-1] if statement.is_from else statement.module


class _Reader:
  """The bindings of a gin file and the files it includes, in order."""

  def __init__(self):
    self.imports: dict[str, str] = {}  # name bound by an import -> module
    self.bindings: dict[tuple[str, str, str], Binding] = {}  # (scope, selector, arg) -> last

  def canonical(self, selector: str) -> str:
    """`network.T5Config` -> `t5x.examples.t5.network.T5Config` after that import."""
    for name, module in self.imports.items():
      if selector.startswith(name + "."):
        return module + selector[len(name):]
    return selector

  def read(self, path: str, depth: int = 0) -> None:
    if depth > 32:
      raise GinError(f"{path}: includes nest more than 32 deep (an include cycle?)")
    for statement in _statements(path):
      where = f"{path}:{statement.location.line_num}"
      if isinstance(statement, config_parser.ImportStatement):
        if not statement.module.startswith("__gin__"):
          self.imports[_module_name(statement)] = statement.module
      elif isinstance(statement, config_parser.IncludeStatement):
        self.read(_find_include(path, statement.filename, where), depth + 1)
      elif isinstance(statement, config_parser.BindingStatement):
        scope, selector, arg, value = statement[:4]
        text = "/".join(filter(None, (scope, ".".join(filter(None, (selector, arg))))))
        self.bindings[scope, self.canonical(selector), arg] = Binding(value, where, text)

  def resolve(self, binding: Binding) -> Any:
    """The binding's value with every %MACRO replaced by its value (references kept)."""
    return self._value(binding, binding.value, 0)

  def _value(self, binding: Binding, value: Any, depth: int) -> Any:
    if depth > 32:
      raise binding.error("macros nest more than 32 deep (a macro cycle?)")
    if isinstance(value, Macro):
      if value.name == "gin.REQUIRED":
        raise binding.error("is gin.REQUIRED: set it")
      bound = self.bindings.get(("", value.name, ""))
      if bound is None:
        raise binding.error(f"macro %{value.name} is not set")
      return self._value(bound, bound.value, depth + 1)
    if isinstance(value, (list, tuple)) and not isinstance(value, Reference):
      return type(value)(self._value(binding, v, depth + 1) for v in value)
    if isinstance(value, dict):
      return {k: self._value(binding, v, depth + 1) for k, v in value.items()}
    return value

  def of(self, selector: str) -> dict[str, Binding]:
    """The unscoped bindings of a (canonical) selector, by parameter."""
    return {arg: b for (scope, sel, arg), b in self.bindings.items()
            if sel == selector and arg and not scope}


def _network(reader: _Reader, path: str) -> str:
  """The one T5X network config the file binds (its canonical selector)."""
  found = {sel for (_, sel, arg) in reader.bindings if arg and
           sel.rsplit(".", 1)[-1] in ("TransformerConfig", "T5Config")}
  if len(found) > 1:
    raise GinError(f"{path}: binds several network configs: {', '.join(sorted(found))}")
  if not found:
    raise GinError(f"{path}: binds no T5X network config (network.TransformerConfig of "
                   "t5x/examples/decoder_only or network.T5Config of t5x/examples/t5 or "
                   "scalable_t5)")
  return found.pop()


def _kind(reader: _Reader, selector: str) -> tuple[str, bool, tuple[str, ...]]:
  if selector in _NETWORKS:
    return _NETWORKS[selector]
  if selector.endswith("TransformerConfig"):
    return _NETWORKS[_DECODER_ONLY]
  scalable = any(arg in _SCALABLE_ONLY for arg in reader.of(selector))
  return _NETWORKS[_SCALABLE_T5 if scalable else _T5]


def _fields(reader: _Reader, path: str, selector: str) -> dict[str, Any]:
  architecture, per_layer, layer_fields = _kind(reader, selector)
  for (scope, sel, arg), binding in reader.bindings.items():
    if sel == selector and scope:
      raise binding.error("cannot map a scoped network binding to ModelConfig")
  fields = {**_T5X_DEFAULTS, **dict.fromkeys(layer_fields, _T5X_LAYERS)}
  for arg, binding in reader.of(selector).items():
    if arg in _IGNORED:
      continue
    if arg != "vocab_size" and arg not in fields:
      raise binding.error("cannot map to ModelConfig (no equivalent)")
    value = reader.resolve(binding)
    if isinstance(value, Reference):
      raise binding.error(f"cannot map @{value.name} to ModelConfig (literal values only)")
    if arg == "mlp_activations":
      unknown = [a for a in value if a not in _ACTIVATIONS]
      if unknown:
        raise binding.error(f"cannot map activation {unknown[0]!r} (known: "
                            f"{', '.join(_ACTIVATIONS)})")
      value = tuple(_ACTIVATIONS[a] for a in value)
    fields[arg] = value
  if "vocab_size" not in fields:
    raise GinError(f"{path}: {selector}.vocab_size is not bound (T5X requires it)")
  return {"architecture": architecture, **fields, "relpos_per_layer": per_layer}


def _check_model(reader: _Reader) -> None:
  """Model-class bindings that change the scores and that our networks do not do."""
  for (_, sel, arg), binding in reader.bindings.items():
    if (sel.endswith("DecoderOnlyModel") and arg == "inputs_bidirectional_attention"
        and reader.resolve(binding)):
      raise binding.error("cannot map: a prefix LM attending bidirectionally over its "
                          "inputs (our decoder-only networks are causal)")


def _vocabulary(reader: _Reader) -> dict[str, Any] | None:
  """The model's vocabulary as a spec, from the model class's binding (or VOCABULARY)."""
  used = {}
  for (scope, sel, arg), binding in reader.bindings.items():
    if not scope and (sel.endswith("DecoderOnlyModel") and arg == "vocabulary" or
                      sel.endswith("EncoderDecoderModel") and arg in ("input_vocabulary",
                                                                      "output_vocabulary")):
      used[binding.text] = (binding, reader.resolve(binding))
  if not used and ("", "VOCABULARY", "") in reader.bindings:
    binding = reader.bindings["", "VOCABULARY", ""]
    used[binding.text] = (binding, reader.resolve(binding))
  if len({value for _, value in used.values()}) > 1:
    binding = next(iter(used.values()))[0]
    raise binding.error("input and output vocabularies differ (one vocabulary is scored)")
  if not used:
    return None
  binding, value = next(iter(used.values()))
  if not isinstance(value, Reference):
    raise binding.error("cannot read the vocabulary (expected @seqio.<Vocabulary>())")
  scope, _, name = value.name.rpartition("/")
  selector = reader.canonical(name)
  if selector.endswith("ByteVocabulary"):
    return {"type": "byte"}
  if not selector.endswith("SentencePieceVocabulary"):
    raise binding.error(f"cannot map vocabulary {name} (SentencePiece or bytes only)")
  args = {arg: b for (s, sel, arg), b in reader.bindings.items()
          if sel == selector and s in ("", scope) and arg}
  for arg, b in args.items():
    if arg not in _SENTENCEPIECE_ARGS:
      raise b.error("cannot map this vocabulary option")
  if "sentencepiece_model_file" not in args:
    raise binding.error(f"{name}.sentencepiece_model_file is not bound")
  return {"type": "sentencepiece", "path": reader.resolve(args["sentencepiece_model_file"])}


def read(path: str | os.PathLike[str]) -> T5xModel:
  """The model a T5X gin file (with its includes) configures; GinError when it cannot."""
  path = os.fspath(path)
  reader = _Reader()
  reader.read(path)
  selector = _network(reader, path)
  fields = _fields(reader, path, selector)
  _check_model(reader)
  return T5xModel(fields, _vocabulary(reader), selector)
