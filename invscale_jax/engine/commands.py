"""`invscale score` and `invscale generate`: T5X's score and predict runs over a family.

Configuration composes as in T5X: `--gin_file` (default gin/runs/score.gin), then
`--gin_bindings`, then flags, each overriding the one before.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re

import gin

from invscale_jax import checks
from invscale_jax import family as family_lib
from invscale_jax import overview, storage
from invscale_jax.data import datadir
from invscale_jax.engine import hosts

DEFAULT_GIN = family_lib.GIN_DIR / "runs" / "score.gin"
# Flags that override fields of ScoringOptions when given (ScoringOptions checks ranges).
_INT = checks.int_flag()
_OPTION_FLAGS = {"tokenization": str, "bos": str, "max_length": _INT, "seed": _INT,
                 "dtype": str, "generation_length": _INT,
                 "temperature": float, "limit": _INT,
                 "chunk_size": _INT, "tokens_per_batch": _INT, "model_parallel": _INT,
                 "prefetch": str}
GIN_FILE_BYTES = 1 << 20  # the most read of a --gin_file


def _check_gin_file(path: str) -> None:
  """A --gin_file must be a regular file of UTF-8 text, small enough to parse at once."""
  if not storage.is_file(path):
    raise FileNotFoundError(f"--gin_file {path}: not a file")
  data = storage.read_bytes(path)
  if len(data) > GIN_FILE_BYTES:
    raise ValueError(f"--gin_file {path}: {len(data)} bytes; a gin file holds at most "
                     f"{GIN_FILE_BYTES}")
  try:
    data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"--gin_file {path}: not a gin file (not UTF-8 text at byte "
                     f"{e.start})") from None


def parse_gin(files: list[str] | None, bindings: list[str] | None) -> None:
  """Replaces gin's bindings with this run's (a process may run several commands). Each
  file and binding is parsed on its own, so that an error names it."""
  files = [str(f) for f in files or [DEFAULT_GIN]]
  for f in files:
    _check_gin_file(f)
  sources = [(f"--gin_file {f}", functools.partial(gin.parse_config_file, f)) for f in files]
  sources += [(f"--gin_bindings {b!r}", functools.partial(gin.parse_config, b))
              for b in bindings or []]
  with gin.unlock_config():
    gin.clear_config()
    for where, parse in sources:
      try:
        parse()
      except SyntaxError as e:  # gin's parse errors
        raise ValueError(f"{where}:{e.lineno}: not valid gin: {e.msg}") from None
      except (ValueError, KeyError, OSError, ImportError) as e:  # unknown names, includes
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ValueError(f"{where}: {message}".partition("\n")[0]) from None
      except RecursionError:
        raise ValueError(f"{where}: includes itself") from None


def options_from_args(args: argparse.Namespace):
  from invscale_jax.engine.plan import ScoringOptions  # pylint: disable=g-import-not-at-top
  given = {k: getattr(args, k) for k in _OPTION_FLAGS if getattr(args, k) is not None}
  if args.token_logprobs:
    given["token_logprobs"] = True
  if args.command == "generate":
    given["generate"] = True
  try:
    bound = ScoringOptions()  # gin supplies the values bound in the gin files and bindings
  except TypeError as e:  # a binding gin cannot call, e.g. an undefined %macro
    macro = re.search(r"configurable 'macro' .* in scope '([^']+)'", str(e))
    raise ValueError(f"gin bindings of ScoringOptions: %{macro.group(1)} is not bound to a "
                     "value" if macro else f"gin bindings of ScoringOptions: {e}") from None
  return dataclasses.replace(bound, **given)


def _score(args: argparse.Namespace) -> int:
  hosts.initialize()
  parse_gin(args.gin_file, args.gin_bindings)
  options = options_from_args(args)  # bad options fail here, before anything is read
  family = family_lib.load(args.family)
  data_dir = datadir.resolve(args.data_dir)
  tasks = checks.names(args.tasks, "--tasks") or [
      s.name for s in datadir.present_tasks(data_dir)]
  if not tasks:
    raise FileNotFoundError(f"{data_dir}: no task files; run `invscale data download` or "
                            f"point --data_dir at the release")
  variants = checks.names(args.variants, "--variants") or ["zero_shot"]
  models, out = checks.names(args.model, "--model") or None, storage.absolute(args.out)
  if args.dry_run:
    from invscale_jax.engine import dry_run  # pylint: disable=g-import-not-at-top
    print(dry_run.describe(family, models, tasks, variants, data_dir, out, options), end="")
    return 0
  from invscale_jax.engine import runner  # pylint: disable=g-import-not-at-top
  runner.score_family(family, models, tasks, variants, data_dir, out, options)
  if hosts.index() == 0:  # the one host that reads results
    overview.show(out, quiet=args.quiet)
  return 0


def _results(args: argparse.Namespace) -> int:
  for results_dir in args.results:
    overview.show(results_dir)
  return 0


def add_run_flags(p: argparse.ArgumentParser) -> None:
  """Flags shared by `score` and `generate`."""
  p.add_argument("--family", required=True, help="family manifest (JSON)")
  p.add_argument("--model", help="comma-separated model names (default: all in the family)")
  p.add_argument("--tasks", help="comma-separated tasks (default: all present in the data dir)")
  p.add_argument("--variants", help="comma-separated prompt variants (default: zero_shot)")
  p.add_argument("--data_dir", help=f"task data directory (default: ${datadir.ENV_VAR})")
  p.add_argument("--out", required=True, type=checks.path_flag, help="results directory")
  p.add_argument("--gin_file", action="append", help=f"gin files (default: {DEFAULT_GIN.name})")
  p.add_argument("--gin_bindings", action="append", help="gin bindings, e.g. 'ScoringOptions.pack = False'")
  for name, kind in _OPTION_FLAGS.items():
    p.add_argument(f"--{name}", type=kind, help=f"override ScoringOptions.{name}")
  p.add_argument("--token_logprobs", action="store_true", help="keep per-token log-probabilities")
  p.add_argument("--dry_run", action="store_true",
                 help="list each run as complete, partial or to do, with the tokens left and "
                      "a time estimate; load and write nothing")
  p.add_argument("--quiet", action="store_true", help="no results table at the end")


def register(subparsers: argparse._SubParsersAction) -> None:
  p = subparsers.add_parser("score", help="score a family's models on tasks x variants "
                                          "(decoding where a CoT variant needs it)")
  add_run_flags(p)
  p.set_defaults(func=_score)
  p = subparsers.add_parser("generate", help="decode alone: generate an answer for every "
                                             "example, parse it into a class, no scoring")
  add_run_flags(p)
  p.set_defaults(func=_score)
  p = subparsers.add_parser("results", help="the table of what RESULTS holds (a line per run); "
                                            "rewrites RESULTS/INDEX.md")
  p.add_argument("results", nargs="+", help="results directories")
  p.set_defaults(func=_results)
