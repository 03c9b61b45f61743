"""The hosts of a run: which process this is, and how process 0 tells the others.

A multi-host run is configured by INVSCALE_COORDINATOR (host:port),
INVSCALE_NUM_PROCESSES and INVSCALE_PROCESS_ID, or on Cloud TPU VMs by INVSCALE_TPU_POD=1
(`jax.distributed.initialize()` then finds its peers). Only process 0 reads and writes
results; what it decides, and any error it meets, is broadcast to the others. A
single-host run never imports JAX here, so a command with nothing to compute starts fast.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

_distributed = False
_MESSAGE_BYTES = 2048


def initialize() -> None:
  """Joins the multi-host run, when one is configured."""
  global _distributed
  if os.environ.get("INVSCALE_COORDINATOR"):
    import jax  # pylint: disable=g-import-not-at-top
    # CPU hosts (tests, clusters without accelerators) need gloo for cross-process collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(os.environ["INVSCALE_COORDINATOR"],
                               int(os.environ["INVSCALE_NUM_PROCESSES"]),
                               int(os.environ["INVSCALE_PROCESS_ID"]))
    _distributed = True
  elif os.environ.get("INVSCALE_TPU_POD") == "1":
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()
    _distributed = True


def index() -> int:
  """This process's index (0 when the run is on one host)."""
  if not _distributed:
    return 0
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index()


def count() -> int:
  if not _distributed:
    return 1
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count()


def from_leader(values: np.ndarray) -> np.ndarray:
  """Process 0's `values`, on every host."""
  if count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    values = np.asarray(multihost_utils.broadcast_one_to_all(values))
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
