"""`invscale family from-t5x`: a family manifest for T5X models as they are (each
checkpoint's parameters counted and checked against its gin file's network)."""

from __future__ import annotations

import collections
import json
import os
from typing import Any

from invscale_jax import checkpoint_layout as layout
from invscale_jax import checkpoints as checkpoints_lib
from invscale_jax import storage
from invscale_jax.models import t5x_dir, t5x_gin
from invscale_jax.models.config import ModelConfig
from invscale_jax.models.model import build


def _manifest_path(path: str, manifest_dir: str) -> str:
  """`path` relative to the manifest's directory when inside it, else absolute."""
  path = os.path.abspath(path)
  inside = os.path.commonpath([path, manifest_dir]) == manifest_dir
  return os.path.relpath(path, manifest_dir) if inside else path


def _source(source: str, checkpoints: list[str], step: int | None
            ) -> tuple[str, str, str, dict[str, Any]]:
  """(gin file, checkpoint dir, default name, manifest path fields) of one source: a T5X
  model dir, or a gin file whose checkpoint is the next of `checkpoints`."""
  if os.path.isdir(source):
    gin = os.path.join(source, t5x_dir.CONFIG_GIN)
    if not os.path.isfile(gin):
      raise FileNotFoundError(f"{source}: no {t5x_dir.CONFIG_GIN}: not a T5X model dir")
    name = os.path.basename(os.path.abspath(source))
    return gin, t5x_dir.checkpoint_of(source, step), name, {"t5x_model_dir": source}
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
