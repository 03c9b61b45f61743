"""`invscale data status|validate|download` and `invscale tasks list|lengths`; the
`--task_dirs` flag of every command that takes task names."""

from __future__ import annotations

import argparse
import sys

from typing import Sequence

from invscale_jax import catalog, storage, task_registry
from invscale_jax.data import datadir, declarations, download, loader, variants


def add_task_dirs_flag(p: argparse.ArgumentParser) -> None:
  p.add_argument("--task_dirs", metavar="DIR[,DIR...]",
                 help="comma-separated directories of your own tasks (<name>.task.json "
                      "declarations; README: Your own tasks)")


def use_task_dirs(flag: str | None, manifest_dirs: Sequence[str] = ()) -> None:
  """Declares the tasks of `--task_dirs`, a manifest's task_dirs, then the directories gin
  and the environment name (`task_registry`)."""
  task_registry.use([d for d in (flag or "").split(",") if d] + list(manifest_dirs)
                    + task_registry.environment_dirs())


def _status(args: argparse.Namespace) -> int:
  root = datadir.resolve(args.data_dir)
  print(f"data dir: {root}")
  rows = datadir.status(root)
  print(f"{'task':30s} {'status':9s} {'rows':>6s}  file")
  for s in rows:
    count = "" if s.rows is None else str(s.rows)
    note = f"  ({s.problems} invalid rows: run `invscale data validate`)" if s.problems else ""
    print(f"{s.spec.name:30s} {s.state:9s} {count:>6s}  {s.spec.filename}{note}")
  n = {state: sum(s.state == state for s in rows)
       for state in (datadir.PRESENT_VERIFIED, datadir.PRESENT_DIFFERS, datadir.MISSING)}
  print(f"{n[datadir.PRESENT_VERIFIED]} verified, {n[datadir.PRESENT_DIFFERS]} differ from the "
        f"official release, {n[datadir.MISSING]} missing")
  return 0


def _files_to_validate(path: str) -> list[tuple[str, str | None, str | None]]:
  """(file, metric, task) to check for a path: a task file, or a task directory or
  declaration (`<name>.task.json`), whose task files are checked as declared."""
  task_dir = storage.is_dir(path) and any(n.endswith(declarations.SUFFIX)
                                          for n in storage.children(path))
  if not (path.endswith(declarations.SUFFIX) or task_dir):
    return [(path, None, None)]
  tasks = declarations.read_dir(path) if task_dir else [declarations.read(path)]
  return [(t.file_path(), t.metric, t.name) for t in tasks]


def _validate(args: argparse.Namespace) -> int:
  failed = False
  for given in args.files:
    try:
      files = _files_to_validate(given)
    except declarations.DeclarationError as e:
      print(e, file=sys.stderr)
      failed = True
      continue
    for path, metric, task in files:
      failed |= _validate_file(path, metric, task, args.strict)
  return 1 if failed else 0


def _validate_file(path: str, metric: str | None, task: str | None, strict: bool) -> bool:
  """Checks one task file, printing its problems; whether it failed."""
  failed = False
  examples, problems = loader.check(path, metric, task)
  for p in problems:
    print(p, file=sys.stderr)
  spec = catalog.by_filename(storage.basename(path))
  hash_note = ""
  if spec is not None and not problems:
    if datadir.sha256_of(path) == spec.sha256:
      hash_note = ", matches the official sha256"
    else:
      line = f"{path}:0: sha256: differs from the official {spec.filename}"
      print(("error: " if strict else "warning: ") + line, file=sys.stderr)
      failed |= strict
  if problems:
    failed = True
    print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
  else:
    print(f"{path}: {len(examples)} rows OK{hash_note}")
  return failed


def _prize_task(name: str) -> catalog.TaskSpec:
  spec = task_registry.parse(name)[0]
  if not spec.prize:
    raise ValueError(f"--tasks: {spec.name} is not a prize task; there is nothing to download")
  return spec


def _download(args: argparse.Namespace) -> int:
  root = datadir.resolve(args.data_dir)
  specs = [_prize_task(t) for t in args.tasks.split(",")] if args.tasks else list(catalog.TASKS)
  if not args.time_limit > 0:
    raise ValueError(f"--time_limit must be a positive number of seconds, got {args.time_limit}")
  errors = download.download(root, download.base_url(args.base_url), specs,
                             time_limit=args.time_limit)
  for e in errors:
    print(f"invscale: error: {e}", file=sys.stderr)
  return 1 if errors else 0


