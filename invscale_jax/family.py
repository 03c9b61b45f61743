"""Family manifests: the models of a scaled family and their size and compute.

A manifest is a JSON file::

  {"family": "tiny", "description": "...",
   "models": [{"name": "tiny-1", "architecture": "decoder_only",
               "gin": "models/tiny/tiny_1.gin", "checkpoint": "tiny-1/checkpoint_0",
               "vocabulary": {"type": "byte"},
               "n_params": 123456, "train_tokens": 1e9, "train_flops": null,
               "bos_id": 0, "trained": false}, ...]}

`"task_dirs": ["tasks"]` (optional) names directories of your own task declarations
(`data.declarations`), relative to the manifest's directory like the other paths.
`"seed_group": "lab", "seed": 0` (optional, both or neither) say the family is training
seed 0 of a design whose other seeds are families with the same `seed_group` (`invscale
lab --seeds K` writes them); the report draws their mean over seeds with a band.

Every path may be a `gs://` URL, the manifest's own included (`hf_dir` excepted: torch
and safetensors read local files). Relative `checkpoint`, `hf_dir` and vocabulary paths
are relative to the manifest's directory (inside the bucket for a `gs://` manifest); a
relative `gin` path is looked up next to the manifest, then in the project's `gin/`
folder. `n_params` may be omitted (it is then counted from the checkpoint by
`resolve_n_params`). `trained` (optional) says whether the weights were trained: `false`
marks randomly initialised models (e.g. `init-tiny`), whose curves the report shows as
"no signal" instead of giving them a shape; absent means trained or unknown. `bos_id` is
the token the model's own pipeline puts before every prompt (null: none); when absent it
is the architecture's convention, `DEFAULT_BOS` (llama has none: its tokenizers differ,
so its entries must say). `encoder_eos` (true by default) puts EOS after an
encoder-decoder model's encoder input, as T5, Flan-T5, T5X and transformers' T5 tokenizer
do; false leaves the prompt's tokens alone.

T5X models are scored as they are (`models.t5x_dir`): `gin` may be a T5X gin file, or
`"t5x_model_dir": DIR` (optionally with `"step"`) stands for `gin` and `checkpoint`;
`architecture` and `vocabulary` then default to what the T5X gin file says.

Hugging Face models are scored in place too: `"hf_dir": DIR` (config.json, safetensors or
pytorch_model.bin weights, tokenizer) stands for `checkpoint` (DIR may be
`hf:ORG/NAME[@REVISION]`, a model in the local Hugging Face cache: `hf_cache`); its
weights are mapped to the network's parameters when it is loaded, with no copy on disk
(convert/hf_dir.py).
`gin` then defaults to DIR's config.json (the config is derived from it) and
`vocabulary` to DIR's tokenizer.json; `invscale family from-hf` writes such entries.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Any, Callable

from invscale_jax import hf_cache, storage
from invscale_jax.models import t5x_dir

ARCHITECTURES = ("decoder_only", "encoder_decoder", "gpt_neox", "opt", "llama", "gpt2")
# What each architecture's reference pipeline puts before a prompt: T5X's decoder-only
# feature converter shifts in id 0; transformers, lm-eval-harness and the prize pipeline
# add nothing before GPT-NeoX (Pythia) prompts. Encoder-decoder prompts go to the encoder
# unchanged (the decoder starts from id 0 whatever this says). OPT's tokenizer prepends
# `</s>` (id 2); GPT-2's prepends nothing. Llama-style tokenizers differ (Llama 2/3 and
# Mistral prepend their BOS, Qwen2.5 and SmolLM2 nothing): no default, entries say.
DEFAULT_BOS: dict[str, int | None] = {"decoder_only": 0, "encoder_decoder": None,
                                      "gpt_neox": None, "opt": 2, "gpt2": None}
CHECKPOINT_FORMATS = ("t5x", "hf")  # a T5X checkpoint, or a Hugging Face model directory
VOCABULARY_TYPES = ("byte", "sentencepiece", "hf_tokenizer")
GIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "gin"
FAMILIES_DIR = pathlib.Path(__file__).resolve().parent / "families"  # shipped manifests


class ManifestError(ValueError):
  """A manifest that cannot be used; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  name: str
  architecture: str
  gin: str  # resolved path of the model's gin file (or of a Hugging Face config.json)
  checkpoint: str  # resolved path: a checkpoint_<step> directory, or a HF model directory
  vocabulary: dict[str, Any]  # {"type": ..., "path": resolved path or absent}
  checkpoint_format: str = "t5x"  # one of CHECKPOINT_FORMATS
  n_params: int | None = None
  train_tokens: float | None = None
  train_flops: float | None = None
  bos_id: int | None = None  # token before every prompt (decoder-only architectures)
  trained: bool | None = None  # False: random weights (no signal); None: trained or unknown
  encoder_eos: bool = True  # encoder-decoder: EOS ends the encoder input, as T5 was trained

  @property
  def compute(self) -> float | None:
    """Training FLOPs: C if given, else 6ND (decoder) or 3ND (encoder-decoder), else None."""
    if self.train_flops is not None:
      return float(self.train_flops)
    if self.n_params is None or self.train_tokens is None:
      return None
    factor = 3.0 if self.architecture == "encoder_decoder" else 6.0
    return factor * self.n_params * self.train_tokens

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  models: tuple[ModelEntry, ...]
  path: str
  description: str = ""
  task_dirs: tuple[str, ...] = ()  # resolved directories of declared tasks
  seed_group: str | None = None  # the design this family is one training seed of
  seed: int | None = None  # its training seed (set exactly when seed_group is)

  def get(self, name: str) -> ModelEntry:
    for m in self.models:
      if m.name == name:
        return m
    raise ManifestError(f"{self.path}: models: no model named {name!r} "
                        f"(has {', '.join(m.name for m in self.models)})")


