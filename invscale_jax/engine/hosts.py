"""The hosts of a run: which process this is, and how process 0 tells the others.

A multi-host run is configured by INVSCALE_COORDINATOR (host:port),
INVSCALE_NUM_PROCESSES and INVSCALE_PROCESS_ID, or on Cloud TPU VMs by INVSCALE_TPU_POD=1
(`jax.distributed.initialize()` then finds its peers). Only process 0 reads and writes
results; what it decides, and any error it meets, is broadcast to the others. JAX joins
the run (engine/multihost.py, imported only then): a single-host command with nothing to
compute starts fast.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

_MESSAGE_BYTES = 2048


@dataclasses.dataclass(frozen=True)
class Joined:
  """A multi-host run this process joined (engine/multihost.py)."""
  index: int
  count: int
  broadcast: Callable[[np.ndarray], Any]  # process 0's values, on every host


_joined: Joined | None = None


def configured() -> bool:
  """Whether the environment configures a multi-host run."""
  return bool(os.environ.get("INVSCALE_COORDINATOR")) or (
      os.environ.get("INVSCALE_TPU_POD") == "1")


def joined(run: Joined) -> None:
  """Records the multi-host run this process joined."""
  global _joined
  _joined = run


def index() -> int:
  """This process's index (0 when the run is on one host)."""
  return 0 if _joined is None else _joined.index


def count() -> int:
  return 1 if _joined is None else _joined.count


def from_leader(values: np.ndarray) -> np.ndarray:
  """Process 0's `values`, on every host."""
  if count() > 1:
    values = np.asarray(_joined.broadcast(values))
  return values


def on_leader(action: Callable[[], Any]) -> Any:
  """Runs `action` on process 0 only (the one host that touches results) and returns its
  result there (None elsewhere). An error there is raised on every host, with process 0's
  message, so no host waits for the others."""
  error, result = None, None
  if index() == 0:
    try:
      result = action()
    except Exception as e:  # re-raised below, after the other hosts hear of it
      error = e
  if count() > 1:
    text = np.zeros(_MESSAGE_BYTES, np.uint8)
    if error is not None:
      message = f"{type(error).__name__}: {error}".encode()[:_MESSAGE_BYTES - 1] or b"error"
      text[:len(message)] = np.frombuffer(message, np.uint8)
    text = from_leader(text)
    if error is None and text.any():
      raise ValueError("process 0: " + bytes(text[text > 0]).decode(errors="replace"))
  if error is not None:
    raise error
  return result
