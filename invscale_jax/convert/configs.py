"""The network config a manifest entry names: a model gin file (ours or T5X's), or a
Hugging Face model's `config.json`, as its converter derives it (convert/hf_dir.py)."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from invscale_jax import storage
from invscale_jax.convert import hf_dir
from invscale_jax.models import config as config_lib


def load_config(path: str | os.PathLike, bindings: Sequence[str] = ()) -> config_lib.ModelConfig:
  """`models.config.load_config` of a gin file; for a `config.json`, its converter's config; then
  the extra `bindings` lines."""
  path = os.fspath(path)
  if storage.basename(path) != "config.json":
    return config_lib.load_config(path, bindings)
  derived = dataclasses.asdict(hf_dir.model_config(os.path.dirname(path)))
  return config_lib.with_bindings(derived, bindings, path)