def _resolve(base: str, p: str) -> str:
  if "://" in p:  # a URL, e.g. the gs:// vocabulary a T5X gin file names
    return p
  return storage.resolve(base, p)


def _resolve_gin(base: str, p: str) -> str:
  for root in (base, GIN_DIR):
    if storage.is_file(storage.resolve(root, p)):
      return storage.resolve(root, p)
  return storage.resolve(base, p)


def _number(where: str, value: Any, field: str, integer: bool = False) -> Any:
  """A finite positive number (an integer if `integer`), or None."""
  if value is None:
    return None
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or (isinstance(value, float) and not math.isfinite(value)) or value <= 0):
    raise ManifestError(f"{where}: {field}: must be a finite positive number, got {value!r}")
  if integer and isinstance(value, float) and not value.is_integer():
    raise ManifestError(f"{where}: {field}: must be an integer, got {value!r}")
  return int(value) if integer else float(value)


def _string(where: str, value: Any, field: str) -> str:
  if not isinstance(value, str) or not value:
    raise ManifestError(f"{where}: {field}: must be a non-empty string, got {value!r}")
  return value


def _name(where: str, value: Any, field: str) -> str:
  """A model or family name: shown on terminals and in tables, so printable and one line."""
  name = _string(where, value, field)
  if not name.isprintable():
    raise ManifestError(f"{where}: {field}: must not hold control or line-break characters, "
                        f"got {name!r}")
  return name


def _bos_id(where: str, m: dict[str, Any]) -> int | None:
  if "bos_id" not in m:
    if m["architecture"] not in DEFAULT_BOS:
      raise ManifestError(f"{where}: bos_id: missing; {m['architecture']} models have no "
                          f"default (the id their tokenizer puts first, or null)")
    return DEFAULT_BOS[m["architecture"]]
  value = m["bos_id"]
  if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
    return value
  raise ManifestError(f"{where}: bos_id: must be a token id (an integer >= 0) or null, "
                      f"got {value!r}")


def _trained(where: str, value: Any) -> bool | None:
  if value is None or isinstance(value, bool):
    return value
  raise ManifestError(f"{where}: trained: must be true, false or null, got {value!r}")


def _encoder_eos(where: str, m: dict[str, Any]) -> bool:
  value = m.get("encoder_eos", True)
  if not isinstance(value, bool):
    raise ManifestError(f"{where}: encoder_eos: must be true or false, got {value!r}")
  return value


def seed_group(where: str, data: dict[str, Any]) -> tuple[str | None, int | None]:
  """(seed_group, seed) of a manifest (or of run.json's `seed_group` object): both or
  neither; raises ManifestError naming the field."""
  if "seed_group" not in data and "seed" not in data:
    return None, None
  if "seed_group" not in data or "seed" not in data:
    raise ManifestError(f"{where}: seed_group and seed: give both or neither")
  seed = data["seed"]
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ManifestError(f"{where}: seed: must be an integer >= 0, got {seed!r}")
  return _name(where, data["seed_group"], "seed_group"), seed


