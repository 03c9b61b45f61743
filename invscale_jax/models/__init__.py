"""Flax networks with T5X parameter names, behind one `Model` interface.

Model configs (`ModelConfig`, `load_config`, `to_gin`) load without JAX or Flax; the
networks and decoding helpers are imported on first use, so commands that only read
configs (planning a run, `family show`) start fast.
"""

import importlib

from invscale_jax.models.config import ModelConfig, load_config, to_gin

_LAZY = {"Cache": "model", "Model": "model", "build": "model", "greedy_decode": "decoding",
         "jitted": "decoding", "pad_prompts": "decoding", "prompt_batch": "decoding"}


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["ModelConfig", "load_config", "to_gin", *_LAZY]