def _tasks_list(args: argparse.Namespace) -> int:
  use_task_dirs(args.task_dirs)
  import seqio_tasks  # pylint: disable=g-import-not-at-top

  extra = [v for v in (args.variants or "").split(",") if v]
  names = {n for v in dict.fromkeys(seqio_tasks.tasks.VARIANTS + tuple(extra))
           for n in seqio_tasks.register_variant(v)}
  for name in sorted(names):
    print(name)
  return 0


def _tasks_lengths(args: argparse.Namespace) -> int:
  use_task_dirs(args.task_dirs)
  spec, variant_name = task_registry.parse(args.task)
  variant = variants.parse(variant_name or "zero_shot")
  import seqio_tasks  # pylint: disable=g-import-not-at-top
  from invscale_jax import vocab, vocab_spec  # pylint: disable=g-import-not-at-top
  from seqio_tasks import lengths  # pylint: disable=g-import-not-at-top

  vocabulary = vocab.from_spec(vocab_spec.spec_of(args.vocabulary or "byte"))
  options = seqio_tasks.tasks.PromptOptions(args.seed, args.max_length or None)
  task = seqio_tasks.build_task(spec.name, variant.name, vocabulary, options,
                                str(datadir.resolve(args.data_dir)))
  print(f"TASK_FEATURE_LENGTHS = {lengths.max_lengths(task)!r}")
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  data = subparsers.add_parser("data", help="task data: status, validation, download")
  sub = data.add_subparsers(dest="data_command", required=True)
  dir_help = f"data directory (default: gin macro {datadir.ENV_VAR}, ${datadir.ENV_VAR}, {datadir.DEFAULT})"

  p = sub.add_parser("status", help="present / verified / missing, with row counts, per task")
  p.add_argument("--data_dir", help=dir_help)
  p.set_defaults(func=_status)

  p = sub.add_parser("validate", help="check task files (jsonl or Round-1 csv), or your own "
                                      "task directories / <name>.task.json declarations")
  p.add_argument("files", nargs="+")
  p.add_argument("--strict", action="store_true", help="a file differing from its official sha256 is an error")
  p.set_defaults(func=_validate)

  p = sub.add_parser("download", help="fetch the official files, verified against their sha256")
  p.add_argument("--data_dir", help=dir_help)
  p.add_argument("--base_url", help=f"mirror carrying the official file names (default: "
                                    f"${download.URL_ENV_VAR} or {download.DEFAULT_BASE_URL})")
  p.add_argument("--tasks", help="comma-separated task names (default: all 11)")
  p.add_argument("--time_limit", type=float, default=download.TIME_LIMIT,
                 help="seconds allowed for each file in all (default: %(default)g)")
  p.set_defaults(func=_download)

  tasks = subparsers.add_parser("tasks", help="registered SeqIO tasks")
  sub = tasks.add_subparsers(dest="tasks_command", required=True)
  p = sub.add_parser("list", help="one registered task name per line")
  p.add_argument("--variants", help="also register these variants (e.g. 10_shot)")
  add_task_dirs_flag(p)
  p.set_defaults(func=_tasks_list)

  p = sub.add_parser("lengths", help="the TASK_FEATURE_LENGTHS a T5X run needs so that SeqIO "
                                     "cuts no row of a task")
  p.add_argument("task", help="invscale:<task>.<variant>, <task>.<variant> (e.g. neqa.1_shot) "
                              "or <task> (zero_shot)")
  add_task_dirs_flag(p)
  p.add_argument("--vocabulary", help="the model's vocabulary: a SentencePiece .model file, a "
                                      "tokenizer.json, or a JSON spec (default: bytes)")
  p.add_argument("--data_dir", help=dir_help)
  p.add_argument("--seed", type=int, default=0, help="few-shot sampling seed")
  p.add_argument("--max_length", type=int, default=2048,
                 help="prompt budget in tokens, as INVSCALE_MAX_LENGTH (0: no cap)")
  p.set_defaults(func=_tasks_lengths)
