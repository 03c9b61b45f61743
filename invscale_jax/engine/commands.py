"""`invscale score` and `invscale generate`: T5X's score and predict runs over a family.

Configuration composes as in T5X: `--gin_file` (default gin/runs/score.gin), then
`--gin_bindings`, then flags, each overriding the one before.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
from typing import TYPE_CHECKING

import gin

from invscale_jax import checks
from invscale_jax import family as family_lib
from invscale_jax import gin_macros
from invscale_jax import overview, storage, task_registry
from invscale_jax.data import commands as data_commands
from invscale_jax.data import datadir, sources
from invscale_jax.engine import hosts
from invscale_jax.engine import plan as plan_lib

if TYPE_CHECKING:
  from invscale_jax.engine import runner

DEFAULT_GIN = family_lib.GIN_DIR / "runs" / "score.gin"
_INT = checks.int_flag()
# Flags that override fields of ScoringOptions when given: (type, choices, what it does).
# Their help adds the default (the ScoringOptions field's, unless a gin file binds another).
_OPTION_FLAGS = {
    "tokenization": (str, plan_lib.TOKENIZATIONS,
                     "how prompt and class are tokenized: separate (SeqIO's convention) or "
                     "joint (the prize pipeline's: prompt + class together, the last k "
                     "tokens scored)"),
    "bos": (str, None, "token put before each prompt: model (the manifest's bos_id, the "
                       "model's own convention), none, or a token id"),
    "max_length": (_INT, None, "tokens a row may hold (BOS + prompt + class, + generation for "
                              "CoT), capped at a model's position table; longer prompts "
                              "lose demonstrations, then their start, and are counted"),
    "seed": (_INT, None, "seed of few-shot demonstration sampling and of CoT sampling"),
    "dtype": (str, plan_lib.DTYPES, "activation dtype (weights are read as stored)"),
    "generation_length": (_INT, None, "CoT and generate: tokens generated per example"),
    "temperature": (float, None, "CoT and generate: sampling temperature, 0 = greedy"),
    "limit": (_INT, None, "score only the first N examples of each task, as a run of its "
                         "own (0: all)"),
    "chunk_size": (_INT, None, "examples per results chunk file (speed and resume "
                              "granularity only)"),
    "tokens_per_batch": (_INT, None, "tokens per device batch (speed only); 0: as many as "
                                    "fit in device memory"),
    "model_parallel": (_INT, None, "devices each model is sharded over; the rest split the "
                                  "batch (speed only)"),
    "prefetch": (str, plan_lib.PREFETCH, "load the next model while one scores: auto (on "
                                         "accelerators, when it fits), on or off (speed "
                                         "only)"),
}
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
  given = {k: getattr(args, k) for k in _OPTION_FLAGS if getattr(args, k) is not None}
  if args.token_logprobs:
    given["token_logprobs"] = True
  if args.no_encoder_eos:
    given["encoder_eos"] = False
  if args.command == "generate":
    given["generate"] = True
  try:
    bound = plan_lib.ScoringOptions()  # gin supplies the values bound in the gin files and bindings
  except TypeError as e:  # a binding gin cannot call, e.g. an undefined %macro
    macro = re.search(r"configurable 'macro' .* in scope '([^']+)'", str(e))
    raise ValueError(f"gin bindings of ScoringOptions: %{macro.group(1)} is not bound to a "
                     "value" if macro else f"gin bindings of ScoringOptions: {e}") from None
  return dataclasses.replace(bound, **given)


def _checked_data_dir(flag: str | None) -> str:
  """The data directory, which must exist (checked before anything heavy is imported)."""
  data_dir = datadir.resolve(flag)
  if not storage.is_dir(data_dir):
    what = "is not a directory" if storage.is_file(data_dir) else "directory does not exist"
    raise FileNotFoundError(f"{data_dir}: data {what}; run `invscale data download "
                            f"--data_dir {data_dir}` or point --data_dir / {datadir.ENV_VAR} "
                            f"at the release")
  return data_dir


def _score(args: argparse.Namespace) -> int:
  # Options, family, model names and the data dir are checked before TensorFlow, SeqIO or
  # JAX load (task and variant names: by `plan`, before any of them too).
  parse_gin(args.gin_file, args.gin_bindings)
  if args.data_source:  # the gin macro the SeqIO tasks read (`data.sources`)
    gin.parse_config(f"{gin_macros.DATA_SOURCE} = {args.data_source!r}")
  options = options_from_args(args)  # bad options fail here, before anything is read
  family = family_lib.load(args.family)
  data_commands.use_task_dirs(args.task_dirs, family.task_dirs)
  models = checks.names(args.model, "--model") or None
  for name in models or ():
    family.get(name)
  tasks = checks.names(args.tasks, "--tasks")
  named = [task_registry.parse(t)[0] for t in tasks]  # unknown task names fail first
  # Your own tasks, and the TFDS dataset, are not read from the data dir.
  data_dir = (_checked_data_dir(args.data_dir) if args.data_source != "tfds" and (
      not tasks or any(s.prize for s in named)) else datadir.resolve(args.data_dir))
  tasks = tasks or [s.name for s in (*datadir.present_tasks(data_dir),
                                     *task_registry.declared())]
  if not tasks:
    raise FileNotFoundError(f"{data_dir}: no task files; run `invscale data download` or "
                            f"point --data_dir at the release")
  variants = checks.names(args.variants, "--variants") or ["zero_shot"]
  plan_lib.task_variants(tasks, variants)  # unknown names fail now, before anything heavy
  if sources.source() == sources.TFDS:
    from invscale_jax.data import tfds_source  # pylint: disable=g-import-not-at-top  (SeqIO)
    sources.use_tfds(tfds_source.examples)
  out = storage.absolute(args.out)
  if hosts.configured():
    from invscale_jax.engine import multihost  # pylint: disable=g-import-not-at-top  (JAX)
    multihost.join()
  if args.dry_run:
    from invscale_jax.engine import dry_run  # pylint: disable=g-import-not-at-top
    print(dry_run.describe(family, models, tasks, variants, data_dir, out, options), end="")
    return 0
  from invscale_jax.engine import runner  # pylint: disable=g-import-not-at-top
  runner.score_family(family, models, tasks, variants, data_dir, out, options, _backend)
  if hosts.index() == 0:  # the one host that reads results
    if args.log_samples:
      from invscale_jax.engine import samples  # pylint: disable=g-import-not-at-top
      runs = plan_lib.plan(family, models, tasks, variants, data_dir, options)
      written = samples.write(runs, options, data_dir, out)
      print(f"prompts of {len(written)} runs in RESULTS/runs/<run_key>/{samples.PATH}")
    overview.show(out, quiet=args.quiet)
  return 0


def _backend() -> runner.Backend:
  """JAX, Flax and the models, imported only once a run is left to score."""
  from invscale_jax.engine import backend  # pylint: disable=g-import-not-at-top
  return backend.start()


def _results(args: argparse.Namespace) -> int:
  for results_dir in args.results:
    overview.show(results_dir)
  return 0


def _metavar(kind: type, choices: tuple[str, ...] | None) -> str:
  if choices:
    return "{" + ",".join(choices) + "}"
  return "INT" if kind is _INT else kind.__name__.upper()


def add_run_flags(p: argparse.ArgumentParser) -> None:
  """Flags shared by `score` and `generate`."""
  p.add_argument("--family", required=True, metavar="MANIFEST_OR_NAME",
                 help="family manifest (a JSON path or gs:// URL) or a shipped family's name "
                      f"({', '.join(f.stem for f in family_lib.shipped())})")
  p.add_argument("--model", metavar="NAME,..",
                 help="comma-separated model names (default: every model of the family)")
  p.add_argument("--tasks", metavar="TASK,..",
                 help="comma-separated tasks, each spelt memo-trap, memo_trap or "
                      "invscale:memo_trap.zero_shot (the last also fixes the variant) "
                      "(default: every task whose file is in the data dir, and your own "
                      "declared tasks)")
  data_commands.add_task_dirs_flag(p)
  p.add_argument("--variants", metavar="VARIANT,..",
                 help="comma-separated prompt variants: zero_shot, <k>_shot (k >= 1), "
                      "cot_zero_shot, cot_1_shot (default: zero_shot)")
  p.add_argument("--data_dir", metavar="DIR",
                 help=f"task data directory, local or gs:// (default: gin macro "
                      f"{datadir.ENV_VAR}, ${datadir.ENV_VAR}, {datadir.DEFAULT})")
  p.add_argument("--data_source", choices=("files", "tfds"), metavar="{files,tfds}",
                 help="read the examples from the task files (default) or from the TFDS "
                      "dataset inverse_scaling_prize ($INVSCALE_TFDS_DATA_DIR; needs --tasks)")
  p.add_argument("--out", required=True, type=checks.path_flag, metavar="RESULTS",
                 help="results directory, local or gs:// (created; a re-run resumes there)")
  p.add_argument("--gin_file", action="append", metavar="FILE",
                 help=f"gin file binding ScoringOptions, repeatable (default: "
                      f"gin/runs/{DEFAULT_GIN.name})")
  p.add_argument("--gin_bindings", action="append", metavar="BINDING",
                 help="gin binding applied after the files, repeatable, e.g. "
                      "'ScoringOptions.pack = False'; flags override both (default: none)")
  defaults = {f.name: f.default for f in dataclasses.fields(plan_lib.ScoringOptions)}
  for name, (kind, choices, what) in _OPTION_FLAGS.items():
    # Choices are checked by ScoringOptions (one error format for flags and gin bindings).
    p.add_argument(f"--{name}", type=kind, metavar=_metavar(kind, choices),
                   help=f"{what} (default: {defaults[name]})")
  p.add_argument("--token_logprobs", action="store_true",
                 help="keep each target token's log-probability in the records (default: "
                      "off)")
  p.add_argument("--log_samples", action="store_true",
                 help="also keep the text of every example: its prompt as built "
                      "(demonstrations included), classes or completion and answer, in "
                      "RESULTS/runs/<run_key>/samples/prompts.jsonl, joined to the records "
                      "by example_id; not part of the run key, so a re-run adds it to "
                      "complete runs (default: off)")
  p.add_argument("--no_encoder_eos", action="store_true",
                 help="encoder-decoder models: no EOS after the encoder input (default: EOS, "
                      "as T5 was trained; a manifest entry's encoder_eos false does the same)")
  p.add_argument("--dry_run", action="store_true",
                 help="list each run as complete, partial or to do (and which option differs "
                      "from an earlier run of the same model, task and variant), with the "
                      "tokens left and a time estimate; load and write nothing (default: off)")
  p.add_argument("--quiet", action="store_true",
                 help="print no results table at the end (default: print it)")


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
  p.add_argument("results", nargs="+", metavar="RESULTS",
                 help="results directories written by `invscale score` (local or gs://)")
  p.set_defaults(func=_results)