def load(path: os.PathLike | str) -> Family:
  """Reads and validates a manifest (a path, a URL or a shipped family's name, see `find`);
  every problem raises ManifestError naming the field."""
  path = find(path)
  try:
    data = json.loads(storage.read_text(path))
  except FileNotFoundError:
    bare_name = "/" not in path and not path.endswith(".json")
    hint = f" (nor a shipped family: {', '.join(p.stem for p in shipped())})" if bare_name else ""
    if hf_cache.is_name(path):
      hint = f"; a manifest for it: `invscale family from-hf {path} --out DIR/manifest.json`"
    raise ManifestError(f"{path}: manifest not found{hint}") from None
  except json.JSONDecodeError as e:
    raise ManifestError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
  except storage.StorageError as e:  # not UTF-8 text, or not readable (e.g. permission)
    raise ManifestError(str(e)) from None
  except RecursionError:
    raise ManifestError(f"{path}: invalid JSON: nested too deeply") from None
  if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
    raise ManifestError(f"{path}: models: must be a non-empty list")
  base = storage.parent(path)
  models, seen = [], set()
  for i, m in enumerate(data["models"]):
    where = f"{path}: models[{i}]"
    if not isinstance(m, dict):
      raise ManifestError(f"{where}: must be an object")
    hf = "hf_dir" in m
    if hf:  # the directory's own config and tokenizer unless others are named
      if "checkpoint" in m or "t5x_model_dir" in m:
        raise ManifestError(f"{where}: hf_dir: names the weights itself; drop checkpoint "
                            f"and t5x_model_dir")
      hf_dir = _string(where, m["hf_dir"], "hf_dir")
      try:
        hf_dir = hf_cache.resolve(hf_dir) if hf_cache.is_name(hf_dir) else _resolve(base, hf_dir)
      except (ValueError, OSError) as e:
        raise ManifestError(f"{where}: hf_dir: {e}") from None
      m = {"gin": os.path.join(hf_dir, "config.json"), "vocabulary": {
          "type": "hf_tokenizer", "path": os.path.join(hf_dir, "tokenizer.json")}, **m,
           "checkpoint": hf_dir}
    elif "t5x_model_dir" in m or not {"architecture", "vocabulary"} <= m.keys():
      try:
        m = t5x_dir.complete_entry(m, lambda p: _resolve(base, p), lambda p: _resolve_gin(base, p))
      except ValueError as e:
        raise ManifestError(f"{where}: {e}") from None
    for key in ("name", "architecture", "gin", "checkpoint", "vocabulary"):
      if key not in m:
        raise ManifestError(f"{where}: {key}: missing")
    name = _name(where, m["name"], "name")
    gin, checkpoint = (_string(where, m[k], k) for k in ("gin", "checkpoint"))
    if name in seen:
      raise ManifestError(f"{where}: name: duplicate model name {name!r}")
    seen.add(name)
    if m["architecture"] not in ARCHITECTURES:
      raise ManifestError(f"{where}: architecture: {m['architecture']!r} is not one of "
                          f"{', '.join(ARCHITECTURES)}")
    if not isinstance(m["vocabulary"], dict):
      raise ManifestError(f"{where}: vocabulary: must be an object, got {m['vocabulary']!r}")
    vocab = dict(m["vocabulary"])
    if vocab.get("type") not in VOCABULARY_TYPES:
      raise ManifestError(f"{where}: vocabulary.type: must be one of {', '.join(VOCABULARY_TYPES)}")
    if vocab["type"] != "byte":
      if "path" not in vocab:
        raise ManifestError(f"{where}: vocabulary.path: missing for type {vocab['type']!r}")
      vocab["path"] = _resolve(base, _string(where, vocab["path"], "vocabulary.path"))
      vocab["source"] = f"{path}: model {name}"  # named by errors about the file
    models.append(ModelEntry(
        name=name, architecture=m["architecture"], gin=_resolve_gin(base, gin),
        checkpoint=_resolve(base, checkpoint), vocabulary=vocab,
        checkpoint_format="hf" if hf else "t5x",
        n_params=_number(where, m.get("n_params"), "n_params", integer=True),
        train_tokens=_number(where, m.get("train_tokens"), "train_tokens"),
        train_flops=_number(where, m.get("train_flops"), "train_flops"),
        bos_id=_bos_id(where, m), trained=_trained(where, m.get("trained")),
        encoder_eos=_encoder_eos(where, m)))
  task_dirs = data.get("task_dirs", [])
  if not isinstance(task_dirs, list):
    raise ManifestError(f"{path}: task_dirs: must be a list of directories, got {task_dirs!r}")
  group, seed = seed_group(path, data)
  return Family(name=_name(path, data.get("family", default_name(path)), "family"),
                models=tuple(models), path=str(path), seed_group=group, seed=seed,
                description=str(data.get("description", "")),
                task_dirs=tuple(_resolve(base, _string(path, d, "task_dirs")) for d in task_dirs))


def shipped() -> list[pathlib.Path]:
  """The manifests shipped in invscale_jax/families/."""
  return sorted(FAMILIES_DIR.glob("*.json"))


def find(name_or_path: os.PathLike | str) -> str:
  """A manifest path or URL, or the shipped manifest of that family name (e.g. "opt"): a
  name is a shipped family when no file of that name exists."""
  path = os.fspath(name_or_path)
  shipped_path = FAMILIES_DIR / f"{path}.json"
  if not storage.is_url(path) and not os.path.exists(path) and shipped_path.is_file():
    return str(shipped_path)
  return path


def default_name(manifest: os.PathLike | str) -> str:
  """A family's name when its manifest gives none: the file's stem, or its directory's
  name for a file called manifest.json (DIR/manifest.json is family DIR)."""
  stem = os.path.splitext(storage.basename(manifest))[0]
  if stem != "manifest":
    return stem
  return storage.basename(storage.parent(storage.absolute(manifest))) or stem


def resolve_n_params(family: Family, count: Callable[[ModelEntry], int]) -> Family:
  """Fills missing `n_params` with `count(entry)` (e.g. counted from the checkpoint)."""
  models = tuple(m if m.n_params is not None else dataclasses.replace(m, n_params=count(m))
                 for m in family.models)
  return dataclasses.replace(family, models=models)
