"""T5X model directories as family members: `config.gin` beside `checkpoint_<step>/`.

A manifest entry may name one (`"t5x_model_dir": DIR`, optionally `"step": N`; else its
latest complete checkpoint) or a T5X gin file and a checkpoint; its architecture and
vocabulary default to what the gin file says. `invscale family from-t5x` writes them.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any, Callable

from invscale_jax import storage
from invscale_jax.models import t5x_gin

CONFIG_GIN = "config.gin"  # what T5X writes into every model dir it trains


def checkpoint_of(model_dir: str, step: int | None = None) -> str:
  """`model_dir/checkpoint_<step>`, or the latest complete one when `step` is None."""
  from invscale_jax.checkpoints import layout  # pylint: disable=g-import-not-at-top

  if step is None:
    return layout.locate(model_dir).path
  path = layout.step_dir(model_dir, step)
  if not storage.is_dir(path):
    raise FileNotFoundError(f"{path}: no such checkpoint")
  return path


def entry_defaults(gin_file: str) -> dict[str, Any]:
  """The architecture and vocabulary (when it names one) a T5X gin file gives a manifest
  entry; nothing for our own model gin files."""
  if not t5x_gin.is_t5x_gin(gin_file):
    return {}
  model = t5x_gin.read(gin_file)
  vocabulary = {} if model.vocabulary is None else {"vocabulary": model.vocabulary}
  return {"architecture": model.fields["architecture"], **vocabulary}


def complete_entry(entry: dict[str, Any], resolve: Callable[[str], str],
                   resolve_gin: Callable[[str], str]) -> dict[str, Any]:
  """A manifest entry with what T5X's files say filled in: `t5x_model_dir` (and `step`)
  become `gin` and `checkpoint`; a T5X gin file gives `architecture` and `vocabulary`
  where the entry leaves them out. `resolve(_gin)` resolve the manifest's paths.
  Errors are ValueErrors `field: what is wrong`."""
  for field in ("t5x_model_dir", "gin"):
    if field in entry and not (isinstance(entry[field], str) and entry[field]):
      raise ValueError(f"{field}: must be a non-empty string, got {entry[field]!r}")
  if "t5x_model_dir" in entry:
    if "gin" in entry or "checkpoint" in entry:
      raise ValueError("t5x_model_dir: names the gin file and checkpoint itself; drop gin "
                       "and checkpoint")
    step = entry.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
      raise ValueError(f"step: must be a checkpoint step >= 0, got {step!r}")
    model_dir = resolve(entry["t5x_model_dir"])
    try:
      checkpoint = checkpoint_of(model_dir, step)
    except (FileNotFoundError, ValueError) as e:
      raise ValueError(f"t5x_model_dir: {e}") from None
    entry = {**entry, "gin": os.path.join(model_dir, CONFIG_GIN), "checkpoint": checkpoint}
  if "gin" not in entry:
    return entry
  try:
    return {**entry_defaults(resolve_gin(entry["gin"])), **entry}
  except ValueError as e:
    raise ValueError(f"gin: {e}") from None


def _manifest_path(path: str, manifest_dir: str) -> str:
  """`path` relative to the manifest's directory when inside it, else absolute."""
  path = os.path.abspath(path)
  inside = os.path.commonpath([path, manifest_dir]) == manifest_dir
  return os.path.relpath(path, manifest_dir) if inside else path


def _source(source: str, checkpoints: list[str], step: int | None
            ) -> tuple[str, str, str, dict[str, Any]]:
  """(gin file, checkpoint dir, default name, manifest path fields) of one source: a T5X
  model dir, or a gin file whose checkpoint is the next of `checkpoints`."""
  from invscale_jax.checkpoints import layout  # pylint: disable=g-import-not-at-top

  if os.path.isdir(source):
    gin = os.path.join(source, CONFIG_GIN)
    if not os.path.isfile(gin):
      raise FileNotFoundError(f"{source}: no {CONFIG_GIN}: not a T5X model dir")
    name = os.path.basename(os.path.abspath(source))
    return gin, checkpoint_of(source, step), name, {"t5x_model_dir": source}
  if not checkpoints:
    raise ValueError(f"{source}: a gin file needs its checkpoint: pass --checkpoint")
  checkpoint = layout.locate(checkpoints.pop(0)).path
  stem = os.path.splitext(os.path.basename(source))[0]
  name = os.path.basename(os.path.dirname(checkpoint)) if stem == "config" else stem
  return source, checkpoint, name, {"gin": source, "checkpoint": checkpoint}


