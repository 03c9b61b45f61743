"""What every Hugging Face converter shares: configs from config.json, reading tensors one
at a time and renaming them by rules (no JAX: planning reads configs through it).
Checking the result against the network and writing it: hf_weights.py.

torch (and safetensors) are imported inside the functions: only converters need them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import re
import shutil
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from invscale_jax import checks, storage
from invscale_jax.convert import hf_tokenizer
from invscale_jax.models.config import ModelConfig

Path = tuple[str, ...]  # T5X parameter name, e.g. ("decoder", "layers_0", "mlp", "wi", "kernel")
Transform = Callable[[np.ndarray], np.ndarray]
# (HF name regex, T5X name template filled with the regex groups, transform); a None
# template skips the tensor (buffers, tied copies).
Rule = tuple[str, str | None, Transform | None]
JSON_BYTES = 16 << 20  # the most read of a config.json or a weight index

# HF activation names -> ours (models/layers.py ACTIVATIONS).
ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
               "relu": "relu", "silu": "silu"}


def keep(x: np.ndarray) -> np.ndarray:
  return x


def transpose(x: np.ndarray) -> np.ndarray:
  """torch Linear weights are [out, in]; T5X kernels are [in, out]."""
  return np.ascontiguousarray(x.T)


def linear(hf_name: str, t5x_name: str, bias: bool = True, transform: Transform = transpose,
           bias_transform: Transform = keep) -> list[Rule]:
  """Rules of a torch Linear (weight transposed) with or without its bias."""
  rules = [(hf_name + r"\.weight", t5x_name + "/kernel", transform)]
  return rules + [(hf_name + r"\.bias", t5x_name + "/bias", bias_transform)] if bias else rules


def norm(hf_name: str, t5x_name: str, bias: bool = True) -> list[Rule]:
  """Rules of a LayerNorm (weight and bias) or RMSNorm (weight only)."""
  rules = [(hf_name + r"\.weight", t5x_name + "/scale", keep)]
  return rules + [(hf_name + r"\.bias", t5x_name + "/bias", keep)] if bias else rules


def output_layer(tied: bool) -> list[Rule]:
  """`lm_head`: a copy of the token embedding when tied (files may still hold it), else
  the output layer."""
  return [(r"lm_head\.weight", None if tied else "decoder/logits_dense/kernel",
           None if tied else transpose)]


def mlp_config(hidden_act: str, gated: bool) -> tuple[str, ...]:
  """`ModelConfig.mlp_activations` of a plain or gated (SwiGLU-style) HF MLP."""
  return (activation(hidden_act), "linear") if gated else (activation(hidden_act),)


def read_config(src_dir: str | os.PathLike) -> dict:
  return checks.read_json_file(pathlib.Path(src_dir) / "config.json", JSON_BYTES)


def head_dim(hidden: Any, heads: Any, names: tuple[str, str]) -> int:
  """The width of each head, hidden / heads (config.json fields named by `names`)."""
  for value, name in zip((hidden, heads), names):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ValueError(f"{name}: must be a positive integer, got {value!r}")
  if hidden % heads:
    raise ValueError(f"{names[1]} {heads} does not divide {names[0]} {hidden}")
  return hidden // heads


def activation(hf_name: str) -> str:
  if not isinstance(hf_name, str) or hf_name not in ACTIVATIONS:
    raise ValueError(f"unsupported activation {hf_name!r} (supported: {', '.join(ACTIVATIONS)})")
  return ACTIVATIONS[hf_name]


def _weight_files(src: pathlib.Path) -> list[pathlib.Path]:
  for single in ("model.safetensors", "pytorch_model.bin"):
    index = src / f"{single}.index.json"
    if index.is_file():
      weight_map = checks.read_json_file(index, JSON_BYTES).get("weight_map")
      if not isinstance(weight_map, dict) or not all(
          isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index}: weight_map: must be an object of file names")
      names = sorted(set(weight_map.values()))
      outside = [n for n in names if not storage.stays_inside(n)]
      if outside:  # read, they would not be in the run key (the directory's files are)
        raise ValueError(f"{index}: weight_map names {outside[0]!r}, outside the model "
                         f"directory (only files inside it are read)")
      return [src / name for name in names]
    if (src / single).is_file():
      return [src / single]
  raise FileNotFoundError(f"{src}: no model.safetensors or pytorch_model.bin (or their index)")


class WeightFileError(ValueError):
  """A weight file that cannot be read (malformed header, lying offsets, not a checkpoint)."""

  def __init__(self, path: pathlib.Path, e: BaseException):
    reason = str(e).partition("\n")[0] or type(e).__name__
    super().__init__(f"{path}: not a readable weight file ({reason})")


def _guarded(path: pathlib.Path, load: Callable[[], Any]) -> Callable[[], Any]:
  """`load`, raising WeightFileError for whatever the file's reader raises."""
  def guarded() -> Any:
    try:
      return load()
    except Exception as e:  # pylint: disable=broad-except  (safetensors, torch: many kinds)
      raise WeightFileError(path, e) from None
  return guarded


