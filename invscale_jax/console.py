"""What the user sees on the terminal: quiet libraries, one format for our own warnings.

TensorFlow (imported by SeqIO) and its absl logging print start-up lines ("All log
messages before absl::InitializeLog() ...", "Could not find cuda drivers", oneDNN notes)
straight to file descriptor 2 while they load, before any logging setting can apply. So
`quiet()`, called first by every entry point, installs an import hook: the first import of
those packages runs with descriptor 2 captured in a temporary file, which is shown only if
the import fails. It also sets the Python loggers of JAX, absl (Orbax) and TensorFlow to
errors only, and the native log levels through their environment variables, where the
user has not set them. `-v` / `--verbose` skips all of it.

Our own messages that matter (truncated prompts, dropped demonstrations, unparseable
answers, repaired runs) go through `warn`: `invscale: warning: ...` on stderr.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from typing import Callable, Iterator

from invscale_jax import checks

# Packages whose native parts print while they load.
NOISY_IMPORTS = ("tensorflow", "tensorflow_text", "seqio")
_ENV_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR",
                 "TPU_STDERR_LOG_LEVEL": "3", "TPU_MIN_LOG_LEVEL": "3"}
_LOGGERS = ("jax", "jax._src", "absl", "tensorflow", "orbax", "etils")


def warn(message: str) -> None:
  """Prints `invscale: warning: message` to stderr, above any progress bar."""
  say(f"invscale: warning: {message}")


def say(message: str) -> None:
  """Prints a line to stderr, above any progress bar (see `writing_with`)."""
  _write(checks.printable(message))


def _to_stderr(line: str) -> None:
  print(line, file=sys.stderr)


_write: Callable[[str], None] = _to_stderr


@contextlib.contextmanager
def writing_with(write: Callable[[str], None]) -> Iterator[None]:
  """`say` writes its lines with `write` inside the block: a progress bar's own writer,
  which puts them above the bar (engine/progress.py)."""
  global _write
  saved, _write = _write, write
  try:
    yield
  finally:
    _write = saved


@contextlib.contextmanager
def captured_stderr() -> Iterator[None]:
  """Descriptor 2 goes to a temporary file; its text is written back if an error escapes."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      os.write(2, captured.read())
      raise
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)


class _QuietLoader(importlib.abc.Loader):
  """Runs another loader's `exec_module` with descriptor 2 captured."""

  def __init__(self, loader: importlib.abc.Loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module) -> None:
    with captured_stderr():
      self._loader.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
  """Wraps the loader of the first import of each of NOISY_IMPORTS."""

  def __init__(self):
    self._pending = set(NOISY_IMPORTS)

  def find_spec(self, name, path=None, target=None):
    if name not in self._pending:
      return None
    self._pending.discard(name)
    spec = importlib.util.find_spec(name)  # by the other finders: `name` is no longer pending
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def is_quiet() -> bool:
  """Whether `quiet` silenced library noise in this process."""
  return any(isinstance(f, _QuietFinder) for f in sys.meta_path)


def quiet(verbose: bool = False) -> None:
  """Silences library start-up noise for the rest of the process (unless `verbose`)."""
  if verbose or is_quiet():
    return
  for name, value in _ENV_DEFAULTS.items():
    os.environ.setdefault(name, value)
  sys.meta_path.insert(0, _QuietFinder())
  for name in _LOGGERS:
    logging.getLogger(name).setLevel(logging.ERROR)
  for category in (DeprecationWarning, FutureWarning):
    warnings.filterwarnings("ignore", category=category)
