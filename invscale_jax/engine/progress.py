"""A progress bar with rows/s and ETA, shown by process 0 only."""

from __future__ import annotations

import contextlib
import sys

import tqdm

from invscale_jax import console
from invscale_jax.engine import hosts


class Bar:
  """Context manager around tqdm counting scored rows (classes or completions); inside
  it, `console.say` writes above the bar."""

  def __init__(self, description: str, total: int):
    self._bar = tqdm.tqdm(total=total, desc=description, unit="row", file=sys.stderr,
                          disable=hosts.index() != 0, dynamic_ncols=True,
                          mininterval=0.5 if sys.stderr.isatty() else 10.0)

  def describe(self, description: str) -> None:
    self._bar.set_description(description, refresh=False)

  def update(self, rows: int) -> None:
    self._bar.update(rows)

  def __enter__(self) -> "Bar":
    self._stack = contextlib.ExitStack()
    self._stack.callback(self._bar.close)
    self._stack.enter_context(
        console.writing_with(lambda line: tqdm.tqdm.write(line, file=sys.stderr)))
    return self

  def __exit__(self, *exc) -> None:
    self._stack.close()
