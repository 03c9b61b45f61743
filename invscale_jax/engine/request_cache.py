"""Requests cached by content, so a second model with the same vocabulary (or a second run)
tokenizes nothing.

The key is a hash of everything requests are made of: the task's data (its sha256), the
variant, the vocabulary's identity (`vocab_spec.identity`: the tokenizer file's content),
the BOS token, max_length, the prompt options (seed, tokenization, generation room, limit)
and anything else in the run's key parts that is not the model's own (checkpoint,
network) or bookkeeping (family, seed group, task directory), plus `VERSION`; a changed
input is a different key, so always a miss. Entries live in memory for the process and as
JSON files in `<invscale cache dir>/requests/`; an unreadable file is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

import numpy as np

from invscale_jax import storage
from invscale_jax.engine.requests import Branch, Request

VERSION = 1  # of the requests' construction: bump when the same inputs give other requests
# run.json fields that identify the model or where a run belongs, not its requests: the
# seeds of a lab design, or two directories holding the same task, share their requests.
NOT_REQUEST_PARTS = ("model", "checkpoint", "network", "run_key", "family", "seed_group",
                     "task_source")

_MEMORY: dict[str, list[Request]] = {}


def request_parts(info: dict[str, Any]) -> dict[str, Any]:
  """The fields of a run's info that its requests are made of."""
  return {k: v for k, v in info.items() if k not in NOT_REQUEST_PARTS}


def key(parts: dict[str, Any]) -> str:
  """The cache key of requests made from `parts` (JSON-able)."""
  text = json.dumps(dict(parts, requests_version=VERSION), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:32]


_SCALARS = ("example_id", "kind", "prompt_text", "answer_index", "n_truncated", "n_demos_dropped")


def _to_json(r: Request) -> dict[str, Any]:
  return {**{k: getattr(r, k) for k in _SCALARS}, "prefix": r.prefix.tolist(),
          "branches": [[b.context.tolist(), b.target.tolist(), b.text] for b in r.branches]}


def _from_json(d: dict[str, Any]) -> Request:
  ids = lambda x: np.asarray(x, np.int32)
  branches = tuple(Branch(ids(c), ids(t), text) for c, t, text in d["branches"])
  return Request(prefix=ids(d["prefix"]), branches=branches, **{k: d[k] for k in _SCALARS})


def path(cache_key: str) -> str:
  return os.path.join(storage.user_cache_dir(), "requests", f"{cache_key}.json")


def cached(parts: dict[str, Any], build: Callable[[], list[Request]],
           store: bool = True) -> list[Request]:
  """The requests of `parts`: from memory, else from the cache directory, else `build()`
  (then kept in memory, and in the cache directory if `store`)."""
  k = key(parts)
  if k in _MEMORY:
    return _MEMORY[k]
  try:
    requests = [_from_json(d) for d in json.loads(storage.read_text(path(k)))]
  except (FileNotFoundError, ValueError, KeyError, TypeError):
    requests = build()
    if store:
      storage.write_text(path(k), json.dumps([_to_json(r) for r in requests]))
  _MEMORY[k] = requests
  return requests
