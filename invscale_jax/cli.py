"""The `invscale` command: one subcommand group per stage of the pipeline.

Each stage module exposes `register(subparsers)`, which adds its subcommands and sets
`func` on them; `main` only dispatches. Errors meant for users are raised as `UserError`
and printed as one line with a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands, in the order they appear in `invscale --help`.
_STAGES = (
    "invscale_jax.data.commands",  # invscale data ..., invscale tasks ...
    "invscale_jax.models.commands",  # invscale family ..., invscale convert ...
    "invscale_jax.engine.commands",  # invscale score, invscale generate
    "invscale_jax.report.commands",  # invscale report
)


class UserError(Exception):
  """An error caused by the user's input: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="invscale", description=__doc__.splitlines()[0])
  subparsers = parser.add_subparsers(dest="command", required=True)
  for name in _STAGES:
    importlib.import_module(name).register(subparsers)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return int(args.func(args) or 0)
  except (UserError, ValueError, FileNotFoundError, KeyError) as e:
    message = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
    # One line: gin appends "In call to configurable ..." lines to errors raised in its calls.
    print(f"invscale: error: {message.splitlines()[0] if message else type(e).__name__}",
          file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("invscale: interrupted; re-run the same command to resume", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