def _vocabulary(source: str, spec: dict[str, Any] | None) -> dict[str, Any]:
  if spec is None:
    raise ValueError(f"{source}: the gin file names no vocabulary: pass --vocabulary")
  if spec["type"] != "byte" and not storage.is_file(spec["path"]):
    raise ValueError(f"{source}: vocabulary {spec['path']} not found: pass --vocabulary PATH")
  return spec


def write_manifest(out: str, sources: list[str], *, names: list[str] | None = None,
                   checkpoints: list[str] | None = None, step: int | None = None,
                   vocabulary: dict[str, Any] | None = None,
                   train_tokens: list[float] | None = None,
                   train_flops: list[float] | None = None, family: str = "t5x") -> str:
  """Writes a family manifest for T5X models as they are (`invscale family from-t5x`).

  Each source is a T5X model dir (its config.gin and latest or `step` checkpoint) or a
  T5X gin file (with the next of `checkpoints`). Names default to the model dir's name;
  N is counted from each checkpoint (and must be what the gin file's network holds); the
  vocabulary is the gin file's unless `vocabulary` is given; `train_tokens` and
  `train_flops` hold one value per model, or one for all. Returns the manifest path.
  """
  from invscale_jax import checkpoints as checkpoints_lib  # pylint: disable=g-import-not-at-top
  from invscale_jax.models.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from invscale_jax.models.model import build  # pylint: disable=g-import-not-at-top

  if os.path.exists(out):
    raise ValueError(f"{out}: already exists")
  if names is not None and len(names) != len(sources):
    raise ValueError(f"--name: {len(names)} names for {len(sources)} models")
  per_model = {}
  for flag, values in (("train_tokens", train_tokens), ("train_flops", train_flops)):
    if values and len(values) not in (1, len(sources)):
      raise ValueError(f"--{flag}: {len(values)} values for {len(sources)} models")
    per_model[flag] = values * len(sources) if values and len(values) == 1 else values
  manifest_dir = os.path.dirname(os.path.abspath(out))
  pending, entries = list(checkpoints or ()), []
  for i, source in enumerate(sources):
    gin, checkpoint, name, where = _source(source, pending, step)
    model = t5x_gin.read(gin)
    n_params = checkpoints_lib.count_params(checkpoint)
    expected = build(ModelConfig(**model.fields)).num_params()
    if n_params != expected:
      raise ValueError(f"{checkpoint}: holds {n_params:,} parameters, the network of {gin} "
                       f"has {expected:,}")
    spec = dict(_vocabulary(source, vocabulary or model.vocabulary))
    if "path" in spec:
      spec["path"] = _manifest_path(spec["path"], manifest_dir)
    entry = {"name": names[i] if names else name,
             **{k: _manifest_path(v, manifest_dir) for k, v in where.items()}}
    if step is not None and "t5x_model_dir" in where:
      entry["step"] = step
    entry.update(architecture=model.fields["architecture"], vocabulary=spec, n_params=n_params)
    entries.append({**entry, **{k: v[i] for k, v in per_model.items() if v}})
  if pending:
    raise ValueError(f"--checkpoint: {len(pending)} more checkpoints than gin files")
  counts = collections.Counter(e["name"] for e in entries)
  duplicates = sorted(name for name, n in counts.items() if n > 1)
  if duplicates:
    raise ValueError(f"--name: duplicate model names {', '.join(duplicates)}")
  text = json.dumps({"family": family, "description": "T5X models, as they are "
                     "(invscale family from-t5x)", "models": entries}, indent=1) + "\n"
  tmp = f"{out}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, out)
  return out
