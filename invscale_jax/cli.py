"""The `invscale` command: one subcommand group per stage of the pipeline.

Each stage module exposes `register(subparsers)`, which adds its subcommands and sets
`func` on them; `main` only dispatches. Errors meant for users are raised as `UserError`
(or `ValueError`) and printed as one line with a non-zero exit, as are the operating
system's (`OSError`: a read-only or full disk, a file where a directory should be).
Library start-up noise is silenced first (`console.quiet`), unless `-v` / `--verbose` is
given anywhere on the command line.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import importlib.metadata
import os
import sys

from invscale_jax import checks
from invscale_jax import console

# Modules that add subcommands, in the order they appear in `invscale --help`.
_STAGES = (
    "invscale_jax.data.commands",  # invscale data ..., invscale tasks ...
    "invscale_jax.convert.commands",  # invscale family ..., invscale convert ...
    "invscale_jax.transfer",  # invscale storage cp
    "invscale_jax.engine.commands",  # invscale score, invscale generate
    "invscale_jax.report.commands",  # invscale report
    "invscale_jax.t5x_import",  # invscale import t5x-infer
    "invscale_jax.lab.commands",  # invscale lab
)


class UserError(Exception):
  """An error caused by the user's input: printed as one line, exit status 2."""


VERBOSE_FLAGS = ("-v", "--verbose")


def version() -> str:
  return importlib.metadata.version("invscale-jax")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="invscale", description=__doc__.splitlines()[0])
  parser.add_argument("--version", action="version", version=f"invscale {version()}")
  parser.add_argument(*VERBOSE_FLAGS, action="store_true",
                      help="show the libraries' start-up and log messages (anywhere on the "
                           "command line)")
  subparsers = parser.add_subparsers(dest="command", required=True)
  for name in _STAGES:
    importlib.import_module(name).register(subparsers)
  return parser


def _message(e: Exception) -> str:
  """The line printed for an error: an OSError names its file(s) and the reason."""
  if isinstance(e, KeyError) and e.args:
    return str(e.args[0])
  if isinstance(e, OSError) and e.strerror and e.filename is not None:
    other = "" if e.filename2 is None else f" -> {e.filename2}"
    return f"{e.filename}{other}: {e.strerror}"
  # One line: gin appends "In call to configurable ..." lines to errors raised in its calls.
  return str(e).partition("\n")[0] or type(e).__name__


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  verbose = any(a in VERBOSE_FLAGS for a in argv)
  console.quiet(verbose)
  args = build_parser().parse_args((["--verbose"] if verbose else []) +
                                   [a for a in argv if a not in VERBOSE_FLAGS])
  try:
    return int(args.func(args) or 0)
  except (UserError, ValueError, OSError, KeyError) as e:
    print(f"invscale: error: {checks.printable(_message(e))}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("invscale: interrupted; re-run the same command to resume", file=sys.stderr)
    return 130


def run() -> None:
  """The `invscale` command: `main`, then the process ends as soon as its exit handlers
  ran and its output is flushed. Python's own finalization (tearing down JAX's client,
  compiled programs and every imported module one by one) would add seconds and does
  nothing a finished command needs."""
  code = main()
  atexit._run_exitfuncs()  # pylint: disable=protected-access  (what sys.exit would run)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


if __name__ == "__main__":
  run()
