"""`invscale score` and `invscale generate`: T5X's score and predict runs over a family.

Configuration composes as in T5X: `--gin_file` (default gin/runs/score.gin), then
`--gin_bindings`, then flags, each overriding the one before.
"""

from __future__ import annotations

import argparse
import dataclasses

import gin

from invscale_jax import family as family_lib
from invscale_jax import overview, storage, task_registry
from invscale_jax.data import commands as data_commands
from invscale_jax.data import datadir
from invscale_jax.engine import hosts

DEFAULT_GIN = family_lib.GIN_DIR / "runs" / "score.gin"
# Flags that override fields of ScoringOptions when given.
_OPTION_FLAGS = {"tokenization": str, "bos": str, "max_length": int, "seed": int, "dtype": str,
                 "generation_length": int, "temperature": float, "limit": int, "chunk_size": int,
                 "tokens_per_batch": int, "model_parallel": int, "prefetch": str}


def _split(value: str | None) -> list[str]:
  return [v for v in (value or "").split(",") if v]


def parse_gin(files: list[str] | None, bindings: list[str] | None) -> None:
  """Replaces gin's bindings with this run's (a process may run several commands)."""
  with gin.unlock_config():
    gin.clear_config()
    gin.parse_config_files_and_bindings([str(f) for f in (files or [DEFAULT_GIN])],
                                        bindings or [], finalize_config=False)


def options_from_args(args: argparse.Namespace):
  from invscale_jax.engine.plan import ScoringOptions  # pylint: disable=g-import-not-at-top
  given = {k: getattr(args, k) for k in _OPTION_FLAGS if getattr(args, k) is not None}
  if args.token_logprobs:
    given["token_logprobs"] = True
  if args.command == "generate":
    given["generate"] = True
  return dataclasses.replace(ScoringOptions(), **given)


def _score(args: argparse.Namespace) -> int:
  hosts.initialize()
  parse_gin(args.gin_file, args.gin_bindings)
  options = options_from_args(args)  # bad options fail here, before anything is read
  family = family_lib.load(args.family)
  data_commands.use_task_dirs(args.task_dirs, family.task_dirs)
  data_dir = datadir.resolve(args.data_dir)
  tasks = _split(args.tasks) or [s.name for s in (*datadir.present_tasks(data_dir),
                                                   *task_registry.declared())]
  if not tasks:
    raise FileNotFoundError(f"{data_dir}: no task files; run `invscale data download` or "
                            f"point --data_dir at the release")
  variants = _split(args.variants) or ["zero_shot"]
  from invscale_jax.engine import plan  # pylint: disable=g-import-not-at-top
  plan.task_variants(tasks, variants)  # unknown names fail now, before anything heavy
  models, out = _split(args.model) or None, storage.absolute(args.out)
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
  p.add_argument("--tasks", help="comma-separated tasks, each spelt memo-trap, memo_trap or "
                                 "invscale:memo_trap.zero_shot (the last also fixes the "
                                 "variant) (default: all present in the data dir, and your "
                                 "own declared tasks)")
  data_commands.add_task_dirs_flag(p)
  p.add_argument("--variants", help="comma-separated prompt variants (default: zero_shot)")
  p.add_argument("--data_dir", help=f"task data directory (default: ${datadir.ENV_VAR})")
  p.add_argument("--out", required=True, help="results directory")
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
