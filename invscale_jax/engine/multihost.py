"""Joining the multi-host run `hosts.configured` finds (JAX's distributed runtime)."""

from __future__ import annotations

import os

import jax
from jax.experimental import multihost_utils

from invscale_jax.engine import hosts


def join() -> None:
  """Joins the run (INVSCALE_COORDINATOR, INVSCALE_NUM_PROCESSES and INVSCALE_PROCESS_ID,
  or on Cloud TPU VMs INVSCALE_TPU_POD=1) and records it in `hosts`."""
  if os.environ.get("INVSCALE_COORDINATOR"):
    # CPU hosts (tests, clusters without accelerators) need gloo for cross-process collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(os.environ["INVSCALE_COORDINATOR"],
                               int(os.environ["INVSCALE_NUM_PROCESSES"]),
                               int(os.environ["INVSCALE_PROCESS_ID"]))
  else:
    jax.distributed.initialize()
  hosts.joined(hosts.Joined(jax.process_index(), jax.process_count(),
                            multihost_utils.broadcast_one_to_all))
