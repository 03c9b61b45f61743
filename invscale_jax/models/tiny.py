"""The embedded tiny family: 4 CPU-sized decoder-only models stored as real T5X checkpoints.

Randomly initialised with fixed seeds (no training, so no training tokens or FLOPs: the
report plots them against parameters). Used by `make demo`, tests and benchmarks.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import shutil

import jax

from invscale_jax import checkpoints, family
from invscale_jax.models.config import load_config
from invscale_jax.models.model import build

SIZES = ("tiny-1", "tiny-2", "tiny-3", "tiny-4")


def gin_file(name: str) -> str:
  """The model's gin path relative to the project's gin/ folder."""
  return f"models/tiny/{name.replace('-', '_')}.gin"


def init_tiny(out: os.PathLike | str, seed: int = 0, sizes: tuple[str, ...] = SIZES,
              checkpoint_format: str = "legacy") -> pathlib.Path:
  """Writes the family (checkpoints + manifest.json) to `out`; returns the manifest path.
  `sizes` selects some of SIZES (tests use the smaller ones); `checkpoint_format` is one
  of `checkpoints.FORMATS` (T5X's legacy layout or its Orbax layout).

  Built in a temporary directory beside `out` and renamed into place, so an interrupted
  run leaves no half-made family.
  """
  out = pathlib.Path(out)
  if out.exists() and not (out.is_dir() and not any(out.iterdir())):
    raise FileExistsError(f"{out}: exists and is not empty; not writing a family there")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.{secrets.token_hex(8)}.tmp")
  tmp.mkdir()  # mode 0777 less the umask (mkdtemp's would be 0700)
  try:
    entries = []
    for name in sizes:
      i = SIZES.index(name)
      model = build(load_config(family.GIN_DIR / gin_file(name)))
      params = model.init(jax.random.PRNGKey(seed + i))
      checkpoints.write_checkpoint(tmp / name, params, step=0, dtype="float32",
                                   format=checkpoint_format)
      entries.append({"name": name, "architecture": model.architecture, "gin": gin_file(name),
                      "checkpoint": f"{name}/checkpoint_0", "vocabulary": {"type": "byte"},
                      "n_params": model.num_params(), "train_tokens": None,
                      "train_flops": None, "trained": False})
    manifest = {"family": "tiny",
                "description": f"Randomly initialised decoder-only models (seed {seed} + "
                               "size index), byte vocabulary; untrained, so "
                               "curves are drawn against parameters.",
                "models": entries}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if out.exists():
      out.rmdir()  # only an empty directory may be replaced
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out / "manifest.json"
