"""T5X model directories as family members: `config.gin` beside `checkpoint_<step>/`.

A manifest entry may name one (`"t5x_model_dir": DIR`, optionally `"step": N`; else its
latest complete checkpoint) or a T5X gin file and a checkpoint; its architecture and
vocabulary default to what the gin file says. `invscale family from-t5x` writes them
(convert/from_t5x.py).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from invscale_jax import checkpoint_layout as layout
from invscale_jax import storage
from invscale_jax.models import t5x_gin

CONFIG_GIN = "config.gin"  # what T5X writes into every model dir it trains


def checkpoint_of(model_dir: str, step: int | None = None) -> str:
  """`model_dir/checkpoint_<step>`, or the latest complete one when `step` is None."""
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
