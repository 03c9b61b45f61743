"""Scoring a Hugging Face model directory directly, with no T5X copy on disk.

A manifest entry with `"hf_dir": DIR` (family.py) is loaded from DIR: its config from
config.json (`model_config`, which `convert.configs.load_config` reads for a config.json path),
its parameters streamed one tensor at a time through the same mapping the converter
uses (`hf_weights.convert_params`), each placed on its devices as it comes. The run
key hashes every file of DIR (config, tokenizer, weights) as it does a T5X checkpoint.
`hf_weights.manifest_entry` writes what `invscale family from-hf` puts in a manifest.
"""

from __future__ import annotations

import os
import pathlib

from invscale_jax.convert import hf, hf_gpt2, hf_gpt_neox, hf_llama, hf_opt, hf_t5
from invscale_jax.models.config import ModelConfig

# config.json `model_type` -> the converter of its architecture.
CONVERTERS: dict[str, hf.Converter] = {
    model_type: module.CONVERTER
    for module in (hf_gpt_neox, hf_t5, hf_opt, hf_llama, hf_gpt2)
    for model_type in module.CONVERTER.model_types}


def converter(src_dir: str | os.PathLike) -> hf.Converter:
  """The converter of the directory's architecture (config.json's model_type)."""
  model_type = hf.read_config(src_dir).get("model_type")
  if model_type not in CONVERTERS:
    raise ValueError(f"{pathlib.Path(src_dir) / 'config.json'}: model_type {model_type!r} is "
                     f"not supported (supported: {', '.join(CONVERTERS)})")
  return CONVERTERS[model_type]


def model_config(src_dir: str | os.PathLike, dtype: str = "bfloat16") -> ModelConfig:
  """Our config of the model in `src_dir`, from its config.json."""
  return converter(src_dir).config(src_dir, dtype=dtype)
