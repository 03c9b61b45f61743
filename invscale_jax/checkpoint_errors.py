"""One error type for checkpoints, and one-line summaries of low-level errors."""

from __future__ import annotations

import re

# Tensorstore appends the whole JSON spec it was given to its messages; drop it.
_TENSORSTORE_SPEC = re.compile(r"\s*\[tensorstore_spec=.*$", re.DOTALL)
_MAX_DETAIL = 300


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or written.

  The message is one line: `checkpoint <path>: <what is wrong, naming the parameter>`.
  """

  def __init__(self, path: str, detail: str):
    super().__init__(" ".join(f"checkpoint {path}: {detail}".split()))
    self.path = path


def describe(exc: BaseException) -> str:
  """A short one-line summary of a tensorstore, msgpack, OS or Orbax exception."""
  text = " ".join(_TENSORSTORE_SPEC.sub("", str(exc)).split()) or type(exc).__name__
  return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL - 3] + "..."
