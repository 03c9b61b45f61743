"""What converting a Hugging Face model needs the network for (JAX, Flax): its parameters
converted one tensor at a time and checked against the network (`convert_params`, which
scoring a Hugging Face directory directly streams), written as a T5X checkpoint with its
manifest (`convert`), and a manifest entry with its parameter count (`manifest_entry`)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any, Iterable, Iterator

import numpy as np
from flax import traverse_util

from invscale_jax import checkpoints
from invscale_jax.convert import hf, hf_dir
from invscale_jax.models.config import ModelConfig, to_gin
from invscale_jax.models.model import Model


def checked(params: Iterable[tuple[hf.Path, np.ndarray]],
            config: ModelConfig) -> Iterator[tuple[hf.Path, np.ndarray]]:
  """Passes params through, failing on an unknown, duplicate, misshapen or missing one."""
  shapes = traverse_util.flatten_dict(Model(config).param_shapes())
  expected = {path: s.shape for path, s in shapes.items()}
  seen = set()
  for path, x in params:
    name = "/".join(path)
    if path not in expected:
      raise ValueError(f"{name}: not a parameter of the {config.architecture} model")
    if path in seen:
      raise ValueError(f"{name}: converted twice")
    if x.shape != expected[path]:
      raise ValueError(f"{name}: converted shape {x.shape} != model shape {expected[path]}")
    seen.add(path)
    yield path, x
  missing = sorted("/".join(p) for p in expected.keys() - seen)
  if missing:
    raise ValueError(f"missing from the Hugging Face checkpoint: {', '.join(missing)}")


def convert_tensors(src_dir: str | os.PathLike, config: ModelConfig, rules: Iterable[hf.Rule],
                    aliases: dict[str, str] | None = None) -> Iterator[tuple[hf.Path, np.ndarray]]:
  """(T5X name, float32 array) of every parameter, converted one HF tensor at a time and
  checked against `config`'s model."""
  def convert_all() -> Iterator[tuple[hf.Path, np.ndarray]]:
    for name, x in hf.read_tensors(src_dir):
      for path, transform in hf.rename(name, rules, aliases):
        yield path, transform(x)

  return checked(convert_all(), config)


def convert_params(converter: hf.Converter, src_dir: str | os.PathLike,
                 config: ModelConfig | None = None) -> Iterator[tuple[hf.Path, np.ndarray]]:
  """(T5X name, float32 array) of every parameter, converted one HF tensor at a time
  and checked against the model of `config` (default: the directory's config)."""
  config = config or converter.config(src_dir)
  return convert_tensors(src_dir, config, converter.rules(config, pathlib.Path(src_dir)),
                         converter.aliases)

def convert(converter: hf.Converter, src_dir: str | os.PathLike, out_dir: str | os.PathLike,
          step: int = 0) -> str:
  """Converts a HF model directory into `out_dir` (see `write`); returns the checkpoint."""
  config = converter.config(src_dir)
  return write(out_dir, src_dir, config, convert_params(converter, src_dir, config), step)


def nest(params: Iterable[tuple[hf.Path, np.ndarray]]) -> dict:
  """A nested dict from (path, array) pairs."""
  return traverse_util.unflatten_dict(dict(params))


def write(out_dir: str | os.PathLike, src_dir: str | os.PathLike, config: ModelConfig,
          params: Iterable[tuple[hf.Path, np.ndarray]], step: int) -> str:
  """Writes a converted model: the tokenizer (see `tokenizer_fields`), the T5X checkpoint
  `checkpoint_<step>` (float32, streamed one tensor at a time), `model.gin` and
  `manifest.json`, a one-model family whose entry (with the tokenizer's `bos_id`) can be
  copied into a larger manifest; returns the checkpoint path."""
  out, src = pathlib.Path(out_dir), pathlib.Path(src_dir)
  created = not out.exists()
  out.mkdir(parents=True, exist_ok=True)
  try:  # a weight file found malformed midway leaves nothing behind
    tokenizer = hf.tokenizer_fields(src, out, config.architecture)
    path = checkpoints.write_checkpoint(out, params, step=step)
  except BaseException:
    if created:
      shutil.rmtree(out, ignore_errors=True)
    raise
  (out / "model.gin").write_text(to_gin(config, f"Converted from {src.resolve()}"), "utf-8")
  entry = {"name": out.name, "architecture": config.architecture, "gin": "model.gin",
           "checkpoint": os.path.relpath(path, out), **tokenizer,
           "n_params": Model(config).num_params(), "train_tokens": None, "train_flops": None}
  manifest = {"family": out.name, "description": f"Converted from {src.resolve()}",
              "models": [entry]}
  (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
  return path


def manifest_entry(src_dir: str | os.PathLike, manifest_dir: str | os.PathLike,
                   name: str) -> dict[str, Any]:
  """A manifest entry scoring `src_dir` directly. The tokenizer transformers uses is
  written beside the manifest as `<name>.tokenizer.json` (T5: `<name>.spiece.model`),
  with its BOS convention in the entry; the weights stay where they are."""
  src = pathlib.Path(src_dir).expanduser().resolve()
  config = hf_dir.model_config(src)
  return {"name": name, "architecture": config.architecture, "hf_dir": str(src),
          **hf.tokenizer_fields(src, manifest_dir, config.architecture, prefix=f"{name}."),
          "n_params": Model(config).num_params(), "train_tokens": None, "train_flops": None}
