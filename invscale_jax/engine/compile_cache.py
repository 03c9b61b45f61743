"""JAX's persistent compilation cache, on by default: a second run of the same shapes
(a re-run, the next task of the same lengths, another family member of the same config)
loads its executables instead of compiling them again.

The cache lives in `<invscale cache dir>/jax_compilation_cache` (see
`storage.user_cache_dir`); `JAX_COMPILATION_CACHE_DIR` chooses another directory, and
`INVSCALE_COMPILATION_CACHE=off` turns it off. Every compilation is cached, however fast:
on a CPU most of ours take under a second, which JAX's default threshold would skip.
"""

from __future__ import annotations

import os

import jax

from invscale_jax import storage

ENV_VAR = "INVSCALE_COMPILATION_CACHE"


def enable() -> str | None:
  """Turns the cache on (unless switched off); returns its directory."""
  if os.environ.get(ENV_VAR, "").lower() in ("off", "0", "false", "no"):
    return None
  directory = (os.environ.get("JAX_COMPILATION_CACHE_DIR")
               or os.path.join(storage.user_cache_dir(), "jax_compilation_cache"))
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