def _stored(path: pathlib.Path) -> Iterator[tuple[str, Callable[[], Any]]]:
  """(name, loader of the torch tensor) of every tensor in one weight file; nothing is read
  before a loader is called (safetensors reads on demand, .bin files are memory-mapped).
  A malformed file raises WeightFileError, when it is opened or when a tensor is loaded."""
  import torch  # pylint: disable=g-import-not-at-top  (hf extra: optional)
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top  (hf extra: optional)

  if path.suffix == ".safetensors":
    with _guarded(path, lambda: safe_open(path, framework="pt"))() as f:
      for name in _guarded(path, f.keys)():
        yield name, _guarded(path, functools.partial(f.get_tensor, name))
  else:
    tensors = _guarded(path, lambda: torch.load(path, map_location="cpu", mmap=True,
                                                weights_only=True))()
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
      raise WeightFileError(path, ValueError("not a dict of named tensors"))
    for name, tensor in tensors.items():
      yield name, lambda tensor=tensor: tensor


def tensor_names(src_dir: str | os.PathLike) -> set[str]:
  """Names of the stored tensors, without reading their data."""
  return {name for path in _weight_files(pathlib.Path(src_dir)) for name, _ in _stored(path)}


def read_tensors(src_dir: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, float32 array) of every stored tensor, loading one tensor at a time."""
  for path in _weight_files(pathlib.Path(src_dir)):
    for name, load in _stored(path):
      yield name, _guarded(path, lambda load=load: load().float().numpy())()


def rename(name: str, rules: Iterable[Rule],
           aliases: dict[str, str] | None = None) -> list[tuple[Path, Transform]]:
  """The T5X names and transforms of HF tensor `name`: one per matching rule.

  Regex groups fill the template, translated through `aliases` (e.g. "q" -> "query").
  A tensor matched only by skip rules gives []; one matched by no rule is an error.
  """
  renamed, matched = [], False
  for pattern, template, transform in rules:
    match = re.fullmatch(pattern, name)
    if match:
      matched = True
      if template is not None:
        groups = [(aliases or {}).get(g, g) for g in match.groups()]
        renamed.append((tuple(template.format(*groups).split("/")), transform))
  if not matched:
    raise ValueError(f"unexpected tensor {name!r} in the Hugging Face checkpoint")
  return renamed


@dataclasses.dataclass(frozen=True)
class Converter:
  """One architecture's mapping: its config from config.json and its renaming rules.

  Both the converters (`hf_weights.convert`, into a T5X checkpoint) and scoring a Hugging
  Face directory directly (hf_dir.py, in memory) stream parameters from
  `hf_weights.convert_params`.
  """

  model_types: tuple[str, ...]  # the config.json model_type values it converts
  config_from_hf: Callable[..., ModelConfig]  # (config.json dict, dtype=...) -> config
  rules: Callable[[ModelConfig, pathlib.Path], list[Rule]]  # (config, source dir)
  aliases: dict[str, str] | None = None  # regex group -> name in the T5X template

  def config(self, src_dir: str | os.PathLike, dtype: str = "bfloat16") -> ModelConfig:
    hf_config, path = read_config(src_dir), pathlib.Path(src_dir) / "config.json"
    if hf_config.get("model_type") not in self.model_types:
      raise ValueError(f"{path}: model_type "
                       f"{hf_config.get('model_type')!r} is not {' or '.join(self.model_types)}")
    try:
      return self.config_from_hf(hf_config, dtype=dtype)
    except KeyError as e:
      raise ValueError(f"{path}: {e.args[0]}: missing") from None
    except (TypeError, ValueError, ArithmeticError, AttributeError) as e:  # a field's value
      raise ValueError(f"{path}: {e}") from None

def tokenizer_fields(src_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     architecture: str, prefix: str = "") -> dict[str, Any]:
  """The manifest fields of the source's tokenizer: `vocabulary` (None without tokenizer
  files) and, for decoder-only models `bos_id`, for encoder-decoder ones `encoder_eos`
  (whether `tokenizer(prompt)` ends with EOS). Its file is written into `out_dir`: T5's
  `spiece.model` copied (its tokenizer appends `</s>`: the default), any other the
  tokenizer.json transformers encodes with (hf_tokenizer.export); file names start with
  `prefix`."""
  src, out = pathlib.Path(src_dir), pathlib.Path(out_dir)
  if architecture == "encoder_decoder" and (src / "spiece.model").is_file():  # T5
    shutil.copyfile(src / "spiece.model", out / f"{prefix}spiece.model")
    return {"vocabulary": {"type": "sentencepiece", "path": f"{prefix}spiece.model"}}
  if not hf_tokenizer.has_tokenizer(src):
    return {"vocabulary": None}
  conventions = hf_tokenizer.export(src, out / f"{prefix}tokenizer.json")
  fields = {"vocabulary": hf_tokenizer.vocabulary_spec(f"{prefix}tokenizer.json", conventions)}
  if architecture == "encoder_decoder":
    if conventions.bos_id is not None:
      raise ValueError(f"{src}: the tokenizer puts id {conventions.bos_id} before a text: an "
                       f"encoder input takes only an EOS after it")
    fields["encoder_eos"] = conventions.appends_eos
  elif conventions.appends_eos:
    raise ValueError(f"{src}: the tokenizer puts EOS after a text: a decoder-only model's "
                     f"prompt cannot end with it")
  else:
    fields["bos_id"] = conventions.bos_id
  return fields
